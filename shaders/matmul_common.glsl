// Bindings, push constants and epilogue shared by the matmul variants
// (matmul.comp: register tiles for CPU devices; matmul_tiled.comp: shared
// memory tiles for GPUs). Both compute
//   C[z] = alpha * (A[z] . B[z]) * colscale + bias + A2[z] . B2
// with A [M,K] and B [K,N] as strided views (B may be a quantised weight,
// BDT = DT_NF4 or DT_NF4_DQ, or a GGUF block type whose ggml number is BQT,
// dequantised here in registers: see B_get / B_load4), the optional second product
// (a LoRA up-projection added to a linear layer) over K2, and C f32
// contiguous per batch. Op: runtime/ops/matmul.c.
#include "common.glsl"

layout(constant_id = 3) const uint ADT = 0;
layout(constant_id = 4) const uint BDT = 0;
layout(constant_id = 5) const uint HAS_BIAS = 0;
layout(constant_id = 6) const uint BIASDT = 0;
// Vector loads, allowed by the op when strides and offsets are multiples of 4:
// AVEC 1 = A read as vec4 along K; BVEC 1 = along K, 2 = along N.
layout(constant_id = 7) const uint AVEC = 0;
layout(constant_id = 8) const uint BVEC = 0;
layout(constant_id = 9) const uint HAS_SCALE = 0;
layout(constant_id = 10) const uint HAS_SEG2 = 0;
layout(constant_id = 11) const uint A2DT = 0;
layout(constant_id = 12) const uint B2DT = 0;
// a GGUF B (BDT one of DT_GGUF_*): its ggml block type (gguf_blocks.glsl)
layout(constant_id = 14) const uint BQT = 0;

DECLARE_INPUT(0, A)
DECLARE_INPUT(1, B)
layout(binding = 2) writeonly buffer C { float c[]; };
DECLARE_INPUT(3, BIAS)
DECLARE_INPUT(4, SCALE)
DECLARE_INPUT(5, A2)
DECLARE_INPUT(6, B2)
// NF4_DQ B: its block scales as plain f32, made by a pre-pass (nf4dq_scales.comp)
DECLARE_INPUT(7, BSC)
// The same A and B memory seen four elements at a time.
layout(binding = 0) readonly buffer A_V4 { vec4 A_v4[]; };
layout(binding = 0) readonly buffer A_U2 { uvec2 A_u2[]; };
layout(binding = 1) readonly buffer B_V4 { vec4 B_v4[]; };
layout(binding = 1) readonly buffer B_U2 { uvec2 B_u2[]; };

layout(push_constant) uniform P {
    uint M, N, K;
    uint nb1;                  // batch = z / nb1, z % nb1 (two batch dims)
    uint a_off, b_off, c_off, bias_off;
    uint sam, sak, sbk, sbn;   // element strides inside one matrix
    uint sa0, sa1, sb0, sb1;   // batch strides (0 = broadcast)
    uint scale_off, K2, a2_off, b2_off;
    uint sa2m, sb2k, sb2n, sa2z;
    float alpha;
    // quantised B (runtime/quant.h): index of its first f32 scale in binding
    // 1 (NF4_DQ: in binding 7, the pre-pass's plain scales; bq2_off unused);
    // b_off is then twice the byte offset of its codes, so that element i's
    // code is in byte i >> 1 and i - b_off is its index in the weight.
    // A GGUF B: b_off is 0 and bq_off the byte of its first block.
    uint bq_off, bq2_off;
} p;

#include "nf4.glsl"
DECLARE_NF4_SCALE(B)
#define GGUF_WORD(k) B_u[k]
#include "gguf_blocks.glsl"
bool is_gguf(uint dt) { return dt >= DT_GGUF_FIRST && dt <= DT_GGUF_LAST; }

// The scale of B's element i (quantised B).
float B_scale(uint i) {
    if (BDT == DT_NF4_DQ) return BSC_f[p.bq_off + ((i - p.b_off) >> 6u)];
    return B_nf4_scale(BDT, (i - p.b_off) >> 6u, p.bq_off, p.bq2_off);
}

// Element i of B (quantised or not).
float B_get(uint i) {
    if (is_gguf(BDT)) return gguf_value(BQT, p.bq_off, i);
    if (is_nf4(BDT)) return nf4_value(B_u[(i >> 1u) >> 2u] >> (((i >> 1u) & 3u) * 8u), i, B_scale(i));
    return B_load(i, BDT);
}

vec4 unpack4(uvec2 w, uint dt) {
    if (dt == DT_F16) return vec4(unpackHalf2x16(w.x), unpackHalf2x16(w.y));
    return vec4(uintBitsToFloat(w.x << 16u), uintBitsToFloat(w.x & 0xffff0000u), uintBitsToFloat(w.y << 16u),
                uintBitsToFloat(w.y & 0xffff0000u));
}

// Four consecutive elements starting at i (a multiple of 4).
vec4 A_load4(uint i) {
    if (ADT == DT_F32) return A_v4[i >> 2u];
    return unpack4(A_u2[i >> 2u], ADT);
}
vec4 B_load4(uint i) {
    if (is_gguf(BDT)) return gguf_value4(BQT, p.bq_off, i);
    if (is_nf4(BDT)) return nf4_value4(B_u[i >> 3u] >> (((i >> 2u) & 1u) * 16u), B_scale(i));
    if (BDT == DT_F32) return B_v4[i >> 2u];
    return unpack4(B_u2[i >> 2u], BDT);
}

// What C holds for column n given the first product's sum (the second
// product is added by the caller, already summed in acc2).
float mm_epilogue(float acc, uint n) {
    float v = acc * p.alpha;
    if (HAS_SCALE != 0u) v *= SCALE_load(p.scale_off + n, DT_F32);
    if (HAS_BIAS != 0u) v += BIAS_load(p.bias_off + n, BIASDT);
    return v;
}
