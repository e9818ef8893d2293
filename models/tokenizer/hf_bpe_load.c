/* Reading tokenizer.json (+ tokenizer_config.json) into a vkl_hfbpe: the
 * BPE model (vocab, merges), added tokens, normalizer and pre-tokenizer, each
 * checked against what hf_bpe.h can reproduce (the post-processor and the
 * config: hf_bpe_special.c). */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "hf_bpe_internal.h"
#include "io/text.h"

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int is_true(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static int get_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 1 << 30 || v->valuedouble != floor(v->valuedouble))
        return -1;
    *id = (int32_t)v->valuedouble;
    return 0;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes take the code points 256, 257, ... in byte order. */
static void byte_map(vkl_hfbpe *t)
{
    int next = 256;
    for (int i = 0; i < 512; i++) t->cp_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        t->byte_cp[b] = printable ? (uint32_t)b : (uint32_t)next++;
        t->cp_byte[t->byte_cp[b]] = (int16_t)b;
    }
}

static uint64_t mhash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    return k ^ (k >> 33);
}

int vkl_hfbpe_merge_find(const vkl_hfbpe *t, int32_t left, int32_t right, int32_t *merged)
{
    if (!t->mcap) return -1;
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    for (size_t i = mhash(key) & (t->mcap - 1); t->mkey[i]; i = (i + 1) & (t->mcap - 1))
        if (t->mkey[i] == key) {
            *merged = t->mres[i];
            return (int)t->mrank[i];
        }
    return -1;
}

/* A later duplicate of a pair takes its rank, as tokenizers' HashMap does. */
static void merge_put(vkl_hfbpe *t, int32_t left, int32_t right, uint32_t rank, int32_t merged)
{
    uint64_t key = ((uint64_t)(uint32_t)left << 32 | (uint32_t)right) + 1;
    size_t i = mhash(key) & (t->mcap - 1);
    while (t->mkey[i] && t->mkey[i] != key) i = (i + 1) & (t->mcap - 1);
    t->mkey[i] = key;
    t->mrank[i] = rank;
    t->mres[i] = merged;
}

static int set_token(vkl_hfbpe *t, int32_t id, const char *s, const char *file, vkl_err *e)
{
    if (t->tok[id]) {
        if (!strcmp(t->tok[id], s)) return 0;
        return vkl_fail(e, "%s: tokens \"%.64s\" and \"%.64s\" both have id %d", file, t->tok[id], s, id);
    }
    t->tok[id] = strdup(s);
    return t->tok[id] ? 0 : vkl_fail(e, "%s: out of memory", file);
}

static int read_model(vkl_hfbpe *t, const cJSON *model, const cJSON *added, const char *file, vkl_err *e)
{
    const char *mt = type_of(model);
    if (mt && strcmp(mt, "BPE"))
        return vkl_fail(e, "%s: tokenizer model type \"%s\" is not supported (only byte-level BPE)", file, mt);
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (cJSON_IsNumber(dropout) && dropout->valuedouble > 0)
        return vkl_fail(e, "%s: BPE dropout %g is not supported", file, dropout->valuedouble);
    const char *affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, affixes[k]);
        if (cJSON_IsString(v) && v->valuestring[0])
            return vkl_fail(e, "%s: BPE %s \"%s\" is not supported", file, affixes[k], v->valuestring);
    }
    if (is_true(model, "byte_fallback", 0))
        return vkl_fail(e, "%s: a BPE with byte_fallback is a SentencePiece-style tokenizer; give its tokenizer.model",
                        file);
    t->ignore_merges = is_true(model, "ignore_merges", 0);
    t->fuse_unk = is_true(model, "fuse_unk", 0);
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab)) return vkl_fail(e, "%s: the BPE model has no \"vocab\" object", file);
    int32_t id = 0, max_id = -1;
    for (const cJSON *v = vocab->child; v; v = v->next) {
        if (get_id(v, &id)) return vkl_fail(e, "%s: vocab entry \"%.64s\" has no valid id", file, v->string);
        max_id = id > max_id ? id : max_id;
    }
    for (const cJSON *a = added ? added->child : NULL; a; a = a->next) {
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(a, "content");
        if (get_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &id) || !cJSON_IsString(content) || !content->valuestring[0])
            return vkl_fail(e, "%s: an added token lacks a valid id or a non-empty content", file);
        max_id = id > max_id ? id : max_id;
    }
    /* ids index a table: refuse sparse ones that would make it huge */
    size_t count = (size_t)cJSON_GetArraySize(vocab) + (added ? (size_t)cJSON_GetArraySize(added) : 0);
    if ((size_t)max_id >= 2 * count + 1024)
        return vkl_fail(e, "%s: token id %d is far beyond the %zu tokens (ids must be dense)", file, max_id, count);
    t->n_ids = max_id + 1;
    t->tok = calloc((size_t)t->n_ids + 1, sizeof *t->tok);
    t->special = calloc((size_t)t->n_ids + 1, 1);
    if (!t->tok || !t->special) return vkl_fail(e, "%s: out of memory", file);
    for (const cJSON *v = vocab->child; v; v = v->next) {
        get_id(v, &id);
        if (vkl_strmap_get(&t->vocab, v->string, strlen(v->string)) >= 0)
            return vkl_fail(e, "%s: token \"%.64s\" appears twice in the vocabulary", file, v->string);
        if (set_token(t, id, v->string, file, e)) return -1;
        if (vkl_strmap_put(&t->vocab, v->string, strlen(v->string), id)) return vkl_fail(e, "%s: out of memory", file);
    }
    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    t->unk = -1;
    if (cJSON_IsString(unk)) {
        t->unk = vkl_strmap_get(&t->vocab, unk->valuestring, strlen(unk->valuestring));
        if (t->unk < 0) return vkl_fail(e, "%s: unk_token \"%.64s\" is not in the vocabulary", file, unk->valuestring);
    }
    return 0;
}

