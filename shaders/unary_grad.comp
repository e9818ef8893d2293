#version 450
// dx = dy * alpha * f'(alpha * x + beta): the backward of unary.comp.
// CPU reference: vkl_ref_unary_grad1 (runtime/ref/ref_elementwise.c).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint OP = 0;
layout(constant_id = 1) const uint XDT = 0;
DECLARE_INPUT(0, X)
DECLARE_INPUT(1, DY)
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n, first;
    uint shape[4];
    uint sx[4];
    uint x_off, dy_off, y_off, x_local;
    float alpha, beta;
} p;

float sigm(float v) { return 1.0 / (1.0 + exp(-v)); }

float erf_approx(float x) {
    float a = abs(x);
    float t = 1.0 / (1.0 + 0.5 * a);
    float y = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
              t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
              t * (-0.82215223 + t * 0.17087277)))))))));
    return sign(x) * (1.0 - y);
}

void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    uint ix = p.x_local != 0u ? i : strided_offset(p.first + i, U4(p.shape), U4(p.sx));
    float x = p.alpha * X_load(p.x_off + ix, XDT) + p.beta, d;
    if (OP == 0u) d = 1.0;
    else if (OP == 1u) { float s = sigm(x); d = s * (1.0 + x * (1.0 - s)); }
    else if (OP == 2u) d = 0.5 * (1.0 + erf_approx(x * 0.70710678118654752)) + x * exp(-0.5 * x * x) * 0.3989422804014327;
    else if (OP == 3u) {
        float u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
        float t = tanh(clamp(u, -15.0, 15.0));
        d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 3.0 * 0.044715 * x * x);
    }
    else if (OP == 4u) { float s = sigm(1.702 * x); d = s + 1.702 * x * s * (1.0 - s); }
    else if (OP == 5u) d = x > 0.0 ? 1.0 : 0.0;
    else if (OP == 6u) d = exp(x);
    else if (OP == 7u) d = 2.0 * x;
    else if (OP == 8u) { float s = sigm(x); d = s * (1.0 - s); }
    else if (OP == 9u) d = 0.5 / sqrt(x);
    else { float t = tanh(clamp(x, -15.0, 15.0)); d = 1.0 - t * t; }
    y[p.y_off + i] = DY_load(p.dy_off + i, DT_F32) * p.alpha * d;
}
