#version 450
// y = beta * y + alpha * x in place on a contiguous f32 window of persistent
// memory (gradient accumulation). A zero beta or alpha drops its term without
// reading it, so clearing a buffer that holds NaN gives zeros.
// Op: vkl_accumulate_into (runtime/ops/copy.c).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint XDT = 0;
DECLARE_INPUT(0, X)
layout(binding = 1) buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n, first;
    uint shape[4];
    uint sx[4];
    uint x_off, y_off, x_local;
    float alpha, beta;
} p;

void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    float r = p.beta != 0.0 ? p.beta * y[p.y_off + i] : 0.0;
    if (p.alpha != 0.0) {
        uint ix = p.x_local != 0u ? i : strided_offset(p.first + i, U4(p.shape), U4(p.sx));
        r += p.alpha * X_load(p.x_off + ix, XDT);
    }
    y[p.y_off + i] = r;
}