static int read_merges(vkl_hfbpe *t, const cJSON *model, const char *file, vkl_err *e)
{
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges)) return vkl_fail(e, "%s: the BPE model has no \"merges\" array", file);
    size_t n = (size_t)cJSON_GetArraySize(merges);
    t->mcap = 16;
    while (t->mcap < 2 * n) t->mcap *= 2;
    t->mkey = calloc(t->mcap, sizeof *t->mkey);
    t->mrank = malloc(t->mcap * sizeof *t->mrank);
    t->mres = malloc(t->mcap * sizeof *t->mres);
    if (!t->mkey || !t->mrank || !t->mres) return vkl_fail(e, "%s: out of memory", file);
    uint32_t rank = 0;
    char *cat = NULL;
    size_t cat_cap = 0;
    int rc = 0;
    for (const cJSON *m = merges->child; m && !rc; m = m->next, rank++) {
        /* "left right" (one space), or ["left", "right"] as newer files write it */
        const char *l = NULL, *r = NULL;
        size_t ll = 0;
        if (cJSON_IsString(m)) {
            const char *sp = strchr(m->valuestring, ' ');
            if (sp && !strchr(sp + 1, ' ')) l = m->valuestring, ll = (size_t)(sp - l), r = sp + 1;
        } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
                   cJSON_IsString(m->child->next)) {
            l = m->child->valuestring, ll = strlen(l), r = m->child->next->valuestring;
        }
        if (!l || !ll || !*r) {
            rc = vkl_fail(e, "%s: merge %u is not a pair of two tokens", file, rank);
            break;
        }
        size_t rl = strlen(r);
        if (ll + rl + 1 > cat_cap) {
            cat_cap = 2 * (ll + rl + 1);
            char *g = realloc(cat, cat_cap);
            if (!g) {
                rc = vkl_fail(e, "%s: out of memory", file);
                break;
            }
            cat = g;
        }
        memcpy(cat, l, ll);
        memcpy(cat + ll, r, rl + 1);
        int32_t a = vkl_strmap_get(&t->vocab, cat, ll), b = vkl_strmap_get(&t->vocab, r, rl),
                ab = vkl_strmap_get(&t->vocab, cat, ll + rl);
        if (a < 0 || b < 0 || ab < 0)
            rc = vkl_fail(e, "%s: merge %u (\"%.*s\" + \"%s\") names a token missing from the vocabulary", file, rank,
                          (int)ll, cat, r);
        else
            merge_put(t, a, b, rank, ab);
    }
    free(cat);
    return rc;
}

