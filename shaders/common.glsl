// Helpers shared by the shaders.
//
// 16-bit element types (f16, bf16) are read and written through 32-bit words
// (two elements per word) so that every shader runs on devices without 16-bit
// storage; element i of such a tensor lives in word i>>1, half i&1.
// Element-type codes match vkl_dtype: 0 = f32, 1 = f16, 2 = bf16; 10 = NF4,
// 11 = NF4 with double-quantised scales (block-quantised, runtime/quant.h:
// read only through their own loaders, nf4.glsl); 12..19 GGUF block types
// (Q4_0 .. Q6_K, read through gguf_blocks.glsl).
#define DT_F32 0u
#define DT_F16 1u
#define DT_BF16 2u
#define DT_NF4 10u
#define DT_NF4_DQ 11u
#define DT_GGUF_FIRST 12u
#define DT_GGUF_LAST 19u

// Declares an input tensor bound at binding B under the name N, readable as
// f32 or as packed 16-bit words, and a loader N_load(index, dtype).
#define DECLARE_INPUT(B, N)                                                    \
    layout(binding = B) readonly buffer N##_F32 { float N##_f[]; };            \
    layout(binding = B) readonly buffer N##_U32 { uint N##_u[]; };             \
    float N##_load(uint i, uint dt) {                                          \
        if (dt == DT_F32) return N##_f[i];                                     \
        uint w = N##_u[i >> 1u] >> ((i & 1u) * 16u);                           \
        if (dt == DT_F16) return unpackHalf2x16(w).x;                          \
        return uintBitsToFloat((w & 0xffffu) << 16u);                          \
    }

float bf16_round(float x) {
    uint u = floatBitsToUint(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uintBitsToFloat((u | 0x400000u) & 0xffff0000u);
    u += 0x7fffu + ((u >> 16u) & 1u);
    return uintBitsToFloat(u & 0xffff0000u);
}

// packHalf2x16 with IEEE round-to-nearest at the edges: GLSL leaves values
// beyond f16's range undefined (SwiftShader gives NaN patterns, lavapipe
// infinity); magnitudes from 65520 up round to infinity, as the CPU does.
uint half_bits(float a) {
    uint h = packHalf2x16(vec2(a, 0.0)) & 0xffffu;
    if (!isnan(a) && abs(a) >= 65520.0) h = a < 0.0 ? 0xfc00u : 0x7c00u;
    return h;
}
uint pack_half2(vec2 v) { return half_bits(v.x) | (half_bits(v.y) << 16u); }

// Packs two floats into one word of the 16-bit type dt.
uint pack2(float a, float b, uint dt) {
    if (dt == DT_F16) return pack_half2(vec2(a, b));
    return (floatBitsToUint(bf16_round(a)) >> 16u) | (floatBitsToUint(bf16_round(b)) & 0xffff0000u);
}

// Push-constant blocks use uint[4] arrays (std430: 4-byte aligned, like the C
// structs that fill them); uvec4 would be 16-byte aligned.
#define U4(a) uvec4(a[0], a[1], a[2], a[3])

// Flat invocation index over a 2-D grid of workgroups (so more than 65535
// workgroups can be used along x).
uint flat_index(uint local_size) {
    return (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * local_size + gl_LocalInvocationIndex;
}

// Element offset of flat index g (row-major over shape) in a tensor with strides st.
uint strided_offset(uint g, uvec4 shape, uvec4 st) {
    uint c3 = g % shape.w; g /= shape.w;
    uint c2 = g % shape.z; g /= shape.z;
    uint c1 = g % shape.y; g /= shape.y;
    return g * st.x + c1 * st.y + c2 * st.z + c3 * st.w;
}
