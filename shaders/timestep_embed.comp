#version 450
// Sinusoidal timestep embedding as diffusers' get_timestep_embedding, with
// the same float32 steps as PyTorch: exponent_k = fl(fl(-ln P) * k) / (half - shift),
// freq_k = exp(exponent_k), arg = fl(t * freq_k), then [sin, cos] (or [cos, sin]
// when FLIP), an odd dim padded with one zero column. y [N, dim] f32.
// CPU reference: runtime/ref/ref_embed.c. Op: runtime/ops/embed.c.
#include "common.glsl"
#include "precise_math.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint TDT = 0;
DECLARE_INPUT(0, T)
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n, dim, half_dim, flip, t_off, y_off, t_stride;
    float neg_log_period, denom;   // fl(-ln max_period), fl(half - shift)
} p;

void main() {
    uint i = flat_index(64u);
    if (i >= p.n) return;
    uint row = i / p.dim, col = i - row * p.dim;
    float r = 0.0;
    if (col < 2u * p.half_dim) {
        bool first = col < p.half_dim;
        uint k = first ? col : col - p.half_dim;
        precise float ex = p.neg_log_period * float(k);
        float freq = exp_precise(div_precise(ex, p.denom));
        precise float arg = T_load(p.t_off + row * p.t_stride, TDT) * freq;
        float s, c;
        sincos_precise(arg, s, c);
        r = (first != (p.flip != 0u)) ? s : c;
    }
    y[p.y_off + i] = r;
}