static int read_added(vkl_hfbpe *t, const cJSON *added, const char *file, vkl_err *e)
{
    if (!added) return 0;
    size_t n = (size_t)cJSON_GetArraySize(added);
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return vkl_fail(e, "%s: out of memory", file);
    for (const cJSON *a = added->child; a; a = a->next) {
        vkl_hf_added *d = &t->added[t->n_added];
        const char *content = cJSON_GetObjectItemCaseSensitive(a, "content")->valuestring;
        get_id(cJSON_GetObjectItemCaseSensitive(a, "id"), &d->id);
        if (set_token(t, d->id, content, file, e)) return -1;
        d->content = t->tok[d->id];
        d->len = strlen(content);
        d->single_word = (unsigned char)is_true(a, "single_word", 0);
        d->lstrip = (unsigned char)is_true(a, "lstrip", 0);
        d->rstrip = (unsigned char)is_true(a, "rstrip", 0);
        d->special = (unsigned char)is_true(a, "special", 0);
        /* tokenizers' default: special tokens are matched in the raw text */
        d->normalized = (unsigned char)is_true(a, "normalized", !d->special);
        t->special[d->id] = d->special;
        t->n_added++;
    }
    return 0;
}

static int read_normalizer(vkl_hfbpe *t, const cJSON *norm, const char *file, vkl_err *e)
{
    if (!norm || cJSON_IsNull(norm)) return 0;
    const char *nt = type_of(norm);
    if (nt && !strcmp(nt, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(norm, "normalizers");
        for (const cJSON *s = cJSON_IsArray(list) ? list->child : NULL; s; s = s->next)
            if (read_normalizer(t, s, file, e)) return -1;
        return 0;
    }
    if (nt && !strcmp(nt, "NFC")) {
        t->nfc = 1;
        return 0;
    }
    return vkl_fail(e, "%s: normalizer \"%s\" is not supported (supported: none, NFC)", file, nt ? nt : "?");
}

static int add_step(vkl_hfbpe *t, vkl_hf_pre_step s, const char *file, vkl_err *e)
{
    if (t->n_steps == VKL_HF_MAX_STEPS) return vkl_fail(e, "%s: too many pre-tokenizers", file);
    if (t->n_steps && t->steps[t->n_steps - 1].kind == VKL_PRE_BYTELEVEL)
        return vkl_fail(e, "%s: a pre-tokenizer after ByteLevel is not supported", file);
    t->steps[t->n_steps++] = s;
    return 0;
}

static int read_pre(vkl_hfbpe *t, const cJSON *pre, const char *file, vkl_err *e)
{
    const char *pt = type_of(pre);
    if (!pt) return vkl_fail(e, "%s: a pre_tokenizer has no type", file);
    if (!strcmp(pt, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pre, "pretokenizers");
        for (const cJSON *s = cJSON_IsArray(list) ? list->child : NULL; s; s = s->next)
            if (read_pre(t, s, file, e)) return -1;
        return 0;
    }
    if (!strcmp(pt, "ByteLevel")) {
        if (is_true(pre, "add_prefix_space", 1)) {
            if (t->n_steps) return vkl_fail(e, "%s: ByteLevel add_prefix_space after another pre-tokenizer", file);
            t->prefix_space = 1;
        }
        return add_step(t, (vkl_hf_pre_step){VKL_PRE_BYTELEVEL, VKL_RX_GPT2, is_true(pre, "use_regex", 1)}, file, e);
    }
    if (!strcmp(pt, "Digits"))
        return add_step(t, (vkl_hf_pre_step){VKL_PRE_DIGITS, VKL_RX_GPT2, is_true(pre, "individual_digits", 0)}, file, e);
    if (!strcmp(pt, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pre, "pattern");
        const cJSON *rx = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pre, "behavior");
        if (!cJSON_IsString(rx)) return vkl_fail(e, "%s: a Split pre-tokenizer without a Regex pattern", file);
        int which = vkl_hf_regex_from_pattern(rx->valuestring);
        if (which < 0)
            return vkl_fail(e, "%s: Split regex \"%.120s\" is not one vklora knows (GPT-2, Llama 3, Qwen2)", file,
                            rx->valuestring);
        if (!cJSON_IsString(beh) || strcmp(beh->valuestring, "Isolated") || is_true(pre, "invert", 0))
            return vkl_fail(e, "%s: a Split pre-tokenizer must have behavior Isolated, not inverted", file);
        return add_step(t, (vkl_hf_pre_step){VKL_PRE_SPLIT, (vkl_hf_regex)which, 0}, file, e);
    }
    return vkl_fail(e, "%s: pre_tokenizer \"%s\" is not supported (ByteLevel, Split, Digits, Sequence)", file, pt);
}

