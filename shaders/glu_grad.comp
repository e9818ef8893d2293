#version 450
// Backward of GEGLU (glu.comp MODE 0): y = a * gelu(b) with a = x[..., :F],
// b = x[..., F:], so
//   dx[..., :F] = dy * gelu(b),   dx[..., F:] = dy * a * (Phi(b) + b * phi(b)).
// One invocation per element of y; dy f32 contiguous (y's layout); dx f32,
// contiguous [..., 2F]. (SwiGLU's backward is made of unary_grad and mul.)
// CPU reference: vkl_ref_geglu_backward (runtime/ref/ref_glu.c). Op: runtime/ops/glu.c.
#include "common.glsl"
#include "erf.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint XDT = 0;
DECLARE_INPUT(0, X)
layout(binding = 1) readonly buffer DYB { float dy[]; };
layout(binding = 2) writeonly buffer DXB { float dx[]; };
layout(push_constant) uniform P {
    uint n, first;        // window: elements [first, first+n) of y, whole rows
    uint shape[4];        // y's shape
    uint sx[4];           // x's strides
    uint x_off, dy_off, dx_off, x_local;   // x_local: x bound per window (contiguous, rows of 2F)
} p;

void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    uint F = p.shape[3], row = i / F, f = i - row * F, ia, shift;
    if (p.x_local != 0u) {
        ia = row * 2u * F + f;
        shift = F;
    } else {
        ia = strided_offset(p.first + i, U4(p.shape), U4(p.sx));
        shift = F * p.sx[3];
    }
    float v = X_load(p.x_off + ia, XDT), gate = X_load(p.x_off + ia + shift, XDT);
    float cdf = 0.5 * (1.0 + erf_approx(gate * 0.70710678118654752));
    float pdf = exp(-0.5 * gate * gate) * 0.3989422804014327;
    float d = dy[p.dy_off + i];
    dx[p.dx_off + row * 2u * F + f] = d * gate * cdf;
    dx[p.dx_off + row * 2u * F + F + f] = d * v * (cdf + gate * pdf);
}
