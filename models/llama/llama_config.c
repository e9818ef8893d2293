/* config.json of an HF LLaMA checkpoint -> vkl_llama_config. */
#include "llama/llama.h"
#include "io/text.h"

#include "sd/sd_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int get_int(const cJSON *j, const char *key, int *out, int required, const char *path, vkl_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) return required ? vkl_fail(e, "%s: %s is missing", path, key) : 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 || v->valuedouble > 1e9)
        return vkl_fail(e, "%s: %s must be a non-negative integer", path, key);
    *out = (int)v->valuedouble;
    return 0;
}

static int get_float(const cJSON *j, const char *key, float *out, const char *path, vkl_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return vkl_fail(e, "%s: %s must be a number", path, key);
    *out = (float)v->valuedouble;
    return 0;
}

int vkl_llama_config_check(const vkl_llama_config *c, vkl_err *e)
{
    if (c->hidden < 1 || c->layers < 1 || c->heads < 1 || c->kv_heads < 1 || c->vocab < 1 || c->intermediate < 1 ||
        c->head_dim < 2)
        return vkl_fail(e, "config: hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, "
                           "intermediate_size, vocab_size and head_dim must be positive");
    if (c->heads % c->kv_heads)
        return vkl_fail(e, "config: num_attention_heads %d is not a multiple of num_key_value_heads %d", c->heads,
                        c->kv_heads);
    if (c->head_dim % 2) return vkl_fail(e, "config: head_dim %d must be even for RoPE", c->head_dim);
    if (!(c->rope_theta > 1)) return vkl_fail(e, "config: rope_theta %g must be > 1", (double)c->rope_theta);
    if (!(c->rms_eps > 0)) return vkl_fail(e, "config: rms_norm_eps must be positive");
    return 0;
}

/* model_type and what it implies: Qwen2 has q/k/v biases; LLaMA's
 * attention_bias puts one on o_proj too; MLP biases are refused. */
static int read_arch(const cJSON *j, vkl_llama_config *c, const char *path, vkl_err *e)
{
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    const char *type = cJSON_IsString(mt) ? mt->valuestring : "llama";
    if (strcmp(type, "llama") && strcmp(type, "mistral") && strcmp(type, "qwen2"))
        return vkl_fail(e, "%s: model_type %s is not supported (llama, mistral, qwen2)", path, type);
    c->qkv_bias = !strcmp(type, "qwen2");
    const cJSON *ab = cJSON_GetObjectItemCaseSensitive(j, "attention_bias");
    if (cJSON_IsTrue(ab)) c->qkv_bias = c->o_bias = 1;
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "mlp_bias")))
        return vkl_fail(e, "%s: mlp_bias true is not supported", path);
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(j, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) return 0;
    const cJSON *rt = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!cJSON_IsString(rt)) rt = cJSON_GetObjectItemCaseSensitive(rs, "type");
    if (!cJSON_IsString(rt) || strcmp(rt->valuestring, "llama3"))
        return vkl_fail(e, "%s: rope_scaling type %s is not supported (llama3)", path,
                        cJSON_IsString(rt) ? rt->valuestring : "(none)");
    vkl_rope_scaling *r = &c->rope_scaling;
    int old_ctx = 0;
    if (get_float(rs, "factor", &r->factor, path, e) || get_float(rs, "low_freq_factor", &r->low_freq_factor, path, e) ||
        get_float(rs, "high_freq_factor", &r->high_freq_factor, path, e) ||
        get_int(rs, "original_max_position_embeddings", &old_ctx, 1, path, e))
        return -1;
    r->old_ctx = (float)old_ctx;
    if (!(r->factor > 0) || !(r->low_freq_factor > 0) || !(r->high_freq_factor > r->low_freq_factor) || old_ctx < 1)
        return vkl_fail(e, "%s: rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and "
                           "original_max_position_embeddings >= 1", path);
    return 0;
}

