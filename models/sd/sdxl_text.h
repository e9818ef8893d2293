/* SDXL's text conditioning from its two CLIP encoders, as diffusers'
 * StableDiffusionXLPipeline.encode_prompt builds it:
 *   context = concat(te1.hidden_states[-(2+k)], te2.hidden_states[-(2+k)])
 *             along channels (no final LayerNorm; k = clip skip - 1)
 *   pooled  = te2.text_projection(final_layer_norm(te2 last layer)[pool row])
 * Sizes come from the two encoders' configurations. */
#ifndef VKL_SDXL_TEXT_H
#define VKL_SDXL_TEXT_H

#include "sd/clip_text.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The flat row (b*L + position) each prompt's pooled vector is read from, as
 * transformers' CLIP text models choose it: configs with eos_token_id 2 (the
 * original CLIP configs, SDXL's among them) pool at argmax(ids), i.e. the
 * first EOS 49407; others at the first eos_id (position 0 when absent). */
void vkl_clip_pool_rows(const vkl_sd_text_config *c, const int32_t *ids, int B, int L, int32_t *rows);

/* normed [B, L, D] (after final_layer_norm), rows i32 [B] from
 * vkl_clip_pool_rows -> [B, projection_dim] through text_projection (no bias);
 * [B, D] when the encoder has no projection. */
vkl_tensor *vkl_clip_text_pooled(vkl_graph *g, const vkl_clip_text *m, vkl_tensor *normed, vkl_tensor *rows);

/* ids1, ids2 i32 [B, L] (the two tokenizers' rows), pool_rows i32 [B] for
 * ids2, skip = clip skip - 1 (0: penultimate layers). Returns the context
 * [B, L, hidden1 + hidden2]; *pooled (may be NULL) gets [B, projection_dim]. */
vkl_tensor *vkl_sdxl_text_forward(vkl_graph *g, const vkl_clip_text *te1, const vkl_clip_text *te2, vkl_tensor *ids1,
                                  vkl_tensor *ids2, vkl_tensor *pool_rows, int skip, vkl_tensor **pooled);

#ifdef __cplusplus
}
#endif

#endif
