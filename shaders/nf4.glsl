// NF4 (4-bit NormalFloat, runtime/quant.h): element 2j in the high nibble,
// 2j+1 in the low nibble of byte j; value = level[code] * the block's absmax
// (one f32 multiply, as the host's dequantisation, so both agree exactly).
//
// The level is picked by a tree of selects on the code's bits rather than by
// indexing a constant array: on CPU devices (lavapipe) an array indexed per
// lane becomes scratch memory and a gather, which made the product 35 times
// slower than with f16 weights.
const vec4 NF4_EVEN_LO = vec4(-1.0, -0.5250730514526367, -0.28444138169288635, -0.09105003625154495);
const vec4 NF4_ODD_LO = vec4(-0.6961928009986877, -0.39491748809814453, -0.18477343022823334, 0.0);
const vec4 NF4_EVEN_HI = vec4(0.07958029955625534, 0.24611230194568634, 0.44070982933044434, 0.7229568362236023);
const vec4 NF4_ODD_HI = vec4(0.16093020141124725, 0.33791524171829224, 0.5626170039176941, 1.0);

float nf4_level(uint c) {
    bvec4 b0 = bvec4((c & 1u) != 0u), b3 = bvec4((c & 8u) != 0u);
    // q[j] = level[8 b3 + 2 j + b0], j = 2 b2 + b1
    vec4 q = mix(mix(NF4_EVEN_LO, NF4_ODD_LO, b0), mix(NF4_EVEN_HI, NF4_ODD_HI, b0), b3);
    vec2 r = mix(q.xy, q.zw, bvec2((c & 4u) != 0u));
    return mix(r.x, r.y, (c & 2u) != 0u);
}

// Element i given the byte that holds it in bits 0..7 of b.
float nf4_value(uint b, uint i, float absmax) {
    uint code = (i & 1u) != 0u ? (b & 15u) : ((b >> 4u) & 15u);
    return nf4_level(code) * absmax;
}

// Elements 4j..4j+3 given their two bytes in bits 0..15 of w (one block).
vec4 nf4_value4(uint w, float absmax) {
    return vec4(nf4_level((w >> 4u) & 15u), nf4_level(w & 15u), nf4_level((w >> 12u) & 15u),
                nf4_level((w >> 8u) & 15u)) * absmax;
}

bool is_nf4(uint dt) { return dt == DT_NF4 || dt == DT_NF4_DQ; }

// Declares N_nf4_scale(dt, blk, soff, qoff): block blk's scale in the NF4 or
// NF4_DQ tensor bound as input N (runtime/quant.h). soff is the f32 index of
// its scales (NF4) or of its map (NF4_DQ: the offset follows at soff + 256,
// absmax2 at soff + 260); qoff the word index of NF4_DQ's u8 scale codes.
// The double-quantised scale is map[q] * absmax2 + offset rounded after the
// multiply and after the add, as on the host (`precise`: never fused).
#define DECLARE_NF4_SCALE(N)                                                   \
    float N##_nf4_scale(uint dt, uint blk, uint soff, uint qoff) {             \
        if (dt != DT_NF4_DQ) return N##_f[soff + blk];                         \
        uint q = (N##_u[qoff + (blk >> 2u)] >> ((blk & 3u) * 8u)) & 255u;      \
        precise float s = N##_f[soff + q] * N##_f[soff + 260u + (blk >> 8u)];  \
        precise float r = s + N##_f[soff + 256u];                              \
        return r;                                                              \
    }

// Declares N_get(i, dt, code_off, soff, qoff): element i of input N, read as
// f32/f16/bf16 or, for an NF4 / NF4_DQ tensor bound by vkl_bind_quant
// (runtime/ops/op_util.h), dequantised: code_off is the element index of its
// first code, soff and qoff as for N_nf4_scale. Needs DECLARE_NF4_SCALE(N).
#define DECLARE_NF4_GET(N)                                                     \
    float N##_get(uint i, uint dt, uint code_off, uint soff, uint qoff) {      \
        if (!is_nf4(dt)) return N##_load(i, dt);                               \
        return nf4_value(N##_u[i >> 3u] >> (((i >> 1u) & 3u) * 8u), i,         \
                         N##_nf4_scale(dt, (i - code_off) >> 6u, soff, qoff)); \
    }
