#include "lm_tok.h"

#include "llama/llama_gguf.h"
#include "tokenizer/sp_gguf.h"
#include "tokenizer/tok_chunks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int vkl_app_lm_tok_open(const char *model, const char *path, int vocab, vkl_app_lm_tok *t, vkl_err *e)
{
    char buf[4096];
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
    if (!path) {
        snprintf(buf, sizeof buf, "%s/tokenizer.model", model);
        if (stat(buf, &st)) return vkl_fail(e, "%s has no tokenizer.model; name a tokenizer with --tokenizer", model);
        path = buf;
    }
    size_t n = strlen(path);
    if (n > 4 && !strcmp(path + n - 4, ".bin")) return vkl_l2c_tok_load(path, vocab, &t->l2c, e);
    if (vkl_sp_load(path, &t->sp, e)) return -1;
    if (vkl_sp_size(t->sp) > vocab)
        return vkl_fail(e, "%s has %d pieces, more than the model's vocabulary of %d", path, vkl_sp_size(t->sp), vocab);
    return 0;
}

void vkl_app_lm_tok_free(vkl_app_lm_tok *t)
{
    vkl_sp_free(t->sp);
    vkl_l2c_tok_free(t->l2c);
    vkl_bbpe_free(t->bbpe);
    t->sp = NULL;
    t->l2c = NULL;
    t->bbpe = NULL;
}

/* One part's ids appended to *v (BOS only on the first part). */
static int encode_part(const vkl_app_lm_tok *t, const char *text, int bos, int32_t **v, int *n, int *cap, vkl_err *e)
{
    int32_t *ids = NULL;
    int k = 0;
    if (t->l2c) {
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
    if (bos >= 0 && !t->l2c) (*v)[(*n)++] = bos;
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
        size_t end = vkl_tok_chunk_end(text, s, len, 256);
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
