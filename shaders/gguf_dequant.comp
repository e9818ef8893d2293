#version 450
// GGUF block dequantisation: y = the values of blocks of ggml type QT (F32,
// F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), read as bytes
// from a word buffer, written as f32 or packed 16-bit (YDT). The per-element
// formulas are gguf_blocks.glsl's, which the matmul shaders share, so a
// weight dequantised here and one read in place give the same values; the
// f32 result equals the CPU one bit for bit.
// CPU reference: runtime/ref/ref_gguf.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint QT = 0;
layout(constant_id = 1) const uint YDT = 0;
layout(binding = 0) readonly buffer Q { uint q[]; };
layout(binding = 1) writeonly buffer YF { float yf[]; };
layout(binding = 1) writeonly buffer YU { uint yu[]; };
layout(push_constant) uniform P {
    uint n;       // elements of this window
    uint q_byte;  // byte of the window's first block within binding 0
    uint y_off;   // element offset of the window's first element within binding 1
} p;

#define GGUF_WORD(k) q[k]
#include "gguf_blocks.glsl"

float value(uint i) { return gguf_value(QT, p.q_byte, i); }

void main() {
    uint i = flat_index(256u);
    if (YDT == DT_F32) {
        if (i < p.n) yf[p.y_off + i] = value(i);
        return;
    }
    uint e = 2u * i;
    if (e >= p.n) return;
    float a = value(e);
    float c = e + 1u < p.n ? value(e + 1u) : 0.0;
    yu[(p.y_off + e) >> 1u] = pack2(a, c, YDT);
}
