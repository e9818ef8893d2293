/* LLaMA models as GGUF files (llama.cpp's layout), shared by the loader
 * (llama_gguf.c) and the converter (llama_gguf_write.c).
 *
 * Names: token_embd, output_norm, output, blk.N.{attn_norm, attn_q, attn_k,
 * attn_v, attn_output, ffn_norm, ffn_gate, ffn_up, ffn_down}.weight. Shapes
 * are innermost first, so an HF [out, in] matrix is ne = [in, out] with the
 * same bytes. llama.cpp's converter reorders the rows of attn_q and attn_k
 * within each head from HF's rotate-half layout (pairs i, i + d/2) to the
 * interleaved pairs (2i, 2i+1) of its RoPE; the loader undoes it. */
#ifndef VKL_LLAMA_GGUF_H
#define VKL_LLAMA_GGUF_H

#include "llama/llama.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The GGUF name of an HF weight name (model.layers.3.self_attn.q_proj.weight
 * -> blk.3.attn_q.weight) into out; -1 when it has none. */
int vkl_llama_gguf_name(const char *hf, char *out, size_t n);

/* Rows of one head-stacked q or k matrix (heads * hd rows of row_bytes
 * bytes, blocks or plain values): to_gguf 1 reorders HF's halves into
 * interleaved pairs, 0 the reverse. -1 when out of memory. */
int vkl_llama_gguf_permute_rows(uint8_t *rows, int heads, int hd, size_t row_bytes, int to_gguf);

/* True when the file at path starts with the GGUF magic. */
int vkl_llama_is_gguf(const char *path);

/* Only the hyper-parameters of a GGUF model (no upload). */
int vkl_llama_gguf_config(const char *path, vkl_llama_config *c, vkl_err *e);

/* The model of a GGUF file (general.architecture llama): hyper-parameters
 * from the llama.* keys, weights dequantised on the device into matrix_dtype
 * (vectors f32). matrix_dtype VKL_LLAMA_AS_STORED: the layers' projections
 * and lm_head (output.weight) keep the file's blocks (a GGUF block dtype,
 * runtime/quant.h; F32 / F16 / BF16 as that dtype), read in place by the
 * matmul; the embedding, read by the gather, is dequantised to f16 (F32 and
 * BF16 embeddings stay as they are); vectors f32. */
int vkl_llama_load_gguf(vkl_ctx *c, const char *path, vkl_dtype matrix_dtype, vkl_llama **out, vkl_err *e);

/* Writes m's weights (read back from the device as f32) to path as GGUF
 * with matrices quantised to `type` (a ggml block type); a matrix whose
 * rows are not whole blocks of it falls back to the next type whose blocks
 * fit (K types to Q5_0/Q5_1/Q8_0, then F16), as llama.cpp's quantiser does.
 * Vectors stay F32. tok: the SentencePiece tokenizer, written as
 * tokenizer.ggml.* (NULL: none). Counts of each type written go to
 * counts[type] when counts is not NULL (an array of 32). */
struct vkl_sp;
int vkl_llama_save_gguf(const vkl_llama *m, const struct vkl_sp *tok, int type, const char *name, const char *path,
                        int *counts, vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
