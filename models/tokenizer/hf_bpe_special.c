/* What tokenizer.json's post-processor and tokenizer_config.json add around
 * an encoded text (BOS/EOS ids), the special tokens they name, and the
 * decoding flag of the config. */
#include <math.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "hf_bpe_internal.h"

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

static int get_id(const cJSON *v, int32_t *id)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble >= 1 << 30 || v->valuedouble != floor(v->valuedouble))
        return -1;
    *id = (int32_t)v->valuedouble;
    return 0;
}

/* A template's special-token name -> its ids (tokenizers' special_tokens map). */
static int template_ids(vkl_hfbpe *t, const cJSON *post, const char *name, int before, const char *file, vkl_err *e)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(post, "special_tokens"), name);
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids");
    if (!cJSON_IsArray(ids)) return vkl_fail(e, "%s: template token \"%.64s\" has no ids", file, name);
    for (const cJSON *v = ids->child; v; v = v->next) {
        int32_t id;
        int *n = before ? &t->n_before : &t->n_after;
        if (get_id(v, &id) || id >= t->n_ids) return vkl_fail(e, "%s: template token \"%.64s\" has a bad id", file, name);
        if (*n == VKL_HF_MAX_AROUND) return vkl_fail(e, "%s: template has too many special tokens", file);
        (before ? t->before : t->after)[(*n)++] = id;
    }
    return 0;
}

int vkl_hfbpe_read_post(vkl_hfbpe *t, const cJSON *post, const char *file, vkl_err *e)
{
    if (!post || cJSON_IsNull(post)) return 0;
    const char *pt = type_of(post);
    if (pt && !strcmp(pt, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(post, "processors");
        for (const cJSON *s = cJSON_IsArray(list) ? list->child : NULL; s; s = s->next)
            if (vkl_hfbpe_read_post(t, s, file, e)) return -1;
        return 0;
    }
    if (pt && !strcmp(pt, "ByteLevel")) return 0; /* offsets only */
    if (!pt || strcmp(pt, "TemplateProcessing"))
        return vkl_fail(e, "%s: post_processor \"%s\" is not supported (TemplateProcessing, ByteLevel)", file,
                        pt ? pt : "?");
    const cJSON *single = cJSON_GetObjectItemCaseSensitive(post, "single");
    int seen_a = 0;
    for (const cJSON *it = cJSON_IsArray(single) ? single->child : NULL; it; it = it->next) {
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(it, "SpecialToken");
        const cJSON *seq = cJSON_GetObjectItemCaseSensitive(it, "Sequence");
        const cJSON *sid = cJSON_GetObjectItemCaseSensitive(sp ? sp : seq, "id");
        if (!cJSON_IsString(sid)) return vkl_fail(e, "%s: a template item is neither SpecialToken nor Sequence", file);
        if (seq) {
            if (strcmp(sid->valuestring, "A") || seen_a) return vkl_fail(e, "%s: the single template must hold A once", file);
            seen_a = 1;
        } else if (template_ids(t, post, sid->valuestring, !seen_a, file, e)) {
            return -1;
        }
    }
    if (!seen_a) return vkl_fail(e, "%s: the single template has no sequence A", file);
    return 0;
}

/* bos_token / eos_token: a string, or an object with "content". */
static int config_token(const vkl_hfbpe *t, const cJSON *cfg, const char *key, int32_t *id, const char *file, vkl_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, "content");
    if (!cJSON_IsString(v)) return 0;
    *id = vkl_hfbpe_find(t, v->valuestring);
    if (*id < 0) return vkl_fail(e, "%s: %s \"%.64s\" is not a token", file, key, v->valuestring);
    return 0;
}

int vkl_hfbpe_read_config(vkl_hfbpe *t, const cJSON *cfg, const char *file, vkl_err *e)
{
    t->bos = t->n_before ? t->before[0] : -1;
    t->eos = -1;
    if (!cfg) return 0;
    if (config_token(t, cfg, "bos_token", &t->bos, file, e) || config_token(t, cfg, "eos_token", &t->eos, file, e))
        return -1;
    t->cleanup = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(cfg, "clean_up_tokenization_spaces"));
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    const cJSON *ae = cJSON_GetObjectItemCaseSensitive(cfg, "add_eos_token");
    /* as LlamaTokenizerFast.update_post_processor: the flags replace the
     * template; other fast classes (PreTrainedTokenizerFast of Llama 3,
     * GPT2TokenizerFast, Qwen2TokenizerFast) keep the file's template */
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(cfg, "tokenizer_class");
    static const char *const rebuilds[] = {"LlamaTokenizer", "LlamaTokenizerFast", "CodeLlamaTokenizer",
                                           "CodeLlamaTokenizerFast", "GemmaTokenizer", "GemmaTokenizerFast"};
    int honours = !cJSON_IsString(cls);
    for (size_t k = 0; !honours && k < sizeof rebuilds / sizeof *rebuilds; k++) honours = !strcmp(cls->valuestring, rebuilds[k]);
    if (honours && (cJSON_IsBool(ab) || cJSON_IsBool(ae))) {
        t->n_before = t->n_after = 0;
        if (cJSON_IsTrue(ab)) {
            if (t->bos < 0) return vkl_fail(e, "%s: add_bos_token is set but there is no bos_token", file);
            t->before[t->n_before++] = t->bos;
        }
        if (cJSON_IsTrue(ae)) {
            if (t->eos < 0) return vkl_fail(e, "%s: add_eos_token is set but there is no eos_token", file);
            t->after[t->n_after++] = t->eos;
        }
    }
    return 0;
}
