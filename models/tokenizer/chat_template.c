#include "tokenizer/chat_template.h"

#include "unicode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
static const char *const CHATML_SYSTEM = "You are a helpful assistant.";

int vkl_chat_from_template(const char *jinja, vkl_chat *c, vkl_err *e)
{
    memset(c, 0, sizeof *c);
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|eot_id|>")) c->kind = VKL_CHAT_LLAMA3;
    else if (strstr(jinja, "<|im_start|>")) {
        c->kind = VKL_CHAT_CHATML;
        const char *sys = strstr(jinja, QWEN25_SYSTEM) ? QWEN25_SYSTEM : strstr(jinja, CHATML_SYSTEM) ? CHATML_SYSTEM : "";
        snprintf(c->default_system, sizeof c->default_system, "%s", sys);
    } else if (strstr(jinja, "[INST]")) c->kind = VKL_CHAT_MISTRAL;
    else return vkl_fail(e, "the chat_template is none of the built-in ones (llama3, chatml, mistral); name one");
    return 0;
}

int vkl_chat_from_name(const char *name, vkl_chat *c, vkl_err *e)
{
    memset(c, 0, sizeof *c);
    if (!strcmp(name, "llama3")) c->kind = VKL_CHAT_LLAMA3;
    else if (!strcmp(name, "chatml")) c->kind = VKL_CHAT_CHATML;
    else if (!strcmp(name, "mistral")) c->kind = VKL_CHAT_MISTRAL;
    else return vkl_fail(e, "chat template '%s' is not one of llama3, chatml, mistral", name);
    return 0;
}

typedef struct segs {
    vkl_chat_seg *v;
    int n, cap;
} segs;

static int push(segs *s, int kind, int trained, const char *a, size_t alen, const char *b, const char *c)
{
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        vkl_chat_seg *g = realloc(s->v, sizeof *g * (size_t)cap);
        if (!g) return -1;
        s->v = g;
        s->cap = cap;
    }
    char *t = NULL;
    if (kind == VKL_CHAT_TEXT) {
        size_t bl = b ? strlen(b) : 0, cl = c ? strlen(c) : 0;
        t = malloc(alen + bl + cl + 1);
        if (!t) return -1;
        memcpy(t, a, alen);
        if (bl) memcpy(t + alen, b, bl);
        if (cl) memcpy(t + alen + bl, c, cl);
        t[alen + bl + cl] = 0;
    }
    s->v[s->n++] = (vkl_chat_seg){kind, t, trained};
    return 0;
}

static int text(segs *s, int trained, const char *a, const char *b, const char *c)
{
    return push(s, VKL_CHAT_TEXT, trained, a, strlen(a), b, c);
}

/* Jinja's trim (Python str.strip): leading and trailing white space. */
static int trimmed(segs *s, int trained, const char *t)
{
    vkl_ucbuf u = {0};
    size_t len = strlen(t), a = 0, b = len;
    if (vkl_utf8_decode(t, len, &u, NULL)) { /* not UTF-8: ASCII rules */
        while (a < b && strchr(" \t\n\r\v\f", t[a])) a++;
        while (b > a && strchr(" \t\n\r\v\f", t[b - 1])) b--;
    } else {
        size_t i = 0, j = u.n;
        unsigned char tmp[4];
        while (i < j && vkl_uc_is_py_space(u.v[i])) a += vkl_utf8_put(u.v[i++], tmp);
        while (j > i && vkl_uc_is_py_space(u.v[j - 1])) b -= vkl_utf8_put(u.v[--j], tmp);
    }
    vkl_ucbuf_free(&u);
    return push(s, VKL_CHAT_TEXT, trained, t + a, b - a, NULL, NULL);
}

int vkl_chat_render(const vkl_chat *c, const vkl_chat_msg *m, int n, int add_generation_prompt, vkl_chat_seg **out,
                    int *nseg, vkl_err *e)
{
    segs s = {0};
    int rc = 0;
    *out = NULL;
    *nseg = 0;
    for (int i = 0; i < n; i++)
        if (!m[i].role || !m[i].content) return vkl_fail(e, "message %d lacks a role or content", i + 1);
    if (c->kind == VKL_CHAT_LLAMA3) {
        rc = text(&s, 0, "<|begin_of_text|>", NULL, NULL);
        for (int i = 0; !rc && i < n; i++) {
            int a = !strcmp(m[i].role, "assistant");
            rc = text(&s, 0, "<|start_header_id|>", m[i].role, "<|end_header_id|>\n\n") || trimmed(&s, a, m[i].content) ||
                 text(&s, a, "<|eot_id|>", NULL, NULL);
        }
        if (!rc && add_generation_prompt) rc = text(&s, 0, "<|start_header_id|>assistant<|end_header_id|>\n\n", NULL, NULL);
    } else if (c->kind == VKL_CHAT_CHATML) {
        if (c->default_system[0] && (n == 0 || strcmp(m[0].role, "system")))
            rc = text(&s, 0, "<|im_start|>system\n", c->default_system, "<|im_end|>\n");
        for (int i = 0; !rc && i < n; i++) {
            int a = !strcmp(m[i].role, "assistant");
            rc = text(&s, 0, "<|im_start|>", m[i].role, "\n") || text(&s, a, m[i].content, NULL, NULL) ||
                 text(&s, a, "<|im_end|>", NULL, NULL) || text(&s, 0, "\n", NULL, NULL);
        }
        if (!rc && add_generation_prompt) rc = text(&s, 0, "<|im_start|>assistant\n", NULL, NULL);
    } else if (c->kind == VKL_CHAT_MISTRAL) {
        rc = push(&s, VKL_CHAT_BOS, 0, NULL, 0, NULL, NULL);
        for (int i = 0; !rc && i < n; i++) {
            int user = !strcmp(m[i].role, "user");
            if (user != (i % 2 == 0) || (!user && strcmp(m[i].role, "assistant"))) {
                vkl_chat_segs_free(s.v, s.n);
                return vkl_fail(e, "message %d: the mistral template needs user and assistant turns alternating from "
                                   "a user turn (role '%s')", i + 1, m[i].role);
            }
            if (user) rc = text(&s, 0, "[INST] ", m[i].content, " [/INST]");
            else rc = text(&s, 1, m[i].content, NULL, NULL) || push(&s, VKL_CHAT_EOS, 1, NULL, 0, NULL, NULL);
        }
    } else {
        return vkl_fail(e, "no chat template");
    }
    if (rc) {
        vkl_chat_segs_free(s.v, s.n);
        return vkl_fail(e, "out of memory");
    }
    *out = s.v;
    *nseg = s.n;
    return 0;
}

