/* The pad token of a CLIP tokenizer. SD 1.x pads rows with EOS; OpenCLIP-based
 * encoders (SD 2.x, SDXL's second) pad with "!" (id 0). transformers takes the
 * pad token from tokenizer_config.json, overridden by special_tokens_map.json,
 * and registers it as a special token: a literal "!" in a prompt then becomes
 * that token instead of going through BPE, which is why pad_text is kept. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cjson/cJSON.h>

#include "clip_internal.h"
#include "io/text.h"

int32_t vkl_clip_pad(const vkl_clip_tokenizer *t) { return t->pad; }

int vkl_clip_set_pad(vkl_clip_tokenizer *t, const char *token, vkl_err *e)
{
    vkl_ucbuf_free(&t->pad_text);
    t->pad = t->eos;
    if (!token || !*token)
        return 0;
    int32_t id = vkl_clip_token_id(t, token);
    if (id < 0)
        return vkl_fail(e, "%s: pad token \"%.64s\" is not in the vocabulary", t->source, token);
    t->pad = id;
    if (id != t->bos && id != t->eos && vkl_utf8_decode(token, strlen(token), &t->pad_text, e))
        return -1;
    return 0;
}

/* "pad_token": "!" or {"content": "!", ...}; NULL when absent or null. */
static const char *pad_of(const cJSON *root, int *bad)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(root, "pad_token");
    if (!p || cJSON_IsNull(p))
        return NULL;
    if (cJSON_IsObject(p))
        p = cJSON_GetObjectItemCaseSensitive(p, "content");
    if (!cJSON_IsString(p) || !p->valuestring[0]) {
        *bad = 1;
        return NULL;
    }
    return p->valuestring;
}

/* Reads dir/name when it exists: its pad token (malloc'd) into *pad. */
static int read_pad(const char *dir, const char *name, char **pad, vkl_err *e)
{
    char path[4096];
    struct stat st;
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path)
        return vkl_fail(e, "path too long: %s/%s", dir, name);
    if (stat(path, &st) != 0)
        return 0;
    char *buf;
    size_t len;
    if (vkl_read_text_file(path, VKL_CLIP_MAX_FILE_BYTES, &buf, &len, e))
        return -1;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vkl_fail(e, "%s: not a JSON object", path);
    }
    int bad = 0;
    const char *p = pad_of(root, &bad);
    int rc = 0;
    if (bad) {
        rc = vkl_fail(e, "%s: \"pad_token\" is neither a token string nor {\"content\": ...}", path);
    } else if (p) {
        free(*pad);
        if (!(*pad = strdup(p)))
            rc = vkl_fail(e, "out of memory");
    }
    cJSON_Delete(root);
    return rc;
}

int vkl_clip_pad_from_folder(vkl_clip_tokenizer *t, const char *dir, vkl_err *e)
{
    char *pad = NULL;
    int rc = read_pad(dir, "tokenizer_config.json", &pad, e);
    if (!rc)
        rc = read_pad(dir, "special_tokens_map.json", &pad, e);
    if (!rc) {
        rc = vkl_clip_set_pad(t, pad, e);
        if (rc)
            vkl_err_prefix(e, "%s: ", dir);
    }
    free(pad);
    return rc;
}
