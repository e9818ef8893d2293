/* CPU reference of the 8-bit blockwise AdamW step (shaders/adamw8.comp). The
 * arithmetic is f32 in the shader's order, so the codes agree except where a
 * value lies within rounding of the midpoint between two map entries. */
#include "vkl_ref.h"

#include "optim.h"

#include <math.h>

/* The entry of the sorted map nearest to x; below the midpoint of two
 * neighbours the lower one, from the midpoint up the upper one. */
static int nearest_code(const float *map, float x)
{
    int j = 0;
    while (j < 255 && map[j] < x) j++;
    if (j > 0 && x < (map[j - 1] + map[j]) * 0.5f) j--;
    return j;
}

void vkl_ref_adamw8(float *p, const float *g, int64_t n, uint8_t *codes, float *absmax, float lr, float beta1,
                    float beta2, float eps, float wd, float clip, int t)
{
    float smap[256], umap[256];
    vkl_adamw8_map(1, smap);
    vkl_adamw8_map(0, umap);
    float bc1 = (float)(1.0 - pow(beta1, t)), bc2 = (float)(1.0 - pow(beta2, t));
    float m[VKL_ADAMW8_BLOCK], v[VKL_ADAMW8_BLOCK];
    int64_t nb = (n + VKL_ADAMW8_BLOCK - 1) / VKL_ADAMW8_BLOCK;
    for (int64_t b = 0; b < nb; b++) {
        uint8_t *cm = codes + b * 2 * VKL_ADAMW8_BLOCK, *cv = cm + VKL_ADAMW8_BLOCK;
        float am = absmax[2 * b], av = absmax[2 * b + 1], nm = 0, nv = 0;
        for (int k = 0; k < VKL_ADAMW8_BLOCK; k++) {
            int64_t i = b * VKL_ADAMW8_BLOCK + k;
            m[k] = v[k] = 0;
            if (i < n) {
                float gi = g[i] * clip;
                float m0 = smap[cm[k]] * am, v0 = umap[cv[k]] * av;
                float t1 = beta1 * m0, t2 = (1.0f - beta1) * gi;
                m[k] = t1 + t2;
                float t3 = beta2 * v0, t4 = (1.0f - beta2) * gi * gi;
                v[k] = t3 + t4;
                float pv = p[i] * (1.0f - lr * wd);
                float den = sqrtf(v[k] / bc2) + eps;
                p[i] = pv - lr * (m[k] / bc1) / den;
            }
            nm = fmaxf(nm, fabsf(m[k]));
            nv = fmaxf(nv, v[k]);
        }
        absmax[2 * b] = nm;
        absmax[2 * b + 1] = nv;
        for (int k = 0; k < VKL_ADAMW8_BLOCK; k++) {
            int c1 = nearest_code(smap, nm > 0 ? m[k] / nm : 0.0f);
            if (m[k] < 0 && smap[c1] >= 0) c1--; /* a negative moment keeps its sign */
            cm[k] = (uint8_t)c1;
            cv[k] = (uint8_t)nearest_code(umap, nv > 0 ? v[k] / nv : 0.0f);
        }
    }
}
