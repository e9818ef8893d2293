/* Quantising f32 rows into GGUF blocks (for the writer and `vklora convert`).
 * Plain round-to-nearest quantisers: per block (or sub-block) the scale that
 * maps the largest magnitude (or the min..max range) onto the codes; the
 * stored f16 scales are what the codes are computed against, so the
 * dequantised values are as close as the format allows for that scale.
 * Block layouts: see runtime/ref/ref_gguf.c. */
#include "io/gguf.h"

#include <math.h>
#include <string.h>

static void put_half(uint8_t *p, float f)
{
    uint16_t h = vkl_f32_to_f16(f);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}
static float rt_half(float f) { return vkl_f16_to_f32(vkl_f32_to_f16(f)); }

static int clampi(long v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : (int)v; }

/* the value of largest magnitude (with its sign) */
static float signed_max(const float *x, int n)
{
    float amax = 0, max = 0;
    for (int j = 0; j < n; j++)
        if (fabsf(x[j]) > amax) amax = fabsf(x[j]), max = x[j];
    return max;
}

/* Q4_0 / Q5_0 / Q8_0: symmetric codes around `zero` (8, 16) or signed (Q8_0). */
static void q_sym(int type, const float *x, uint8_t *b)
{
    int nq = type == VKL_GQ_Q4_0 ? 8 : type == VKL_GQ_Q5_0 ? 16 : 127;
    float max = signed_max(x, 32);
    float d = type == VKL_GQ_Q8_0 ? fabsf(max) / 127 : max / -(float)nq;
    float dr = rt_half(d), id = dr ? 1.0f / dr : 0;
    put_half(b, d);
    if (type == VKL_GQ_Q8_0) {
        for (int j = 0; j < 32; j++) b[2 + j] = (uint8_t)(int8_t)clampi(lrintf(x[j] * id), -127, 127);
        return;
    }
    int qs = type == VKL_GQ_Q4_0 ? 2 : 6, top = 2 * nq - 1;
    uint32_t qh = 0;
    memset(b + qs, 0, 16);
    for (int j = 0; j < 32; j++) {
        int q = clampi(lrintf(x[j] * id) + nq, 0, top);
        b[qs + j % 16] |= (uint8_t)((q & 15) << (j < 16 ? 0 : 4));
        qh |= (uint32_t)(q >> 4) << j;
    }
    if (type == VKL_GQ_Q5_0)
        for (int k = 0; k < 4; k++) b[2 + k] = (uint8_t)(qh >> (8 * k));
}

/* Q4_1 / Q5_1: codes 0..top from the block's minimum. */
static void q_affine(int type, const float *x, uint8_t *b)
{
    int top = type == VKL_GQ_Q4_1 ? 15 : 31;
    float mn = x[0], mx = x[0];
    for (int j = 1; j < 32; j++) mn = fminf(mn, x[j]), mx = fmaxf(mx, x[j]);
    float d = (mx - mn) / (float)top, dr = rt_half(d), mr = rt_half(mn), id = dr ? 1.0f / dr : 0;
    put_half(b, d);
    put_half(b + 2, mn);
    int qs = type == VKL_GQ_Q4_1 ? 4 : 8;
    uint32_t qh = 0;
    memset(b + qs, 0, 16);
    for (int j = 0; j < 32; j++) {
        int q = clampi(lrintf((x[j] - mr) * id), 0, top);
        b[qs + j % 16] |= (uint8_t)((q & 15) << (j < 16 ? 0 : 4));
        qh |= (uint32_t)(q >> 4) << j;
    }
    if (type == VKL_GQ_Q5_1)
        for (int k = 0; k < 4; k++) b[4 + k] = (uint8_t)(qh >> (8 * k));
}

/* Q4_K / Q5_K: 8 sub-blocks of 32, each with a scale and a (non-negative)
 * min quantised to 6 bits against the super-block's d and dmin. */
