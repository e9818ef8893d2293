#version 450
// Gated activations of the transformer MLPs; y is f32 and contiguous.
//   MODE 0 (GEGLU, diffusers): x [..., 2F] -> x[..., :F] * gelu_erf(x[..., F:])
//   MODE 1 (SwiGLU, LLaMA):    silu(gate) * up, same shapes
// CPU reference: runtime/ref/ref_glu.c. Op: runtime/ops/glu.c.
#include "common.glsl"
#include "erf.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint MODE = 0;
layout(constant_id = 1) const uint ADT = 0;
layout(constant_id = 2) const uint BDT = 0;
DECLARE_INPUT(0, A)   // GEGLU: x; SwiGLU: gate
DECLARE_INPUT(1, B)   // SwiGLU: up (GEGLU: unused)
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n, first;                // window: elements [first, first+n) of y
    uint shape[4];                // y's shape
    uint sa[4]; uint sb[4];       // strides of the operands (GEGLU: of x)
    uint a_off, b_off, y_off;
    uint a_local, b_local;        // operand bound per window (GEGLU: x contiguous, rows of 2F)
} p;

void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    float r;
    if (MODE == 0u) {
        uint F = p.shape[3], ia, shift;
        if (p.a_local != 0u) {
            uint row = i / F;
            ia = row * 2u * F + (i - row * F);
            shift = F;
        } else {
            ia = strided_offset(p.first + i, U4(p.shape), U4(p.sa));
            shift = F * p.sa[3];
        }
        float v = A_load(p.a_off + ia, ADT), gate = A_load(p.a_off + ia + shift, ADT);
        r = v * 0.5 * gate * (1.0 + erf_approx(gate * 0.70710678118654752));
    } else {
        uint ia = p.a_local != 0u ? i : strided_offset(p.first + i, U4(p.shape), U4(p.sa));
        uint ib = p.b_local != 0u ? i : strided_offset(p.first + i, U4(p.shape), U4(p.sb));
        float gate = A_load(p.a_off + ia, ADT), up = B_load(p.b_off + ib, BDT);
        r = gate / (1.0 + exp(-gate)) * up;
    }
    y[p.y_off + i] = r;
}
