#version 450
// y = f(alpha * x + beta) elementwise; y is f32 and contiguous.
// CPU reference: runtime/ref/ref_elementwise.c. Op: runtime/ops/elementwise.c.
#include "common.glsl"
#include "erf.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint OP = 0;  // see vkl_unary_op in runtime/ops.h
layout(constant_id = 1) const uint XDT = 0;
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer Y { float y[]; };
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
    uint ix = p.x_local != 0u ? i : strided_offset(p.first + i, U4(p.shape), U4(p.sx));
    float x = p.alpha * X_load(p.x_off + ix, XDT) + p.beta, r;
    if (OP == 0u) r = x;                                            // identity / scale
    else if (OP == 1u) r = x / (1.0 + exp(-x));                     // silu
    else if (OP == 2u) r = 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); // gelu (erf)
    else if (OP == 3u) {                                            // gelu (tanh form)
        float u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        r = 0.5 * x * (1.0 + tanh(clamp(u, -15.0, 15.0)));
    }
    else if (OP == 4u) r = x / (1.0 + exp(-1.702 * x));            // quick_gelu
    else if (OP == 5u) r = max(x, 0.0);                             // relu
    else if (OP == 6u) r = exp(x);
    else if (OP == 7u) r = x * x;                                   // square
    else if (OP == 8u) r = 1.0 / (1.0 + exp(-x));                   // sigmoid
    else if (OP == 9u) r = sqrt(x);
    else r = tanh(clamp(x, -15.0, 15.0));                           // 10: tanh
    y[p.y_off + i] = r;
}