static void q_kmin(int type, const float *x, uint8_t *b)
{
    int top = type == VKL_GQ_Q4_K ? 15 : 31;
    float scale[8], minv[8], smax = 0, mmax = 0;
    for (int s = 0; s < 8; s++) {
        float mn = 0, mx = x[32 * s];
        for (int j = 0; j < 32; j++) mn = fminf(mn, x[32 * s + j]), mx = fmaxf(mx, x[32 * s + j]);
        scale[s] = (mx - mn) / (float)top;
        minv[s] = -mn;
        smax = fmaxf(smax, scale[s]);
        mmax = fmaxf(mmax, minv[s]);
    }
    float d = rt_half(smax / 63), dmin = rt_half(mmax / 63);
    put_half(b, d);
    put_half(b + 2, dmin);
    uint8_t *sc = b + 4;
    memset(sc, 0, 12);
    int scq[8], mq[8];
    for (int s = 0; s < 8; s++) {
        scq[s] = d ? clampi(lrintf(scale[s] / d), 0, 63) : 0;
        mq[s] = dmin ? clampi(lrintf(minv[s] / dmin), 0, 63) : 0;
        if (s < 4) {
            sc[s] |= (uint8_t)scq[s];
            sc[s + 4] |= (uint8_t)mq[s];
        } else {
            sc[s + 4] = (uint8_t)((scq[s] & 15) | (mq[s] & 15) << 4);
            sc[s - 4] |= (uint8_t)((scq[s] >> 4) << 6);
            sc[s] |= (uint8_t)((mq[s] >> 4) << 6);
        }
    }
    uint8_t *qh = b + 16, *qs = b + (type == VKL_GQ_Q4_K ? 16 : 48);
    memset(b + 16, 0, type == VKL_GQ_Q4_K ? 128 : 160);
    for (int j = 0; j < 256; j++) {
        int s = j / 32, l = j % 32;
        float ds = d * (float)scq[s], ms = dmin * (float)mq[s];
        int q = ds ? clampi(lrintf((x[j] + ms) / ds), 0, top) : 0;
        qs[32 * (s / 2) + l] |= (uint8_t)((q & 15) << (s % 2 ? 4 : 0));
        if (type == VKL_GQ_Q5_K) qh[l] |= (uint8_t)((q >> 4) << s);
    }
}

/* Q6_K: 16 sub-blocks of 16 with a signed 8-bit scale; codes -32..31. */
static void q_q6k(const float *x, uint8_t *b)
{
    float scale[16], amax = 0;
    for (int s = 0; s < 16; s++) {
        scale[s] = signed_max(x + 16 * s, 16) / -32;
        amax = fmaxf(amax, fabsf(scale[s]));
    }
    float d = rt_half(amax / 127);
    put_half(b + 208, d);
    memset(b, 0, 192);
    int scq[16];
    for (int s = 0; s < 16; s++) {
        scq[s] = d ? clampi(lrintf(scale[s] / d), -128, 127) : 0;
        b[192 + s] = (uint8_t)(int8_t)scq[s];
    }
    for (int j = 0; j < 256; j++) {
        float ds = d * (float)scq[j / 16];
        int q = (ds ? clampi(lrintf(x[j] / ds), -32, 31) : 0) + 32;
        int h = j / 128, k = (j % 128) / 32, l = j % 32;
        b[64 * h + 32 * (k & 1) + l] |= (uint8_t)((q & 15) << (k < 2 ? 0 : 4));
        b[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
    }
}

int vkl_gguf_quantize(int type, const float *x, uint64_t nelem, void *out, vkl_err *e)
{
    int blk = vkl_gguf_type_block(type), bytes = vkl_gguf_type_bytes(type);
    if (!blk) return vkl_fail(e, "cannot quantise to block type %d", type);
    if (nelem % (uint64_t)blk)
        return vkl_fail(e, "%llu values are not whole %s blocks of %d", (unsigned long long)nelem,
                        vkl_gguf_type_name(type), blk);
    /* a block's scale comes from its extremes: one NaN or inf would make
     * every code of the block meaningless without any sign of it */
    if (blk > 1)
        for (uint64_t i = 0; i < nelem; i++)
            if (!isfinite(x[i]))
                return vkl_fail(e, "value %llu is %g; %s blocks hold finite values only", (unsigned long long)i,
                                (double)x[i], vkl_gguf_type_name(type));
    uint8_t *o = out;
    for (uint64_t i = 0; i < nelem; i += (uint64_t)blk, o += bytes) {
        const float *v = x + i;
        switch (type) {
        case VKL_GQ_F32: memcpy(o, v, 4); break;
        case VKL_GQ_F16: put_half(o, v[0]); break;
        case VKL_GQ_BF16: { uint16_t h = vkl_f32_to_bf16(v[0]); o[0] = (uint8_t)h; o[1] = (uint8_t)(h >> 8); break; }
        case VKL_GQ_Q4_0: case VKL_GQ_Q5_0: case VKL_GQ_Q8_0: q_sym(type, v, o); break;
        case VKL_GQ_Q4_1: case VKL_GQ_Q5_1: q_affine(type, v, o); break;
        case VKL_GQ_Q4_K: case VKL_GQ_Q5_K: q_kmin(type, v, o); break;
        default: q_q6k(v, o); break;
        }
    }
    return 0;
}
