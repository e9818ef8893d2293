#version 450
// y = x converted between f32, f16 and bf16 (round to nearest even); y contiguous.
// A 16-bit y is written a word (two elements) per invocation, so no two
// invocations touch the same word. CPU reference: vkl_convert_host.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint XDT = 0;
layout(constant_id = 1) const uint YDT = 0;
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer YF { float yf[]; };
layout(binding = 1) writeonly buffer YU { uint yu[]; };
layout(push_constant) uniform P {
    uint n, first;          // elements [first, first+n) of y (first even for 16-bit y)
    uint shape[4];
    uint sx[4];
    uint x_off, y_off, x_local;
} p;
float xat(uint i) {
    uint ix = p.x_local != 0u ? i : strided_offset(p.first + i, U4(p.shape), U4(p.sx));
    return X_load(p.x_off + ix, XDT);
}
void main() {
    uint i = flat_index(256u);
    if (YDT == DT_F32) {
        if (i < p.n) yf[p.y_off + i] = xat(i);
        return;
    }
    uint e = 2u * i;
    if (e >= p.n) return;
    float a = xat(e);
    float b = e + 1u < p.n ? xat(e + 1u) : 0.0;
    yu[(p.y_off + e) >> 1u] = pack2(a, b, YDT);
}
