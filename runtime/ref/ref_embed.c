/* CPU references for timestep_embed.comp and embedding.comp (rope.comp: ref_rope.c).
 * The float32 rounding steps of PyTorch are reproduced explicitly (each
 * (float) cast is one torch float32 operation); transcendental functions are
 * evaluated in double and rounded once. */
#include "vkl_ref.h"

#include <math.h>

void vkl_ref_timestep_embedding(const float *t, int64_t N, int dim, int flip_sin_to_cos, float shift,
                                float max_period, float *y)
{
    int half = dim / 2;
    float neg_log = (float)-log((double)max_period), denom = (float)((double)half - (double)shift);
    for (int64_t n = 0; n < N; n++) {
        for (int k = 0; k < half; k++) {
            float ex = (float)(neg_log * (float)k);
            ex = ex / denom;
            float freq = (float)exp((double)ex);
            float arg = t[n] * freq;
            float s = (float)sin((double)arg), c = (float)cos((double)arg);
            y[n * dim + k] = flip_sin_to_cos ? c : s;
            y[n * dim + half + k] = flip_sin_to_cos ? s : c;
        }
        if (dim % 2) y[n * dim + dim - 1] = 0;
    }
}

void vkl_ref_embedding(const float *table, int64_t V, int64_t D, const int32_t *ids, int64_t n, float *y)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t d = 0; d < D; d++) y[r * D + d] = ids[r] >= 0 && ids[r] < V ? table[ids[r] * D + d] : 0.0f;
}

/* ---- double precision (gradient tests) */

void vkl_ref_embedding_backward(const int32_t *ids, int64_t n, int64_t V, int64_t D, const double *dy, double *dtable)
{
    for (int64_t i = 0; i < V * D; i++) dtable[i] = 0;
    for (int64_t r = 0; r < n; r++)
        if (ids[r] >= 0 && ids[r] < V)
            for (int64_t d = 0; d < D; d++) dtable[ids[r] * D + d] += dy[r * D + d];
}
