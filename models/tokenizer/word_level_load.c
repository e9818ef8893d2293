/* Reading a Hugging Face tokenizer.json with a WordLevel model. Only what
 * vklora can encode exactly is accepted (normalizer Lowercase or none,
 * pre-tokenizer Whitespace); anything else is refused with a message rather
 * than tokenized differently from the library that wrote the file. */
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "word_level.h"
#include "io/text.h"

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* An id as tokenizers stores it: a non-negative integer. */
static int get_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= (double)INT32_MAX ||
        v->valuedouble != (double)(int32_t)v->valuedouble)
        return -1;
    *id = (int32_t)v->valuedouble;
    return 0;
}

static int check_pipeline(vkl_clip_tokenizer *t, const cJSON *root, const char *file, vkl_err *e)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return vkl_fail(e, "%s: no \"model\" object (not a tokenizers tokenizer.json?)", file);
    const char *mt = type_of(model);
    if (!mt || strcmp(mt, "WordLevel"))
        return vkl_fail(e, "%s: tokenizer model type %s%s%s is not supported; vklora reads tokenizer.json "
                           "only with a WordLevel model (CLIP's BPE loads from vocab.json + merges.txt)",
                        file, mt ? "\"" : "", mt ? mt : "(none)", mt ? "\"" : "");
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (norm && !cJSON_IsNull(norm)) {
        const char *nt = type_of(norm);
        if (!nt || strcmp(nt, "Lowercase"))
            return vkl_fail(e, "%s: normalizer \"%s\" is not supported (supported: Lowercase, or none)", file,
                            nt ? nt : "?");
        t->wl_lowercase = 1;
    }
    const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    const char *pt = pre ? type_of(pre) : NULL;
    if (!pt || strcmp(pt, "Whitespace"))
        return vkl_fail(e, "%s: pre_tokenizer \"%s\" is not supported (supported: Whitespace)", file,
                        pt ? pt : "none");
    return 0;
}

/* Adds one token, refusing what a dense id -> token table cannot hold. */
static int add_token(vkl_clip_tokenizer *t, const char *tok, int32_t id, size_t n_ids, const char *file, vkl_err *e)
{
    if ((size_t)id >= n_ids)
        return vkl_fail(e, "%s: token \"%.64s\" has id %d, out of range for %zu tokens (ids must be 0..%zu)", file,
                        tok, id, n_ids, n_ids - 1);
    if (vkl_strmap_get(&t->vocab, tok, strlen(tok)) >= 0)
        return vkl_fail(e, "%s: token \"%.64s\" appears twice in the vocabulary", file, tok);
    if ((size_t)id < t->n_vocab && t->str_off[id] != (size_t)-1)
        return vkl_fail(e, "%s: tokens \"%.64s\" and \"%.64s\" both have id %d", file,
                        t->strs + t->str_off[id], tok, id);
    if (vkl_clip_vocab_add(t, tok, strlen(tok), id))
        return vkl_fail(e, "%s: out of memory", file);
    return 0;
}

/* The vocabulary, with the added tokens that it lacks (tokenizers gives them
 * ids after the model's), and the list of added tokens to cut out. */
static int read_vocab(vkl_clip_tokenizer *t, const cJSON *root, const char *file, vkl_err *e)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return vkl_fail(e, "%s: the WordLevel model has no \"vocab\" object", file);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        return vkl_fail(e, "%s: \"added_tokens\" is not an array", file);
    size_t n_ids = (size_t)cJSON_GetArraySize(vocab), n_added = 0;
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next, n_added++) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(a, "content");
        int32_t id;
        if (!cJSON_IsString(c) || !*c->valuestring || get_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id))
            return vkl_fail(e, "%s: added_tokens[%zu] needs a non-empty \"content\" and an integer \"id\"", file,
                            n_added);
        n_ids += !cJSON_GetObjectItemCaseSensitive(vocab, c->valuestring);
    }
    if (n_ids == 0)
        return vkl_fail(e, "%s: the vocabulary is empty", file);
    for (const cJSON *it = vocab->child; it; it = it->next) {
        int32_t id;
        if (get_id(it, &id))
            return vkl_fail(e, "%s: token \"%.64s\" has no valid id (a non-negative integer)", file, it->string);
        if (add_token(t, it->string, id, n_ids, file, e))
            return -1;
    }
    t->added = calloc(n_added ? n_added : 1, sizeof *t->added);
    t->added_id = calloc(n_added ? n_added : 1, sizeof *t->added_id);
    if (!t->added || !t->added_id)
        return vkl_fail(e, "%s: out of memory", file);
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const char *c = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        int32_t id = -1, have = vkl_strmap_get(&t->vocab, c, strlen(c));
        get_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id);
        if (!cJSON_GetObjectItemCaseSensitive(vocab, c) && add_token(t, c, id, n_ids, file, e))
            return -1;
        if (have >= 0 && have != id)
            return vkl_fail(e, "%s: added token \"%.64s\" has id %d but the vocabulary gives it %d", file, c, id, have);
        if (!(t->added[t->n_added] = strdup(c)))
            return vkl_fail(e, "%s: out of memory", file);
        t->added_id[t->n_added++] = id;
    }
    for (size_t i = 0; i < t->n_vocab; i++)
        if (t->str_off[i] == (size_t)-1)
            return vkl_fail(e, "%s: no token has id %zu (ids must be 0..%zu without gaps)", file, i, t->n_vocab - 1);
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    if (!cJSON_IsString(unk))
        return vkl_fail(e, "%s: the WordLevel model has no \"unk_token\"", file);
    t->unk = vkl_strmap_get(&t->vocab, unk->valuestring, strlen(unk->valuestring));
    if (t->unk < 0)
        return vkl_fail(e, "%s: unk_token \"%.64s\" is not in the vocabulary", file, unk->valuestring);
    return 0;
}

