/* LLaMA-family causal language models (HF LlamaForCausalLM layout).
 *
 * Forward: embedding -> per layer [RMSNorm -> q/k/v projections (through the
 * adapter set, so LoRA applies) -> rotate-half RoPE -> causal attention with
 * grouped key/value heads -> o_proj -> residual -> RMSNorm -> SwiGLU MLP ->
 * residual] -> final RMSNorm -> lm_head; logits [B, L, V] f32.
 *
 * Grouped-query attention never copies keys/values per query head: query
 * heads are grouped [B*KV, G, ...] (G = heads / kv_heads) and each kv head is
 * read through a view that repeats it over its group (stride 0, or the
 * matmul's broadcast batch dimension). */
#ifndef VKL_LLAMA_H
#define VKL_LLAMA_H

#include "lora/lora_apply.h"
#include "weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_llama_config {
    int hidden, layers, heads, kv_heads, head_dim, intermediate, vocab, max_pos;
    float rope_theta, rms_eps;
    int tie_embeddings;
    int bos, eos; /* -1 when absent */
    /* Qwen2 (model_type qwen2): biases on q/k/v; LLaMA attention_bias: on
     * q/k/v/o (model.layers.N.self_attn.*_proj.bias, f32). */
    int qkv_bias, o_bias;
    int eos_extra[3], n_eos_extra; /* further ids of an eos_token_id list (Llama 3) */
    vkl_rope_scaling rope_scaling; /* rope_scaling type llama3; factor 0: none */
} vkl_llama_config;
/* 1 when id is one of the further ids of the config's eos_token_id list
 * (eos itself is the generation's stop_id). */
int vkl_llama_is_extra_eos(const vkl_llama_config *c, int32_t id);

/* HF config.json: model_type llama, mistral or qwen2 (qwen2: q/k/v biases;
 * a sliding window only caps max_pos, since inside it attention is full);
 * missing head_dim = hidden / heads, missing kv heads = heads;
 * rope_scaling null or type llama3; eos_token_id a number or a list. */
int vkl_llama_config_read(const char *path, vkl_llama_config *c, vkl_err *e);
/* Shape checks between the fields; message names the field. */
int vkl_llama_config_check(const vkl_llama_config *c, vkl_err *e);

typedef struct vkl_llama {
    vkl_ctx *ctx;
    vkl_llama_config cfg;
    vkl_weights *w; /* HF names, e.g. model.layers.0.self_attn.q_proj.weight */
} vkl_llama;

/* dir/config.json + dir/model.safetensors; matrices stored as matrix_dtype
 * (VKL_F32, VKL_F16 or VKL_BF16), vectors f32. VKL_NF4 (a QLoRA base): the
 * seven projections of every layer are quantised to NF4 at load (runtime/quant.h;
 * no full-precision copy reaches the device), the embedding and lm_head are
 * f16, vectors f32 (vkl_llama_weight_dtype). VKL_NF4_DQ: every matrix
 * (embedding and lm_head included) in NF4 with QLoRA's double-quantised scales
 * kept quantised on the device. Every expected weight is checked
 * for presence and shape before anything runs. VKL_LLAMA_AS_STORED (GGUF
 * files only): see vkl_llama_load_gguf. */
int vkl_llama_load(vkl_ctx *c, const char *dir, vkl_dtype matrix_dtype, vkl_llama **out, vkl_err *e);
/* matrix_dtype for a GGUF model whose linear weights stay on the device in
 * the file's block types (Q8_0, Q4_K, ...; F16 / BF16 / F32 as themselves),
 * read in place by the matmul shaders (llama_gguf.c). Not a tensor dtype. */
#define VKL_LLAMA_AS_STORED ((vkl_dtype)VKL_DTYPE_COUNT)
/* A model of shape cfg with random weights (uniform, about 0.02 std; norms 1)
 * stored as for vkl_llama_load with base (llama_random.c; benchmarks). */
int vkl_llama_random(vkl_ctx *c, const vkl_llama_config *cfg, vkl_dtype base, uint64_t seed, vkl_llama **out,
                     vkl_err *e);
/* The dtype a weight `name` with ndim dims is stored in for a base dtype. */
vkl_dtype vkl_llama_weight_dtype(const char *name, int ndim, vkl_dtype base);
/* A llama2.c checkpoint (.bin, run.c's legacy format) as the same model
 * (llama2c_model.c); vkl_llama_load takes one when given a file, or a GGUF
 * file (llama_gguf.h) when the file starts with the GGUF magic. */
int vkl_llama_load_llama2c(vkl_ctx *c, const char *path, vkl_dtype matrix_dtype, vkl_llama **out, vkl_err *e);
void vkl_llama_free(vkl_llama *m);

/* KV cache: per layer, keys (after RoPE) and values as persistent f32
 * tensors laid out [max_len, B, kv_heads, head_dim], so one position of every
 * head is one contiguous window and (batch, kv head) pairs are a uniform stride. */
typedef struct vkl_llama_kv {
    int max_len, batch, layers;
    vkl_tensor **k, **v;
} vkl_llama_kv;
int vkl_llama_kv_new(const vkl_llama *m, int batch, int max_len, vkl_llama_kv **out, vkl_err *e);
void vkl_llama_kv_free(vkl_llama_kv *kv);

/* DoRA modules (PEFT use_dora): per module the factors, scale, trainable
 * magnitude m [out] and the row norm n = ||W + s B A|| [out], refreshed by
 * vkl_llama_dora_norms at the start of a graph and read as a constant
 * (PEFT detaches the norm). y = (m / n) * (x W^T + s (x A^T) B^T). */
