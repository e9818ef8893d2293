/* CPU references for the LoRA ops (runtime/ops/lora.c), double accumulation. */
#include "vkl_ref.h"

void vkl_ref_linear_lora(const float *x, int64_t T, int64_t in, const float *w, int64_t out, const float *bias,
                         const float *a_cat, const float *b_cat, const float *rank_scale, int64_t R, float *y)
{
    for (int64_t t = 0; t < T; t++) {
        const float *xr = x + t * in;
        for (int64_t o = 0; o < out; o++) {
            double s = bias ? bias[o] : 0;
            for (int64_t i = 0; i < in; i++) s += (double)xr[i] * w[o * in + i];
            for (int64_t r = 0; r < R; r++) {
                double h = 0;
                for (int64_t i = 0; i < in; i++) h += (double)xr[i] * a_cat[r * in + i];
                s += h * rank_scale[r] * b_cat[o * R + r];
            }
            y[t * out + o] = (float)s;
        }
    }
}

void vkl_ref_lora_delta(const float *up, const float *down, int64_t out, int64_t r, int64_t fan, float scale,
                        float *delta)
{
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < fan; i++) {
            double s = 0;
            for (int64_t k = 0; k < r; k++) s += (double)up[o * r + k] * down[k * fan + i];
            delta[o * fan + i] = (float)(s * scale);
        }
}
