#include "lm_tok.h"
#include "io/text.h"

#include "llama/llama_gguf.h"
#include "tokenizer/sp_gguf.h"
#include "tokenizer/tok_chunks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>


#include <cjson/cJSON.h>

/* chat_template of model/tokenizer_config.json: a string, or a list of
 * {name, template} of which "default" is used. */
static void read_chat(const char *model, vkl_app_lm_tok *t)
{
    char path[4200], *text = NULL;
    struct stat st;
    snprintf(path, sizeof path, "%s/tokenizer_config.json", model);
    snprintf(t->chat_error, sizeof t->chat_error, "%.300s has no chat_template", path);
    if (stat(path, &st) || !S_ISREG(st.st_mode) || vkl_read_text_file(path, 1 << 24, &text, NULL, NULL)) return;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(j, "chat_template");
    for (const cJSON *x = cJSON_IsArray(ct) ? ct->child : NULL; x; x = x->next) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(x, "name");
        if (cJSON_IsString(name) && !strcmp(name->valuestring, "default"))
            ct = cJSON_GetObjectItemCaseSensitive(x, "template");
    }
    vkl_err e;
    if (cJSON_IsString(ct) && vkl_chat_from_template(ct->valuestring, &t->chat, &e))
        snprintf(t->chat_error, sizeof t->chat_error, "%.300s: %.180s", path, e.msg);
    cJSON_Delete(j);
}

int vkl_app_lm_tok_open(const char *model, const char *path, int vocab, vkl_app_lm_tok *t, vkl_err *e)
{
    char buf[4096], cfg[4200];
    struct stat st;
    if (!path && vkl_llama_is_gguf(model)) {
        vkl_gguf_file *f = NULL;
        const char *kind = NULL;
        if (vkl_gguf_open(model, &f, e)) return -1;
        int rc = vkl_gguf_get_str(f, "tokenizer.ggml.model", &kind, e) < 0 ? -1 : 0;
        if (!rc) rc = kind && !strcmp(kind, "gpt2") ? vkl_bbpe_from_gguf(f, &t->bbpe, e) : vkl_sp_from_gguf(f, &t->sp, e);
        vkl_gguf_close(f);
        if (rc) return -1;
        int size = t->sp ? vkl_sp_size(t->sp) : vkl_bbpe_size(t->bbpe);
        if (size > vocab)
            return vkl_fail(e, "%s: the tokenizer has %d pieces, more than the model's vocabulary of %d", model, size,
                            vocab);
        return 0;
    }
    if (!stat(model, &st) && S_ISDIR(st.st_mode)) read_chat(model, t);
    if (!path) {
        snprintf(buf, sizeof buf, "%s/tokenizer.model", model);
        if (stat(buf, &st)) snprintf(buf, sizeof buf, "%s/tokenizer.json", model);
        if (stat(buf, &st))
            return vkl_fail(e, "%s has no tokenizer.model or tokenizer.json; name a tokenizer with --tokenizer", model);
        path = buf;
    }
    size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".bin")) return vkl_l2c_tok_load(path, vocab, &t->l2c, e);
    if (n > 5 && !strcmp(path + n - 5, ".json")) {
        /* tokenizer_config.json beside it says whether BOS/EOS are added */
        const char *slash = strrchr(path, '/');
        snprintf(cfg, sizeof cfg, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
        if (vkl_hfbpe_load(path, stat(cfg, &st) ? NULL : cfg, &t->bpe, e)) return -1;
        if (vkl_hfbpe_size(t->bpe) > vocab)
            return vkl_fail(e, "%s has %d tokens, more than the model's vocabulary of %d", path,
                            vkl_hfbpe_size(t->bpe), vocab);
        return 0;
    }
    if (vkl_sp_load(path, &t->sp, e)) return -1;
    if (vkl_sp_size(t->sp) > vocab)
        return vkl_fail(e, "%s has %d pieces, more than the model's vocabulary of %d", path, vkl_sp_size(t->sp), vocab);
    return 0;
}