typedef struct vkl_llama_dora_mod {
    char *module;
    float s; /* scale of the low-rank product */
    vkl_tensor *a, *b, *scale, *mag, *norm;
} vkl_llama_dora_mod;
typedef struct vkl_llama_dora {
    vkl_llama_dora_mod *v;
    int n;
} vkl_llama_dora;
int vkl_llama_dora_build(const vkl_llama *m, const vkl_lora *l, float mult, vkl_llama_dora **out, vkl_err *e);
void vkl_llama_dora_free(vkl_llama_dora *d);
/* Appends the recomputation of every module's norm n into its persistent tensor. */
int vkl_llama_dora_norms(vkl_graph *g, const vkl_llama *m, const vkl_llama_dora *d);
/* Writes W' = (m / ||W + s B A||_row) * (W + s B A) into the model's (f32) weights. */
int vkl_llama_dora_merge(const vkl_llama *m, const vkl_llama_dora *d, vkl_err *e);

/* (IA)^3 modules (PEFT IA3Config): per module one f32 vector on the device,
 * [in] for a feed-forward module (y = W (l * x), PEFT feedforward_modules)
 * or [out] for the others (y = l * (W x)); a mul broadcast over the tokens.
 * IA3 wraps whatever else the layer runs (LoRA, DoRA): the input scaled
 * before it, the output after it. User multiplier m: l' = 1 + m (l - 1), so
 * 1 is PEFT exactly, 0 the base model; several adapters on one module
 * multiply their l' (as PEFT multiplies active IA3 adapters). */
typedef struct vkl_llama_ia3_mod {
    char *module;
    int on_input;
    vkl_tensor *vec;
} vkl_llama_ia3_mod;
typedef struct vkl_llama_ia3 {
    vkl_llama_ia3_mod *v;
    int n;
} vkl_llama_ia3;
/* Every module of every adapter must be IA3 and name a projection of the model
 * (model.layers.N.self_attn.q_proj, ...) with a vector of the fitting length. */
int vkl_llama_ia3_build(const vkl_llama *m, const vkl_lora_use *uses, int n, vkl_llama_ia3 **out, vkl_err *e);
void vkl_llama_ia3_free(vkl_llama_ia3 *d);
/* A new IA3 adapter with PEFT's initial vectors (ones) on every projection
 * whose name ends with "." + an entry of targets (e.g. "k_proj",
 * "mlp.down_proj"); those ending with an entry of feedforward scale their
 * input. targets NULL: PEFT's LLaMA defaults (k_proj, v_proj, down_proj;
 * feed-forward down_proj). Modules carry internal names, ready for
 * vkl_lora_save_peft. */
int vkl_llama_ia3_init(const vkl_llama *m, const char *const *targets, int nt, const char *const *feedforward, int nf,
                       vkl_lora *out, vkl_err *e);
/* The device vectors (e.g. after training) copied into the IA3 modules of l
 * with the same names (l as made by vkl_llama_ia3_init, or as loaded). */
int vkl_llama_ia3_store(const vkl_llama *m, const vkl_llama_ia3 *d, vkl_lora *l, vkl_err *e);

/* Receives named intermediates (layer -1 for model-level ones); names as in
 * the refkit's hidden_states vectors (q_rope, attn_probs, ...). */
typedef void (*vkl_llama_tap_fn)(void *user, int layer, const char *name, vkl_tensor *t);

typedef struct vkl_llama_fwd {
    const vkl_lora_set *lora;   /* run-time adapters, or NULL */
    const vkl_llama_dora *dora; /* DoRA modules, or NULL */
    const vkl_llama_ia3 *ia3;   /* IA3 vectors, or NULL */
    const struct vkl_llama_adalora *adalora; /* AdaLoRA modules being trained (llama_adalora.h), or NULL */
    /* Additive attention mask f32 [B or 1, 1, L, pos0 + L] (0 or a large
     * negative value), from vkl_llama_mask; NULL: plain causal. */
    vkl_tensor *mask;
    /* 1: attention as matmul + softmax + matmul (the probabilities exist and
     * get a tap; differentiable with the matmul/softmax rules). 0: the fused
     * attention op. A mask implies 1. */
    int explicit_attn;
    vkl_llama_kv *kv;           /* keys/values of positions pos0.. are written here and attention reads 0..pos0+L-1 */
    int pos0;
    vkl_llama_tap_fn tap;
    void *tap_user;
} vkl_llama_fwd;

/* ids: i32 [B, L]. Returns logits [B, L, V] (NULL on error, recorded in g). */
vkl_tensor *vkl_llama_forward(vkl_graph *g, const vkl_llama *m, vkl_tensor *ids, const vkl_llama_fwd *o);

/* Host-side additive mask [B, 1, L, pos0 + L]: causal (key j visible to query
 * i when j <= pos0 + i) and, when attn is not NULL (int [B, pos0 + L], 0 =
 * padding), padded keys hidden, as transformers' 4-D mask. A new persistent tensor. */
vkl_tensor *vkl_llama_mask(vkl_ctx *c, int B, int L, int pos0, const int *attn, vkl_err *e);
/* The same values into a host array of B * L * (pos0 + L) floats (re-uploads). */
void vkl_llama_mask_values(int B, int L, int pos0, const int *attn, float *h);

#ifdef __cplusplus
}
#endif

#endif