void vkl_chat_segs_free(vkl_chat_seg *s, int n)
{
    for (int i = 0; s && i < n; i++) free(s[i].text);
    free(s);
}

typedef struct out {
    int32_t *ids;
    unsigned char *tr;
    int n, cap;
} out;

static int put(out *o, int32_t id, int trained)
{
    if (o->n == o->cap) {
        int cap = o->cap ? 2 * o->cap : 64;
        int32_t *a = realloc(o->ids, sizeof *a * (size_t)cap);
        if (!a) return -1;
        o->ids = a;
        unsigned char *b = realloc(o->tr, (size_t)cap);
        if (!b) return -1;
        o->tr = b;
        o->cap = cap;
    }
    o->ids[o->n] = id;
    o->tr[o->n++] = (unsigned char)trained;
    return 0;
}

/* Segments [a, b) (all text) encoded as one text, each id flagged by the segment it falls in. */
static int run(const vkl_chat_seg *s, int a, int b, vkl_chat_encode_fn enc, void *user, out *o, vkl_err *e)
{
    size_t len = 0;
    for (int k = a; k < b; k++) len += strlen(s[k].text);
    char *t = malloc(len + 1);
    int *bound = malloc(sizeof(int) * (size_t)(b - a));
    int32_t *all = NULL, *pre = NULL;
    int n = 0, np = 0, rc = t && bound ? 0 : vkl_fail(e, "out of memory");
    size_t at = 0;
    if (!rc) {
        for (int k = a; k < b; k++) {
            size_t l = strlen(s[k].text);
            memcpy(t + at, s[k].text, l);
            at += l;
        }
        t[at] = 0;
        rc = enc(user, t, &all, &n, e);
    }
    /* bound[k]: ids of the whole that the text up to segment k's end shares */
    at = 0;
    for (int k = a; !rc && k < b; k++) {
        at += strlen(s[k].text);
        if (k == b - 1) {
            bound[k - a] = n;
            break;
        }
        char saved = t[at];
        t[at] = 0;
        free(pre);
        pre = NULL;
        rc = enc(user, t, &pre, &np, e);
        t[at] = saved;
        int c = 0;
        while (!rc && c < np && c < n && pre[c] == all[c]) c++;
        bound[k - a] = c;
    }
    for (int i = 0, k = a; !rc && i < n; i++) {
        while (k < b - 1 && i >= bound[k - a]) k++;
        if (put(o, all[i], s[k].trained)) rc = vkl_fail(e, "out of memory");
    }
    free(t);
    free(bound);
    free(all);
    free(pre);
    return rc;
}

int vkl_chat_tokenize(const vkl_chat_seg *s, int nseg, vkl_chat_encode_fn enc, void *user, int bos, int eos,
                      int32_t **ids, unsigned char **trained, int *n, vkl_err *e)
{
    out o = {0};
    int rc = 0;
    for (int k = 0; !rc && k < nseg;) {
        if (s[k].kind == VKL_CHAT_TEXT) {
            int j = k;
            while (j < nseg && s[j].kind == VKL_CHAT_TEXT) j++;
            rc = run(s, k, j, enc, user, &o, e);
            k = j;
            continue;
        }
        int id = s[k].kind == VKL_CHAT_BOS ? bos : eos;
        if (id < 0) rc = vkl_fail(e, "the chat template needs a %s id and the model names none",
                                  s[k].kind == VKL_CHAT_BOS ? "BOS" : "EOS");
        else if (put(&o, id, s[k].trained)) rc = vkl_fail(e, "out of memory");
        k++;
    }
    if (rc) {
        free(o.ids);
        free(o.tr);
        return -1;
    }
    *ids = o.ids;
    *trained = o.tr;
    *n = o.n;
    return 0;
}