/* Id of a special token named in a template: the template's own ids when it
 * lists one, else the vocabulary's. */
static int32_t template_id(const vkl_clip_tokenizer *t, const cJSON *pp, const cJSON *piece)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(piece, "SpecialToken");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(st, "id");
    if (!cJSON_IsString(name))
        return -1;
    const cJSON *def = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"),
                                                        name->valuestring);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(def, "ids");
    int32_t id;
    if (cJSON_GetArraySize(ids) == 1 && !get_id(ids->child, &id))
        return (size_t)id < t->n_vocab ? id : -1;
    return vkl_strmap_get(&t->vocab, name->valuestring, strlen(name->valuestring));
}

/* BOS/EOS as the post-processor puts them around a single sequence:
 * TemplateProcessing "<bos> $A <eos>", or Roberta/Bert's cls and sep. */
static void specials_from_post(vkl_clip_tokenizer *t, const cJSON *root)
{
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const char *pt = cJSON_IsObject(pp) ? type_of(pp) : NULL;
    if (!pt)
        return;
    if (!strcmp(pt, "TemplateProcessing")) {
        const cJSON *single = cJSON_GetObjectItemCaseSensitive(pp, "single");
        int n = cJSON_GetArraySize(single);
        if (n >= 2) {
            t->bos = template_id(t, pp, cJSON_GetArrayItem(single, 0));
            t->eos = template_id(t, pp, cJSON_GetArrayItem(single, n - 1));
        }
    } else if (!strcmp(pt, "RobertaProcessing") || !strcmp(pt, "BertProcessing")) {
        const cJSON *cls = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "cls"), 1);
        const cJSON *sep = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "sep"), 1);
        int32_t id;
        if (!get_id(cls, &id) && (size_t)id < t->n_vocab)
            t->bos = id;
        if (!get_id(sep, &id) && (size_t)id < t->n_vocab)
            t->eos = id;
    }
}

/* "bos_token": "<s>" or {"content": "<s>", ...} in tokenizer_config.json. */
static int32_t config_token(const vkl_clip_tokenizer *t, const cJSON *cfg, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v))
        v = cJSON_GetObjectItemCaseSensitive(v, "content");
    return cJSON_IsString(v) ? vkl_strmap_get(&t->vocab, v->valuestring, strlen(v->valuestring)) : -1;
}

static int specials_from_config(vkl_clip_tokenizer *t, const char *config, vkl_err *e)
{
    char *buf;
    size_t len;
    FILE *f = fopen(config, "rb");
    if (!f)
        return 0; /* optional */
    fclose(f);
    if (vkl_read_text_file(config, VKL_CLIP_MAX_FILE_BYTES, &buf, &len, e))
        return -1;
    cJSON *cfg = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return vkl_fail(e, "%s: not a JSON object (corrupt tokenizer_config.json?)", config);
    }
    if (t->bos < 0)
        t->bos = config_token(t, cfg, "bos_token");
    if (t->eos < 0)
        t->eos = config_token(t, cfg, "eos_token");
    cJSON_Delete(cfg);
    return 0;
}

int vkl_wl_load(vkl_clip_tokenizer *t, const char *file, const char *config, vkl_err *e)
{
    char *buf;
    size_t len;
    if (vkl_read_text_file(file, VKL_CLIP_MAX_FILE_BYTES, &buf, &len, e))
        return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, 0);
    long at = end ? (long)(end - buf) : -1;
    free(buf);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return root ? vkl_fail(e, "%s: not a JSON object", file)
                    : vkl_fail(e, "%s: malformed JSON near byte %ld", file, at);
    }
    t->bos = t->eos = t->unk = -1;
    int rc = check_pipeline(t, root, file, e);
    if (!rc)
        rc = read_vocab(t, root, file, e);
    if (!rc)
        specials_from_post(t, root);
    cJSON_Delete(root);
    if (!rc && (t->bos < 0 || t->eos < 0) && config)
        rc = specials_from_config(t, config, e);
    if (rc)
        return -1;
    if (t->bos < 0)
        t->bos = vkl_strmap_get(&t->vocab, VKL_WL_BOS, strlen(VKL_WL_BOS));
    if (t->eos < 0)
        t->eos = vkl_strmap_get(&t->vocab, VKL_WL_EOS, strlen(VKL_WL_EOS));
    if (t->bos < 0 || t->eos < 0)
        return vkl_fail(e, "%s: no %s token: the post_processor template names none around $A, "
                           "tokenizer_config.json has no %s, and the vocabulary has no %s",
                        file, t->bos < 0 ? "begin-of-text" : "end-of-text", t->bos < 0 ? "bos_token" : "eos_token",
                        t->bos < 0 ? VKL_WL_BOS : VKL_WL_EOS);
    t->comma = vkl_strmap_get(&t->vocab, ",", 1);
    t->word_level = 1;
    return 0;
}