int vkl_hfbpe_load_text(const char *json, const char *config_json, const char *label, vkl_hfbpe **out, vkl_err *e)
{
    *out = NULL;
    cJSON *root = cJSON_Parse(json), *cfg = config_json ? cJSON_Parse(config_json) : NULL;
    vkl_hfbpe *t = calloc(1, sizeof *t);
    int rc = 0;
    if (!t) rc = vkl_fail(e, "%s: out of memory", label);
    else if (!cJSON_IsObject(root)) rc = vkl_fail(e, "%s: not a JSON object", label);
    else if (config_json && !cJSON_IsObject(cfg)) rc = vkl_fail(e, "%s: tokenizer_config.json is not a JSON object", label);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!rc && !cJSON_IsObject(model)) rc = vkl_fail(e, "%s: no \"model\" object (not a tokenizer.json?)", label);
    if (!rc && added && !cJSON_IsNull(added) && !cJSON_IsArray(added))
        rc = vkl_fail(e, "%s: \"added_tokens\" is not an array", label);
    if (!rc) {
        byte_map(t);
        if (cJSON_IsNull(added)) added = NULL;
        const cJSON *pre = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
        rc = read_model(t, model, added, label, e) || read_added(t, added, label, e) ||
             read_merges(t, model, label, e) ||
             read_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), label, e) ||
             (pre && !cJSON_IsNull(pre) ? read_pre(t, pre, label, e) : 0) ||
             vkl_hfbpe_read_post(t, cJSON_GetObjectItemCaseSensitive(root, "post_processor"), label, e) ||
             vkl_hfbpe_read_config(t, cfg, label, e);
        if (!rc && (!t->n_steps || t->steps[t->n_steps - 1].kind != VKL_PRE_BYTELEVEL))
            rc = vkl_fail(e, "%s: the pre_tokenizer has no ByteLevel step (not a byte-level BPE)", label);
    }
    cJSON_Delete(root);
    cJSON_Delete(cfg);
    if (rc) {
        vkl_hfbpe_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int vkl_hfbpe_load(const char *path, const char *config, vkl_hfbpe **out, vkl_err *e)
{
    char *json = NULL, *cfg = NULL;
    if (vkl_read_text_file(path, (size_t)1 << 30, &json, NULL, e)) return -1;
    if (config && vkl_read_text_file(config, (size_t)1 << 24, &cfg, NULL, e)) {
        free(json);
        return -1;
    }
    int rc = vkl_hfbpe_load_text(json, cfg, path, out, e);
    free(json);
    free(cfg);
    return rc;
}

void vkl_hfbpe_free(vkl_hfbpe *t)
{
    if (!t) return;
    for (int i = 0; t->tok && i < t->n_ids; i++) free(t->tok[i]);
    free(t->tok);
    free(t->special);
    free(t->added);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    vkl_strmap_free(&t->vocab);
    free(t);
}

int vkl_hfbpe_size(const vkl_hfbpe *t) { return t->n_ids; }
const char *vkl_hfbpe_token(const vkl_hfbpe *t, int id) { return id >= 0 && id < t->n_ids ? t->tok[id] : NULL; }
int vkl_hfbpe_is_special(const vkl_hfbpe *t, int id) { return id >= 0 && id < t->n_ids && t->special[id]; }
int vkl_hfbpe_bos(const vkl_hfbpe *t) { return t->bos; }
int vkl_hfbpe_cleans_up(const vkl_hfbpe *t) { return t->cleanup; }
int vkl_hfbpe_eos(const vkl_hfbpe *t) { return t->eos; }

int vkl_hfbpe_find(const vkl_hfbpe *t, const char *token)
{
    for (size_t i = 0; i < t->n_added; i++)
        if (!strcmp(t->added[i].content, token)) return t->added[i].id;
    return vkl_strmap_get(&t->vocab, token, strlen(token));
}