void vkl_app_lm_tok_free(vkl_app_lm_tok *t)
{
    vkl_sp_free(t->sp);
    vkl_l2c_tok_free(t->l2c);
    vkl_hfbpe_free(t->bpe);
    vkl_bbpe_free(t->bbpe);
    t->bbpe = NULL;
    t->sp = NULL;
    t->l2c = NULL;
    t->bpe = NULL;
}

int vkl_app_lm_tok_encode_raw(const vkl_app_lm_tok *t, const char *text, int32_t **ids, int *n, vkl_err *e)
{
    if (t->bpe) return vkl_hfbpe_encode(t->bpe, text, 0, ids, n, e);
    if (t->bbpe) return vkl_bbpe_encode(t->bbpe, text, ids, n, e);
    if (t->l2c) return vkl_l2c_tok_encode(t->l2c, text, -1, -1, ids, n, e);
    return vkl_sp_encode(t->sp, text, ids, n, e);
}

int vkl_app_lm_tok_lead_bos(const vkl_app_lm_tok *t, int bos, int *adds, vkl_err *e)
{
    int32_t *lead = NULL;
    int nl = 0;
    if (vkl_app_lm_tok_encode(t, "", bos, &lead, &nl, e)) return -2;
    int id = nl > 0 ? lead[0] : bos;
    *adds = nl > 0;
    free(lead);
    return id;
}

static int encode_raw_cb(void *user, const char *text, int32_t **ids, int *n, vkl_err *e)
{
    return vkl_app_lm_tok_encode_raw(user, text, ids, n, e);
}

int vkl_app_lm_tok_chat_messages(const vkl_app_lm_tok *t, const vkl_chat_msg *m, int n, int bos, int eos,
                                 int32_t **ids, int *n_ids, vkl_err *e)
{
    if (t->chat.kind == VKL_CHAT_NONE) return vkl_fail(e, "%s; give --chat-template llama3|chatml|mistral", t->chat_error);
    int adds = 0, bos_id = vkl_app_lm_tok_lead_bos(t, bos, &adds, e);
    if (bos_id == -2) return -1;
    vkl_chat_seg *s = NULL;
    int ns = 0;
    if (vkl_chat_render(&t->chat, m, n, 1, &s, &ns, e)) return -1;
    unsigned char *tr = NULL;
    int rc = vkl_chat_tokenize(s, ns, encode_raw_cb, (void *)t, bos_id, eos, ids, &tr, n_ids, e);
    free(tr);
    vkl_chat_segs_free(s, ns);
    return rc;
}

int vkl_app_lm_tok_chat_prompt(const vkl_app_lm_tok *t, const char *system, const char *user, int bos, int eos,
                               int32_t **ids, int *n, vkl_err *e)
{
    vkl_chat_msg m[2] = {{"system", system}, {"user", user}};
    return vkl_app_lm_tok_chat_messages(t, system ? m : m + 1, system ? 2 : 1, bos, eos, ids, n, e);
}

int vkl_app_lm_tok_eos(const vkl_app_lm_tok *t, int model_eos)
{
    if (t->l2c) return 1;
    if (model_eos >= 0) return model_eos;
    return t->bpe ? vkl_hfbpe_eos(t->bpe) : -1;
}

static int append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap : 256;
        while (*len + n + 1 > c) c *= 2;
        char *g = realloc(*buf, c);
        if (!g) return -1;
        *buf = g;
        *cap = c;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = 0;
    return 0;
}

