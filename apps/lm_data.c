#include "lm_data.h"
#include "io/text.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IGNORE (-100)

void vkl_app_lm_data_free(vkl_app_lm_data *d)
{
    free(d->ids);
    free(d->labels);
    free(d->attn);
    memset(d, 0, sizeof *d);
}

/* Appends one row: the first min(n, L) ids, padding after; labels where
 * trained (NULL: everywhere). */
static int add_row(vkl_app_lm_data *d, int *cap, const int32_t *ids, const unsigned char *trained, int n, int pad,
                   vkl_err *e)
{
    if (d->n == *cap) {
        int nc = *cap ? *cap * 2 : 64;
        size_t sz = (size_t)nc * d->L;
        int32_t *a = realloc(d->ids, sizeof(int32_t) * sz);
        if (a) d->ids = a;
        int32_t *b = a ? realloc(d->labels, sizeof(int32_t) * sz) : NULL;
        if (b) d->labels = b;
        int *c = b ? realloc(d->attn, sizeof(int) * sz) : NULL;
        if (!c) return vkl_fail(e, "out of host memory for %d samples", nc);
        d->attn = c;
        *cap = nc;
    }
    if (n > d->L) n = d->L;
    size_t o = (size_t)d->n * d->L;
    for (int t = 0; t < d->L; t++) {
        int on = t < n;
        d->ids[o + t] = on ? ids[t] : pad;
        d->labels[o + t] = on && (!trained || trained[t]) ? ids[t] : IGNORE;
        d->attn[o + t] = on;
    }
    d->tokens += n;
    d->n++;
    return 0;
}

/* Where samples go: one row each, or (packing) a stream of ids and their
 * label flags, each sample ended by EOS, cut into rows of L. */
typedef struct sink {
    vkl_app_lm_data *d;
    int cap, pad, pack, eos;
    int32_t *ids;
    unsigned char *tr;
    int n, ncap;
} sink;

static int emit(sink *k, const int32_t *ids, const unsigned char *tr, int n, vkl_err *e)
{
    if (!k->pack) return add_row(k->d, &k->cap, ids, tr, n, k->pad, e);
    int need = k->n + n + 1, L = k->d->L;
    if (need > k->ncap) {
        int nc = need > 2 * k->ncap ? need : 2 * k->ncap;
        int32_t *a = realloc(k->ids, sizeof(int32_t) * (size_t)nc);
        if (a) k->ids = a;
        unsigned char *b = a ? realloc(k->tr, (size_t)nc) : NULL;
        if (!b) return vkl_fail(e, "out of host memory packing samples");
        k->tr = b;
        k->ncap = nc;
    }
    for (int i = 0; i < n; i++) {
        k->ids[k->n] = ids[i];
        k->tr[k->n++] = tr ? tr[i] : 1;
    }
    if (k->eos >= 0 && (!n || ids[n - 1] != k->eos)) {
        k->ids[k->n] = k->eos;
        k->tr[k->n++] = 1;
    }
    int done = 0;
    for (; k->n - done >= L; done += L)
        if (add_row(k->d, &k->cap, k->ids + done, k->tr + done, L, k->pad, e)) return -1;
    memmove(k->ids, k->ids + done, sizeof(int32_t) * (size_t)(k->n - done));
    memmove(k->tr, k->tr + done, (size_t)(k->n - done));
    k->n -= done;
    return 0;
}

/* The packed tail, when it has a token to predict. */
static int flush(sink *k, vkl_err *e)
{
    int rc = k->pack && k->n >= 2 ? add_row(k->d, &k->cap, k->ids, k->tr, k->n, k->pad, e) : 0;
    free(k->ids);
    free(k->tr);
    k->ids = NULL;
    k->tr = NULL;
    k->n = 0;
    return rc;
}

static int load_text(const char *path, const char *s, const vkl_app_lm_tok *tok, int bos, int pad,
                     vkl_app_lm_data *d, int *cap, vkl_err *e)
{
    int32_t *ids = NULL;
    int n = 0;
    if (vkl_app_lm_tok_encode(tok, s, bos, &ids, &n, e)) return vkl_err_prefix(e, "%s: ", path), -1;
    int rc = 0;
    for (int o = 0; !rc && o + 2 <= n; o += d->L) rc = add_row(d, cap, ids + o, NULL, n - o, pad, e);
    free(ids);
    return rc;
}

static int encode_raw(void *user, const char *text, int32_t **ids, int *n, vkl_err *e)
{
    return vkl_app_lm_tok_encode_raw(user, text, ids, n, e);
}