/* eos_token_id: one id, or a list (Llama 3 stops at any of them). */
static int read_eos(const cJSON *j, vkl_llama_config *c, const char *path, vkl_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "eos_token_id");
    if (!cJSON_IsArray(v)) return get_int(j, "eos_token_id", &c->eos, 0, path, e);
    int k = 0;
    for (const cJSON *x = v->child; x; x = x->next, k++) {
        if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e9 || x->valuedouble != floor(x->valuedouble))
            return vkl_fail(e, "%s: eos_token_id must hold non-negative integers", path);
        if (k == 0) c->eos = (int)x->valuedouble;
        else if (k <= 3) c->eos_extra[c->n_eos_extra++] = (int)x->valuedouble;
        else return vkl_fail(e, "%s: eos_token_id lists more than 4 ids", path);
    }
    return 0;
}

/* A sliding window (Mistral 7B v0.1, Qwen2 with use_sliding_window) equals
 * full attention up to its width: the positions are capped there. */
static int read_window(const cJSON *j, vkl_llama_config *c, const char *path, vkl_err *e)
{
    const cJSON *use = cJSON_GetObjectItemCaseSensitive(j, "use_sliding_window");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(j, "model_type");
    int qwen = cJSON_IsString(mt) && !strcmp(mt->valuestring, "qwen2");
    if (qwen && !cJSON_IsTrue(use)) return 0; /* Qwen2 carries the field but leaves it off */
    int w = 0;
    if (get_int(j, "sliding_window", &w, 0, path, e)) return -1;
    if (w > 0 && w < c->max_pos) c->max_pos = w;
    return 0;
}

int vkl_llama_config_read(const char *path, vkl_llama_config *c, vkl_err *e)
{
    cJSON *j = vkl_read_json_object(path, 1 << 20, e);
    if (!j) return -1;
    *c = (vkl_llama_config){.rope_theta = 10000.0f, .rms_eps = 1e-6f, .bos = -1, .eos = -1, .max_pos = 2048};
    int rc = 0;
    rc = read_arch(j, c, path, e);
    rc = rc || get_int(j, "hidden_size", &c->hidden, 1, path, e) ||
         get_int(j, "num_hidden_layers", &c->layers, 1, path, e) ||
         get_int(j, "num_attention_heads", &c->heads, 1, path, e) ||
         get_int(j, "intermediate_size", &c->intermediate, 1, path, e) ||
         get_int(j, "vocab_size", &c->vocab, 1, path, e);
    if (!rc) {
        c->kv_heads = c->heads;
        c->head_dim = c->heads ? c->hidden / c->heads : 0;
        rc = get_int(j, "num_key_value_heads", &c->kv_heads, 0, path, e) ||
             get_int(j, "head_dim", &c->head_dim, 0, path, e) ||
             get_int(j, "max_position_embeddings", &c->max_pos, 0, path, e) ||
             get_int(j, "bos_token_id", &c->bos, 0, path, e) || read_eos(j, c, path, e) ||
             get_float(j, "rope_theta", &c->rope_theta, path, e) ||
             get_float(j, "rms_norm_eps", &c->rms_eps, path, e);
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(j, "hidden_act");
    if (!rc && act && cJSON_IsString(act) && strcmp(act->valuestring, "silu"))
        rc = vkl_fail(e, "%s: hidden_act %s (only silu)", path, act->valuestring);
    if (!rc) rc = read_window(j, c, path, e);
    const cJSON *tie = cJSON_GetObjectItemCaseSensitive(j, "tie_word_embeddings");
    c->tie_embeddings = tie && cJSON_IsTrue(tie);
    cJSON_Delete(j);
    if (rc) return -1;
    if (vkl_llama_config_check(c, e)) {
        vkl_err_prefix(e, "%s: ", path);
        return -1;
    }
    return 0;
}

int vkl_llama_is_extra_eos(const vkl_llama_config *c, int32_t id)
{
    for (int i = 0; i < c->n_eos_extra; i++)
        if (c->eos_extra[i] == id) return 1;
    return 0;
}
