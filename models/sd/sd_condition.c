#include "sd/sd_condition.h"

#include <stdlib.h>
#include <string.h>

int vkl_sd_text_condition(vkl_sd_model *m, const char *text, float *out, vkl_err *e)
{
    if (m->cfg->n_text_encoders != 1) return vkl_fail(e, "a text condition is for SD 1.x / 2.x models (one text encoder)");
    int32_t row[VKL_CLIP_CONTEXT];
    size_t n_content = 0;
    if (vkl_clip_encode_padded(m->tok, text, 0, row, &n_content, e)) return -1;
    float *states = NULL;
    int chunks = 0;
    if (vkl_sd_encode_prompt(m, text, 1, 1, 1, &states, &chunks, e)) return -1;
    int T = vkl_sd_text_tokens(m), D = m->cfg->unet.cross_attention_dim;
    /* rows 1 .. n: the content tokens (at most T - 2 of them) and EOS, of the first chunk */
    int n = (int)(n_content < (size_t)(T - 2) ? n_content : (size_t)(T - 2)) + 1;
    for (int k = 0; k < D; k++) {
        double s = 0;
        for (int i = 1; i <= n; i++) s += states[(size_t)i * D + k];
        out[k] = (float)(s / n);
    }
    free(states);
    return 0;
}
