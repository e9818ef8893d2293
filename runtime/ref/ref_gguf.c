/* GGUF dequantisation on the CPU. Block layouts (little-endian, f16 scales):
 *   Q4_0 [d, qs[16]]          y = (q - 8) * d, q of element j < 16 the low nibble of qs[j], else the high one of qs[j-16]
 *   Q4_1 [d, m, qs[16]]       y = q * d + m
 *   Q5_0 [d, qh u32, qs[16]]  q as Q4_0 plus bit j of qh as bit 4; y = (q - 16) * d
 *   Q5_1 [d, m, qh, qs[16]]   y = q * d + m
 *   Q8_0 [d, int8 qs[32]]     y = q * d
 *   Q4_K [d, dmin, scales[12], qs[128]] 8 sub-blocks of 32 with 6-bit scale/min;
 *        y = (d * sc) * q - dmin * m
 *   Q5_K [d, dmin, scales[12], qh[32], qs[128]] as Q4_K plus a fifth bit from qh
 *   Q6_K [ql[128], qh[64], int8 scales[16], d] 16 sub-blocks of 16; y = (d * sc) * (q - 32) */
#include "ref_gguf.h"

#include "io/gguf.h"
#include "vkl_base.h"

#include <string.h>

static float half(const uint8_t *p) { return vkl_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }
static uint32_t u32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

static void scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static float value(int type, const uint8_t *base, uint64_t i)
{
    int bytes = vkl_gguf_type_bytes(type);
    switch (type) {
    case VKL_GQ_F32: { float f; memcpy(&f, base + 4 * i, 4); return f; }
    case VKL_GQ_F16: return half(base + 2 * i);
    case VKL_GQ_BF16: return vkl_bf16_to_f32((uint16_t)(base[2 * i] | base[2 * i + 1] << 8));
    case VKL_GQ_Q4_0: case VKL_GQ_Q4_1: case VKL_GQ_Q5_0: case VKL_GQ_Q5_1: case VKL_GQ_Q8_0: {
        const uint8_t *b = base + (i / 32) * (uint64_t)bytes;
        int j = (int)(i % 32);
        float d = half(b);
        if (type == VKL_GQ_Q8_0) return (float)(int8_t)b[2 + j] * d;
        int qs = type == VKL_GQ_Q4_0 ? 2 : type == VKL_GQ_Q4_1 ? 4 : type == VKL_GQ_Q5_0 ? 6 : 8;
        int lo = j < 16 ? b[qs + j] & 15 : b[qs + j - 16] >> 4;
        if (type == VKL_GQ_Q4_0) return (float)(lo - 8) * d;
        if (type == VKL_GQ_Q4_1) return (float)lo * d + half(b + 2);
        int x = lo | (int)((u32(b + (type == VKL_GQ_Q5_0 ? 2 : 4)) >> j) & 1) << 4;
        if (type == VKL_GQ_Q5_0) return (float)(x - 16) * d;
        return (float)x * d + half(b + 2);
    }
    case VKL_GQ_Q4_K: case VKL_GQ_Q5_K: {
        const uint8_t *b = base + (i / 256) * (uint64_t)bytes;
        int j = (int)(i % 256), sub = j / 32, l = j % 32, sc, m;
        scale_min(b + 4, sub, &sc, &m);
        const uint8_t *qs = b + (type == VKL_GQ_Q4_K ? 16 : 48);
        int x = sub % 2 == 0 ? qs[32 * (sub / 2) + l] & 15 : qs[32 * (sub / 2) + l] >> 4;
        if (type == VKL_GQ_Q5_K) x += ((b[16 + l] >> sub) & 1) * 16;
        float d1 = half(b) * (float)sc, m1 = half(b + 2) * (float)m;
        return d1 * (float)x - m1;
    }
    case VKL_GQ_Q6_K: {
        const uint8_t *b = base + (i / 256) * 210u;
        int j = (int)(i % 256), h = j / 128, k = (j % 128) / 32, l = j % 32;
        int qlb = b[64 * h + 32 * (k & 1) + l];
        int lo = k < 2 ? qlb & 15 : qlb >> 4;
        int hi = (b[128 + 32 * h + l] >> (2 * k)) & 3;
        float d1 = half(b + 208) * (float)(int8_t)b[192 + j / 16];
        return d1 * (float)((lo | hi << 4) - 32);
    }
    }
    return 0;
}

int vkl_ref_gguf_dequant(int type, const void *blocks, uint64_t nelem, float *y)
{
    if (!vkl_gguf_type_block(type)) return -1;
    for (uint64_t i = 0; i < nelem; i++) y[i] = value(type, blocks, i);
    return 0;
}