int vkl_app_lm_tok_text(const vkl_app_lm_tok *t, const int32_t *ids, int n, char **buf, size_t *len, size_t *cap)
{
    if (t->bpe) {
        if (vkl_hfbpe_decode_bytes(t->bpe, ids, n, 1, buf, len, cap)) return -1;
        return append(buf, len, cap, "", 0);
    }
    if (t->bbpe) {
        char *s = vkl_bbpe_decode(t->bbpe, ids, n);
        int rc = s ? append(buf, len, cap, s, strlen(s)) : -1;
        free(s);
        return rc;
    }
    if (t->l2c) {
        char piece[256];
        for (int i = 1; i < n; i++) { /* the first id is the prompt's BOS */
            if (ids[i] == 1) continue;
            vkl_l2c_tok_decode(t->l2c, ids[i - 1], ids[i], piece, sizeof piece);
            if (append(buf, len, cap, piece, strlen(piece))) return -1;
        }
        return 0;
    }
    char *s = vkl_sp_decode(t->sp, ids, n);
    int rc = s ? append(buf, len, cap, s, strlen(s)) : -1;
    free(s);
    return rc;
}

/* One part's ids appended to *v (BOS only on the first part). */
static int encode_part(const vkl_app_lm_tok *t, const char *text, int bos, int32_t **v, int *n, int *cap, vkl_err *e)
{
    int32_t *ids = NULL;
    int k = 0;
    if (t->bpe) {
        if (vkl_hfbpe_encode(t->bpe, text, bos >= 0, &ids, &k, e)) return -1;
    } else if (t->l2c) {
        if (vkl_l2c_tok_encode(t->l2c, text, bos >= 0 ? 1 : -1, -1, &ids, &k, e)) return -1;
    } else if (t->bbpe) {
        if (vkl_bbpe_encode(t->bbpe, text, &ids, &k, e)) return -1;
    } else if (vkl_sp_encode(t->sp, text, &ids, &k, e)) {
        return -1;
    }
    int need = *n + k + 1;
    if (need > *cap) {
        int nc = need > 2 * *cap ? need : 2 * *cap;
        int32_t *g = realloc(*v, sizeof(int32_t) * (size_t)nc);
        if (!g) {
            free(ids);
            return vkl_fail(e, "out of host memory");
        }
        *v = g;
        *cap = nc;
    }
    if (bos >= 0 && (t->sp || t->bbpe)) (*v)[(*n)++] = bos; /* tokenizer.json and llama2.c add their own */
    if (k) memcpy(*v + *n, ids, sizeof(int32_t) * (size_t)k);
    *n += k;
    free(ids);
    return 0;
}

int vkl_app_lm_tok_encode(const vkl_app_lm_tok *t, const char *text, int bos, int32_t **ids, int *n, vkl_err *e)
{
    *ids = NULL;
    *n = 0;
    size_t len = strlen(text);
    char *part = malloc(len + 1);
    int cap = 0, rc = part ? 0 : vkl_fail(e, "out of host memory");
    /* the SentencePiece and llama2.c encoders are quadratic in the length:
     * parts of about 256 bytes (tok_chunks.h); the byte-level BPE merges
     * within its pre-tokens and takes the text whole */
    /* the encoders are quadratic in the length: parts of about 256 bytes
     * (tok_chunks.h); byte-level BPE keeps every space (no dummy prefix to
     * restore one at a cut) and merges within pre-tokenized words: whole */
    if (t->bbpe) {
        free(part);
        rc = encode_part(t, text, bos >= 0 ? bos : 1, ids, n, &cap, e);
        if (rc) {
            free(*ids);
            *ids = NULL;
            *n = 0;
        }
        return rc;
    }
    for (size_t s = 0; !rc && (s < len || s == 0);) {
        size_t end = t->bpe ? len : vkl_tok_chunk_end(text, s, len, 256);
        memcpy(part, text + s, end - s);
        part[end - s] = 0;
        rc = encode_part(t, part, s == 0 ? (bos >= 0 ? bos : 1) : -1, ids, n, &cap, e);
        s = end + 1;
    }
    free(part);
    if (rc) {
        free(*ids);
        *ids = NULL;
        *n = 0;
    }
    return rc;
}

char *vkl_app_lm_tok_decode(const vkl_app_lm_tok *t, const int32_t *ids, int n)
{
    if (t->bbpe) return vkl_bbpe_decode(t->bbpe, ids, n);
    return t->sp ? vkl_sp_decode(t->sp, ids, n) : NULL;
}
