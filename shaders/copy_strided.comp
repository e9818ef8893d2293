#version 450
// Strided copies for the layout ops (contiguous, upsample_nearest2x, concat).
// A dispatch copies one block of shape `shape` (y coordinates): element c of
// the block is read from x at sum_i (c_i + ph_i) / div_i * sx_i and written to
// y at sum_i c_i * sy_i (f32 y), where div_i is 2 on the last two dims when
// UPSAMPLE == 1 (ph_i: the phase of the block's first row/column) and 1
// otherwise. UPSAMPLE == 2 is upsampling's gradient: y is the sum of the 2x2
// block of x at (2 c_2, 2 c_3).
// PAIR: y is a contiguous 16-bit tensor; each invocation writes one word
// (elements first+2i and first+2i+1 of the flat window), so no two
// invocations share a word.
// CPU reference: runtime/ref/ref_layout.c. Ops: runtime/ops/layout_ops.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint XDT = 0;
layout(constant_id = 1) const uint UPSAMPLE = 0;
layout(constant_id = 2) const uint PAIR = 0;   // 0: f32 y; else the 16-bit dtype of y
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer Y_F32 { float y_f[]; };
layout(binding = 1) writeonly buffer Y_U32 { uint y_u[]; };
layout(push_constant) uniform P {
    uint n, first;
    uint shape[4];
    uint sx[4];
    uint sy[4];
    uint ph2, ph3;
    uint x_off, y_off;
} p;

uint x_index(uint g) {
    uint c3 = g % p.shape[3]; g /= p.shape[3];
    uint c2 = g % p.shape[2]; g /= p.shape[2];
    uint c1 = g % p.shape[1];
    uint c0 = g / p.shape[1];
    if (UPSAMPLE == 1u) {
        c2 = (c2 + p.ph2) >> 1u;
        c3 = (c3 + p.ph3) >> 1u;
    } else if (UPSAMPLE == 2u) {
        c2 *= 2u;
        c3 *= 2u;
    }
    return p.x_off + c0 * p.sx[0] + c1 * p.sx[1] + c2 * p.sx[2] + c3 * p.sx[3];
}

void main() {
    uint i = flat_index(256u);
    if (PAIR != 0u) {
        uint e0 = 2u * i;
        if (e0 >= p.n) return;
        uint g = p.first + e0;
        float a = X_load(x_index(g), XDT);
        float b = e0 + 1u < p.n ? X_load(x_index(g + 1u), XDT) : 0.0;
        if (XDT == PAIR && e0 + 1u < p.n) {
            // same 16-bit type: copy the bits, no rounding through f32
            uint ia = x_index(g), ib = x_index(g + 1u);
            uint lo = (X_u[ia >> 1u] >> ((ia & 1u) * 16u)) & 0xffffu;
            uint hi = (X_u[ib >> 1u] >> ((ib & 1u) * 16u)) & 0xffffu;
            y_u[p.y_off / 2u + i] = lo | (hi << 16u);
            return;
        }
        y_u[p.y_off / 2u + i] = pack2(a, b, PAIR);
        return;
    }
    if (i >= p.n) return;
    uint c3 = i % p.shape[3], r = i / p.shape[3];
    uint c2 = r % p.shape[2]; r /= p.shape[2];
    uint c1 = r % p.shape[1], c0 = r / p.shape[1];
    uint xi = x_index(i);
    float v = X_load(xi, XDT);
    if (UPSAMPLE == 2u)
        v += X_load(xi + p.sx[3], XDT) + X_load(xi + p.sx[2], XDT) + X_load(xi + p.sx[2] + p.sx[3], XDT);
    y_f[p.y_off + c0 * p.sy[0] + c1 * p.sy[1] + c2 * p.sy[2] + c3 * p.sy[3]] = v;
}
