#version 450
// AdamW of adamw.comp for a parameter trained by rank blocks (DyLoRA): each
// row along the rank axis has its own step count c (f32, uploaded per step);
// c == 0 leaves that row's parameter and moments untouched (no decay either),
// as torch's AdamW skips a tensor without a gradient; otherwise the bias
// corrections are 1 - b1^c and 1 - b2^c, the row's own step count, as
// torch keeps one per tensor. The rank row of flat element i is
// (i / inner) % rank (inner: elements after the rank axis).
// CPU reference: the per-row formula in tests/runtime/test_optim_gated.c. Op: runtime/optim.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) buffer Pm { float p[]; };
DECLARE_INPUT(1, G)
layout(binding = 2) buffer Mm { float m[]; };
layout(binding = 3) buffer Vm { float v[]; };
layout(binding = 4) readonly buffer H { float h[]; };   // lr, b1, b2, eps, wd, bc1, bc2, max_norm
layout(binding = 5) readonly buffer S { float st[]; };  // norm, clip factor, skip
layout(binding = 6) readonly buffer C { float cnt[]; }; // step count of each rank row (0: frozen this step)
layout(push_constant) uniform P { uint n, p_off, g_off, m_off, v_off; float lr_mult; uint first, inner, rank, c_off; } pc;
void main() {
    uint i = flat_index(256u);
    if (i >= pc.n || st[2] != 0.0) return;
    float c = cnt[pc.c_off + ((pc.first + i) / pc.inner) % pc.rank];
    if (c == 0.0) return;
    float lr = h[0] * pc.lr_mult, b1 = h[1], b2 = h[2], eps = h[3], wd = h[4];
    float g = G_load(pc.g_off + i, DT_F32) * st[1];
    float pv = p[pc.p_off + i] * (1.0 - lr * wd);
    float mv = b1 * m[pc.m_off + i] + (1.0 - b1) * g;
    float vv = b2 * v[pc.v_off + i] + (1.0 - b2) * g * g;
    m[pc.m_off + i] = mv;
    v[pc.v_off + i] = vv;
    p[pc.p_off + i] = pv - lr * (mv / (1.0 - pow(b1, c))) / (sqrt(vv / (1.0 - pow(b2, c))) + eps);
}
