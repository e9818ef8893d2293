#include "lm_tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int vkl_app_lm_tok_open(const char *model, const char *path, int vocab, vkl_app_lm_tok *t, vkl_err *e)
{
    char buf[4096];
    struct stat st;
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
    t->sp = NULL;
    t->l2c = NULL;
}

int vkl_app_lm_tok_encode(const vkl_app_lm_tok *t, const char *text, int bos, int32_t **ids, int *n, vkl_err *e)
{
    *ids = NULL;
    *n = 0;
    if (t->l2c) return vkl_l2c_tok_encode(t->l2c, text, 1, -1, ids, n, e);
    int32_t *sp = NULL;
    int k = 0;
    if (vkl_sp_encode(t->sp, text, &sp, &k, e)) return -1;
    *ids = malloc(sizeof(int32_t) * (size_t)(k + 1));
    if (!*ids) {
        free(sp);
        return vkl_fail(e, "out of host memory");
    }
    (*ids)[0] = bos >= 0 ? bos : 1;
    if (k) memcpy(*ids + 1, sp, sizeof(int32_t) * (size_t)k);
    *n = k + 1;
    free(sp);
    return 0;
}
