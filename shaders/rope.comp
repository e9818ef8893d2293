#version 450
// Rotary position embedding, LLaMA's rotate-half form, on rows of D elements
// (x [..., L, D], any strides): for k < D/2, with angle = (pos0 + l) * inv_freq_k,
//   y[k] = x[k] cos - x[k + D/2] sin,   y[k + D/2] = x[k + D/2] cos + x[k] sin.
// inv_freq_k = 1 / theta^(fl(2k / D)) in the float32 steps transformers uses;
// theta^e is exp(e ln theta) with ln theta in two parts, and the angle is
// reduced exactly (precise_math.glsl), so long contexts keep their accuracy.
// One invocation per (row, k) pair. y f32, contiguous. INVERSE rotates by
// -angle: the backward (dx = R(-angle) dy). sc_factor > 0: Llama 3's rope_scaling
// of inv_freq (ops.h, vkl_rope_scaling), in float32 as transformers computes it.
// CPU reference: runtime/ref/ref_rope.c. Op: runtime/ops/rope.c.
#include "common.glsl"
#include "precise_math.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint XDT = 0;
layout(constant_id = 1) const uint INVERSE = 0;   // rotate by -angle (the backward)
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint nrows, row_first, D, L;
    uint rshape[4]; uint sx[4];   // row index space and its strides (.x = 1 / 0)
    uint sd, x_off, y_off, x_contig;
    int pos0;
    float ln_theta_hi, ln_theta_lo;
    float sc_factor, sc_low, sc_high, sc_old_ctx;
} p;

void main() {
    uint half_d = p.D / 2u;
    uint i = flat_index(64u);
    if (i >= p.nrows * half_d) return;
    uint r = i / half_d, k = i - r * half_d;
    uint row = p.row_first + r;
    uint l = row % p.L;
    // inv_freq as transformers: 1 / theta^(2k/D)
    float e = div_precise(float(2u * k), float(p.D));
    float th, tl;
    two_prod(e, p.ln_theta_hi, th, tl);
    precise float corr = tl + e * p.ln_theta_lo;
    float pw = exp_ff(th, corr);
    float inv_freq = div_precise(1.0, pw);
    if (p.sc_factor > 0.0) {
        // transformers: wavelen = 2 pi / inv_freq, evaluated as (1 / inv_freq) * 2 pi
        precise float wavelen = div_precise(1.0, inv_freq) * 6.2831855;
        float low_wavelen = div_precise(p.sc_old_ctx, p.sc_low), high_wavelen = div_precise(p.sc_old_ctx, p.sc_high);
        if (wavelen > low_wavelen) {
            inv_freq = div_precise(inv_freq, p.sc_factor);
        } else if (!(wavelen < high_wavelen)) {
            precise float smooth_f = div_precise(div_precise(1.0, wavelen) * p.sc_old_ctx - p.sc_low, p.sc_high - p.sc_low);
            precise float blended = (1.0 - smooth_f) * div_precise(inv_freq, p.sc_factor) + smooth_f * inv_freq;
            inv_freq = blended;
        }
    }
    precise float angle = float(p.pos0 + int(l)) * inv_freq;
    float s, c;
    sincos_precise(angle, s, c);
    if (INVERSE != 0u) s = -s;
    uint base = p.x_contig != 0u ? r * p.D : strided_offset(row, U4(p.rshape), U4(p.sx));
    float a = X_load(p.x_off + base + k * p.sd, XDT), b = X_load(p.x_off + base + (k + half_d) * p.sd, XDT);
    precise float ya = a * c - b * s;
    precise float yb = b * c + a * s;
    y[p.y_off + r * p.D + k] = ya;
    y[p.y_off + r * p.D + k + half_d] = yb;
}