/* {"prompt","completion"} and {"messages"} lines as segments (chat_template.h). */
static int line_segments(const cJSON *j, const vkl_app_lm_tok *tok, int adds_bos, int eos, vkl_chat_seg **segs,
                         int *ns, vkl_err *e)
{
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(j, "messages");
    if (msgs) {
        if (!cJSON_IsArray(msgs)) return vkl_fail(e, "\"messages\" is not an array");
        if (tok->chat.kind == VKL_CHAT_NONE) return vkl_fail(e, "%s; give --chat-template llama3|chatml|mistral", tok->chat_error);
        int n = cJSON_GetArraySize(msgs), i = 0;
        vkl_chat_msg *m = calloc((size_t)(n ? n : 1), sizeof *m);
        if (!m) return vkl_fail(e, "out of host memory");
        for (const cJSON *x = msgs->child; x; x = x->next, i++) {
            const cJSON *r = cJSON_GetObjectItemCaseSensitive(x, "role"), *c = cJSON_GetObjectItemCaseSensitive(x, "content");
            if (!cJSON_IsString(r) || !cJSON_IsString(c)) {
                free(m);
                return vkl_fail(e, "message %d needs string \"role\" and \"content\"", i + 1);
            }
            m[i] = (vkl_chat_msg){r->valuestring, c->valuestring};
        }
        int rc = vkl_chat_render(&tok->chat, m, n, 0, segs, ns, e);
        free(m);
        return rc;
    }
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt"), *c = cJSON_GetObjectItemCaseSensitive(j, "completion");
    if (!cJSON_IsString(p) || !cJSON_IsString(c))
        return vkl_fail(e, "no \"text\", \"messages\" or \"prompt\" + \"completion\" string fields");
    vkl_chat_seg *s = calloc(4, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    int k = 0;
    if (adds_bos) s[k++] = (vkl_chat_seg){VKL_CHAT_BOS, NULL, 0};
    s[k++] = (vkl_chat_seg){VKL_CHAT_TEXT, strdup(p->valuestring), 0};
    s[k++] = (vkl_chat_seg){VKL_CHAT_TEXT, strdup(c->valuestring), 1};
    if (eos >= 0) s[k++] = (vkl_chat_seg){VKL_CHAT_EOS, NULL, 1}; /* the model learns to stop */
    if (!s[adds_bos].text || !s[adds_bos + 1].text) {
        vkl_chat_segs_free(s, k);
        return vkl_fail(e, "out of host memory");
    }
    *segs = s;
    *ns = k;
    return 0;
}

static int load_chat_line(const cJSON *j, const vkl_app_lm_tok *tok, int bos, int eos, sink *k, vkl_err *e)
{
    int adds = 0, bos_id = vkl_app_lm_tok_lead_bos(tok, bos, &adds, e);
    if (bos_id == -2) return -1;
    vkl_chat_seg *s = NULL;
    int ns = 0;
    if (line_segments(j, tok, adds, eos, &s, &ns, e)) return -1;
    int32_t *ids = NULL;
    unsigned char *tr = NULL;
    int n = 0;
    int rc = vkl_chat_tokenize(s, ns, encode_raw, (void *)tok, bos_id, eos, &ids, &tr, &n, e);
    vkl_chat_segs_free(s, ns);
    int any = 0;
    for (int i = 1; !rc && i < n && (k->pack || i < k->d->L); i++) any |= tr[i]; /* position 0 predicts nothing */
    if (!rc && any) rc = emit(k, ids, tr, n, e);
    free(ids);
    free(tr);
    return rc;
}

static int load_jsonl(const char *path, char *s, const vkl_app_lm_tok *tok, int bos, int eos, sink *k, vkl_err *e)
{
    int line = 0;
    for (char *p = s; *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (*q) {
            cJSON *j = cJSON_Parse(q);
            const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "text") : NULL;
            if (!cJSON_IsObject(j)) {
                cJSON_Delete(j);
                return vkl_fail(e, "%s line %d: not a JSON object", path, line);
            }
            if (!cJSON_IsString(t)) {
                int rc = load_chat_line(j, tok, bos, eos, k, e);
                cJSON_Delete(j);
                if (rc) return vkl_err_prefix(e, "%s line %d: ", path, line), -1;
                if (!nl) break;
                p = nl + 1;
                continue;
            }
            int32_t *ids = NULL;
            int n = 0;
            int rc = vkl_app_lm_tok_encode(tok, t->valuestring, bos, &ids, &n, e);
            cJSON_Delete(j);
            if (rc) return vkl_err_prefix(e, "%s line %d: ", path, line), -1;
            rc = n >= 2 || k->pack ? emit(k, ids, NULL, n, e) : 0; /* a lone BOS predicts nothing */
            free(ids);
            if (rc) return -1;
        }
        if (!nl) break;
        p = nl + 1;
    }
    return 0;
}

int vkl_app_lm_data_load(const char *path, const vkl_app_lm_tok *tok, int bos, int eos, int pad, int L, int pack,
                         vkl_app_lm_data *d, vkl_err *e)
{
    memset(d, 0, sizeof *d);
    d->L = L;
    size_t len = 0, pl = strlen(path);
    char *s;
    /* a training text: large, but held in memory whole */
    if (vkl_read_text_file(path, (size_t)1 << 32, &s, &len, e)) return -1;
    if (strlen(s) != len) {
        free(s);
        return vkl_fail(e, "%s: contains a NUL byte; not a text file", path);
    }
    int cap = 0;
    int jsonl = pl > 6 && !strcmp(path + pl - 6, ".jsonl");
    sink k = {.d = d, .pad = pad, .pack = pack && jsonl, .eos = eos};
    int rc = jsonl ? load_jsonl(path, s, tok, bos, eos, &k, e) || flush(&k, e)
                   : load_text(path, s, tok, bos, pad, d, &cap, e);
    free(k.ids);
    free(k.tr);
    free(s);
    if (!rc && !d->n) rc = vkl_fail(e, "%s: no training sample (empty, or no text to predict)", path);
    if (rc) vkl_app_lm_data_free(d);
    return rc;
}
