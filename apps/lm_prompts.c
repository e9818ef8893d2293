#include "lm_prompts.h"
#include "io/text.h"

#include "llama/llama_lora_init.h"
#include "lm_stream.h"
#include "lora_args.h"
#include "progress.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_CACHED 64
#define MAX_PER_LINE 8

typedef struct cache {
    char path[MAX_CACHED][4096];
    vkl_lora l[MAX_CACHED];
    int n;
} cache;

/* The adapter of dir (a PEFT folder or a file), loaded on first use. */
static const vkl_lora *adapter(cache *c, const vkl_llama *m, const char *dir, vkl_err *e)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->path[i], dir)) return &c->l[i];
    if (c->n == MAX_CACHED) return vkl_fail(e, "more than %d different adapters", MAX_CACHED), NULL;
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (stat(path, &st)) snprintf(path, sizeof path, "%s", dir);
    vkl_lora *l = &c->l[c->n];
    if (vkl_lora_load(path, NULL, l, e)) return NULL;
    int plain = 1;
    for (int k = 0; k < l->n; k++) plain &= l->m[k].kind == VKL_LORA_KIND_LORA;
    if (!plain || vkl_llama_lora_check(m, l, dir, e)) {
        if (!plain) vkl_fail(e, "%s: --prompts lines take LoRA adapters only (not DoRA or IA3)", dir);
        vkl_lora_free(l);
        return NULL;
    }
    snprintf(c->path[c->n], sizeof c->path[c->n], "%s", dir);
    return &c->l[c->n++];
}

static cJSON *id_array(const int32_t *ids, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static int stop_cb(void *user, int32_t id)
{
    return vkl_app_lm_stream_token(user, id) != 0;
}

static int one_line(vkl_llama *m, const vkl_app_lm_tok *tok, cache *c, const cJSON *j, int line,
                    const vkl_app_lm_gen_args *ga, int max_new, vkl_err *e)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompt"), *ls = cJSON_GetObjectItemCaseSensitive(j, "lora");
    if (!cJSON_IsString(p)) return vkl_fail(e, "no \"prompt\" string");
    if (ls && !cJSON_IsArray(ls)) return vkl_fail(e, "\"lora\" is not a list of strings");
    vkl_lora_use uses[MAX_PER_LINE];
    int nu = 0;
    for (const cJSON *x = ls ? ls->child : NULL; x; x = x->next) {
        char dir[4096];
        float w = 1;
        int nw;
        if (!cJSON_IsString(x)) return vkl_fail(e, "\"lora\" is not a list of strings");
        if (nu == MAX_PER_LINE) return vkl_fail(e, "at most %d adapters per line", MAX_PER_LINE);
        if (vkl_app_lora_spec(x->valuestring, dir, sizeof dir, &w, 1, &nw, e)) return -1;
        const vkl_lora *l = adapter(c, m, dir, e);
        if (!l) return -1;
        uses[nu++] = (vkl_lora_use){l, w, w};
    }
    vkl_lora_set *set = NULL;
    int32_t *ids = NULL, *out = NULL;
    int np = 0, nout = 0;
    vkl_app_lm_stream st = {0};
    int rc = nu ? vkl_lora_set_build(m->ctx, uses, nu, &set, e) : 0;
    if (!rc) rc = vkl_app_lm_tok_encode(tok, p->valuestring, m->cfg.bos, &ids, &np, e);
    if (!rc && np + max_new > m->cfg.max_pos)
        rc = vkl_fail(e, "prompt (%d tokens) + %d new tokens exceed the model's %d positions", np, max_new, m->cfg.max_pos);
    if (!rc && !(out = malloc(sizeof(int32_t) * (size_t)max_new))) rc = vkl_fail(e, "out of host memory");
    if (!rc) rc = vkl_app_lm_stream_start(&st, tok, ids, np, max_new, ga->stops.v, ga->stops.n, NULL, e);
    int stop_id = vkl_app_lm_tok_eos(tok, m->cfg.eos);
    if (!rc) {
        vkl_llama_gen_opts o = {.lora = set, .max_new = max_new, .stop_id = stop_id, .sampling = &ga->s,
                                .on_token = stop_cb, .user = &st};
        rc = vkl_llama_generate(m, ids, np, &o, out, &nout, e);
    }
    if (!rc) {
        cJSON *obj = cJSON_CreateObject();
        char *text = vkl_app_lm_stream_text(&st);
        cJSON_AddNumberToObject(obj, "line", line);
        cJSON_AddItemToObject(obj, "lora", ls ? cJSON_Duplicate(ls, 1) : cJSON_CreateArray());
        cJSON_AddItemToObject(obj, "prompt_ids", id_array(ids, np));
        cJSON_AddItemToObject(obj, "ids", id_array(out, nout));
        cJSON_AddStringToObject(obj, "text", text ? text : "");
        cJSON_AddStringToObject(obj, "finish", st.stopped ? "stop" : nout && out[nout - 1] == stop_id ? "eos" : "length");
        char *s = cJSON_PrintUnformatted(obj);
        if (s) puts(s);
        fflush(stdout);
        free(s);
        free(text);
        cJSON_Delete(obj);
    }
    vkl_app_lm_stream_free(&st);
    vkl_lora_set_free(set);
    free(ids);
    free(out);
    return rc;
}

int vkl_app_lm_prompts(vkl_llama *m, const vkl_app_lm_tok *tok, const char *file, const vkl_app_lm_gen_args *ga,
                       int max_new, vkl_err *e)
{
    char *text = NULL;
    if (vkl_read_text_file(file, (size_t)1 << 28, &text, NULL, e)) return -1;
    cache *c = calloc(1, sizeof *c);
    int rc = c ? 0 : vkl_fail(e, "out of host memory"), line = 0, done = 0;
    for (char *p = text; !rc && p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = 0;
        line++;
        char *q = p;
        while (*q == ' ' || *q == '\t' || *q == '\r') q++;
        if (*q) {
            cJSON *j = cJSON_Parse(q);
            rc = cJSON_IsObject(j) ? one_line(m, tok, c, j, line, ga, max_new, e) : vkl_fail(e, "not a JSON object");
            cJSON_Delete(j);
            if (rc) vkl_err_prefix(e, "%s line %d: ", file, line);
            done++;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (!rc && !done) rc = vkl_fail(e, "%s: no prompt", file);
    for (int i = 0; c && i < c->n; i++) vkl_lora_free(&c->l[i]);
    free(c);
    free(text);
    return rc;
}
