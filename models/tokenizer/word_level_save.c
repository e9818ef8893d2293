/* Writing a word-level tokenizer folder in the form Hugging Face tokenizers
 * (tokenizer.json, format version "1.0") and transformers'
 * PreTrainedTokenizerFast (tokenizer_config.json, special_tokens_map.json)
 * read. cJSON keeps insertion order, so the vocabulary is written in id order
 * and two builds from the same captions give the same bytes. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cjson/cJSON.h>

#include "io/dir.h"
#include "word_level.h"

static const char *const SPECIAL[3] = {VKL_WL_BOS, VKL_WL_EOS, VKL_WL_UNK};

/* The flags tokenizers stores with an added token: matched in the raw text
 * as it is (not lower-cased), anywhere, without eating spaces. */
static cJSON *added_token(int id, int with_id)
{
    cJSON *a = cJSON_CreateObject();
    if (with_id)
        cJSON_AddNumberToObject(a, "id", id);
    cJSON_AddStringToObject(a, "content", SPECIAL[id]);
    cJSON_AddBoolToObject(a, "single_word", 0);
    cJSON_AddBoolToObject(a, "lstrip", 0);
    cJSON_AddBoolToObject(a, "rstrip", 0);
    cJSON_AddBoolToObject(a, "normalized", 0);
    cJSON_AddBoolToObject(a, "special", 1);
    return a;
}

static cJSON *typed(const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static cJSON *piece(const char *kind, const char *id, int type_id)
{
    cJSON *p = cJSON_CreateObject(), *in = cJSON_AddObjectToObject(p, kind);
    cJSON_AddStringToObject(in, "id", id);
    cJSON_AddNumberToObject(in, "type_id", type_id);
    return p;
}

/* "<|startoftext|> $A <|endoftext|>"; a pair (unused by SD) continues with
 * "$B:1 <|endoftext|>:1" as BERT-style templates do. */
static cJSON *post_processor(void)
{
    cJSON *pp = typed("TemplateProcessing");
    cJSON *single = cJSON_AddArrayToObject(pp, "single"), *pair = cJSON_AddArrayToObject(pp, "pair");
    cJSON_AddItemToArray(single, piece("SpecialToken", VKL_WL_BOS, 0));
    cJSON_AddItemToArray(single, piece("Sequence", "A", 0));
    cJSON_AddItemToArray(single, piece("SpecialToken", VKL_WL_EOS, 0));
    cJSON_AddItemToArray(pair, piece("SpecialToken", VKL_WL_BOS, 0));
    cJSON_AddItemToArray(pair, piece("Sequence", "A", 0));
    cJSON_AddItemToArray(pair, piece("SpecialToken", VKL_WL_EOS, 0));
    cJSON_AddItemToArray(pair, piece("Sequence", "B", 1));
    cJSON_AddItemToArray(pair, piece("SpecialToken", VKL_WL_EOS, 1));
    cJSON *sp = cJSON_AddObjectToObject(pp, "special_tokens");
    for (int id = 1; id >= 0; id--) { /* keys in byte order: "<|e" < "<|s" */
        cJSON *t = cJSON_AddObjectToObject(sp, SPECIAL[id]);
        cJSON_AddStringToObject(t, "id", SPECIAL[id]);
        cJSON_AddItemToObject(t, "ids", cJSON_CreateIntArray(&id, 1));
        const char *s = SPECIAL[id];
        cJSON_AddItemToObject(t, "tokens", cJSON_CreateStringArray(&s, 1));
    }
    return pp;
}

static cJSON *tokenizer_json(const vkl_wl_vocab *v)
{
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int id = 0; id < 3; id++)
        cJSON_AddItemToArray(added, added_token(id, 1));
    cJSON_AddItemToObject(root, "normalizer", typed("Lowercase"));
    cJSON_AddItemToObject(root, "pre_tokenizer", typed("Whitespace"));
    cJSON_AddItemToObject(root, "post_processor", post_processor());
    cJSON_AddNullToObject(root, "decoder");
    cJSON *model = typed("WordLevel");
    cJSON_AddItemToObject(root, "model", model);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (int id = 0; id < 3; id++)
        cJSON_AddNumberToObject(vocab, SPECIAL[id], id);
    for (size_t i = 0; i < v->n; i++)
        cJSON_AddNumberToObject(vocab, v->words[i], (double)(i + 3));
    cJSON_AddStringToObject(model, "unk_token", VKL_WL_UNK);
    return root;
}

static void add_special_names(cJSON *o)
{
    cJSON_AddStringToObject(o, "bos_token", VKL_WL_BOS);
    cJSON_AddStringToObject(o, "eos_token", VKL_WL_EOS);
    cJSON_AddStringToObject(o, "pad_token", VKL_WL_EOS); /* SD 1.x pads with EOS */
    cJSON_AddStringToObject(o, "unk_token", VKL_WL_UNK);
}

static cJSON *tokenizer_config(int max_length)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *dec = cJSON_AddObjectToObject(root, "added_tokens_decoder");
    for (int id = 0; id < 3; id++) {
        char key[8];
        snprintf(key, sizeof key, "%d", id);
        cJSON_AddItemToObject(dec, key, added_token(id, 0));
    }
    add_special_names(root);
    cJSON_AddNumberToObject(root, "model_max_length", max_length);
    cJSON_AddStringToObject(root, "tokenizer_class", "PreTrainedTokenizerFast");
    return root;
}

static int write_json(const char *dir, const char *name, cJSON *j, vkl_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *text = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!text)
        return vkl_fail(e, "out of memory writing %s", path);
    FILE *f = fopen(path, "wb");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f))
        ok = 0;
    free(text);
    return ok ? 0 : vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
}

int vkl_wl_save(const vkl_wl_vocab *v, int max_length, const char *outdir, int force, vkl_err *e)
{
    char out[4096], tmp[4200];
    size_t n = strlen(outdir);
    while (n > 1 && outdir[n - 1] == '/')
        n--; /* "out/" must not put the temporary folder inside out */
    if (n >= sizeof out)
        return vkl_fail(e, "path too long: %s", outdir);
    memcpy(out, outdir, n);
    out[n] = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    if (vkl_dir_remove(tmp, e))
        return -1;
    if (mkdir(tmp, 0755))
        return vkl_fail(e, "cannot create %s: %s", tmp, strerror(errno));
    cJSON *map = cJSON_CreateObject();
    if (map)
        add_special_names(map);
    int rc = write_json(tmp, "tokenizer.json", tokenizer_json(v), e);
    if (!rc)
        rc = write_json(tmp, "tokenizer_config.json", tokenizer_config(max_length), e);
    if (!rc)
        rc = write_json(tmp, "special_tokens_map.json", map, e);
    else
        cJSON_Delete(map);
    if (!rc)
        rc = vkl_dir_install(tmp, out, force, e);
    if (rc) {
        vkl_err ignore;
        vkl_dir_remove(tmp, &ignore);
    }
    return rc;
}
