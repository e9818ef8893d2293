#version 450
// AdamW with decoupled weight decay on f32 master weights, in place:
//   p <- p * (1 - lr*wd); m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2
//   p <- p - lr * (m / bc1) / (sqrt(v / bc2) + eps)
// g is multiplied by the clip factor first. Step-varying values (lr, bias
// corrections, clip factor, skip flag) come from small device tensors so the
// recorded command buffer is replayed every step without re-recording.
// CPU reference: vkl_ref_adamw (runtime/ref/ref_optim.c). Op: runtime/optim.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) buffer Pm { float p[]; };
DECLARE_INPUT(1, G)
layout(binding = 2) buffer Mm { float m[]; };
layout(binding = 3) buffer Vm { float v[]; };
layout(binding = 4) readonly buffer H { float h[]; };   // lr, b1, b2, eps, wd, bc1, bc2, max_norm
layout(binding = 5) readonly buffer S { float st[]; };  // norm, clip factor, skip
layout(push_constant) uniform P { uint n, p_off, g_off, m_off, v_off; float lr_mult; } pc;
void main() {
    uint i = flat_index(256u);
    if (i >= pc.n || st[2] != 0.0) return;
    float lr = h[0] * pc.lr_mult, b1 = h[1], b2 = h[2], eps = h[3], wd = h[4];
    float g = G_load(pc.g_off + i, DT_F32) * st[1];
    float pv = p[pc.p_off + i] * (1.0 - lr * wd);
    float mv = b1 * m[pc.m_off + i] + (1.0 - b1) * g;
    float vv = b2 * v[pc.v_off + i] + (1.0 - b2) * g * g;
    m[pc.m_off + i] = mv;
    v[pc.v_off + i] = vv;
    p[pc.p_off + i] = pv - lr * (mv / h[5]) / (sqrt(vv / h[6]) + eps);
}
