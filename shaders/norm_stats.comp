#version 450
// First pass of the segment normalisations (group norm, layer norm, RMS norm,
// softmax): statistics of one chunk of one segment per workgroup, so a long
// segment (a 64x64 group norm group holds 40960 elements) is spread over many
// workgroups. Each invocation accumulates its strided share in fp32 (Welford
// for mean/variance, online max/sum-exp for softmax), then the workgroup
// combines the shares exactly (Chan's formula written as two sums).
// Output per (segment, chunk): MODE 0 (mean, M2), 1 (mean of squares, 0),
// 2 (max of scale*x, sum exp(scale*x - max)).
// Second pass: norm_apply.comp. Op: runtime/ops/norm.c.
// @variant norm_stats
// @variant norm_stats_subgroup SUBGROUP=1
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "common.glsl"
#define WG 64u
#include "wg_reduce.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint MODE = 0;
layout(constant_id = 1) const uint XDT = 0;
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer S { float st[]; };
layout(push_constant) uniform P {
    uint nseg, seg_first, seglen, nchunk, chunk;  // segments in this window, first of them, sizes
    uint sdim[4]; uint sst[4];   // segment index -> element offset of its start (.x unused)
    uint edim[4]; uint est[4];   // index within a segment -> element offset (.x unused)
    uint x_off, s_off, x_contig; // x_contig: segment r of the window starts at r * seglen
    float scale;                 // MODE 2: softmax of scale * x
} p;

#define NEG_INF (-1.0 / 0.0)

void main() {
    uint wid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (wid >= p.nseg * p.nchunk) return;   // uniform per workgroup: safe before barriers
    uint sl = wid / p.nchunk, ch = wid % p.nchunk;
    uint e0 = ch * p.chunk, e1 = min(e0 + p.chunk, p.seglen);
    uint base = p.x_contig != 0u ? sl * p.seglen : strided_offset(p.seg_first + sl, U4(p.sdim), U4(p.sst));
    uint t = gl_LocalInvocationIndex;
    float a = 0.0, b = 0.0, n = 0.0;   // MODE 0: mean, M2; 1: sum of squares; 2: max, sum
    if (MODE == 2u) a = NEG_INF;
    for (uint e = e0 + t; e < e1; e += WG) {
        uint off = p.x_contig != 0u ? base + e : base + strided_offset(e, U4(p.edim), U4(p.est));
        float v = X_load(p.x_off + off, XDT);
        if (MODE == 0u) {
            n += 1.0;
            float d = v - a;
            a += d / n;
            b += d * (v - a);
        } else if (MODE == 1u) {
            a += v * v;
        } else {
            v *= p.scale;
            if (v > a) {
                b = b * exp(a - v) + 1.0;
                a = v;
            } else if (v != NEG_INF) {
                b += exp(v - a);
            }
        }
    }
    float cnt = float(e1 - e0), r0, r1;
    if (MODE == 0u) {
        r0 = wg_sum(n * a) / cnt;
        float d = a - r0;
        r1 = wg_sum(b + n * d * d);
    } else if (MODE == 1u) {
        r0 = wg_sum(a) / cnt;
        r1 = 0.0;
    } else {
        r0 = wg_max(a);
        r1 = wg_sum(a == NEG_INF ? 0.0 : b * exp(a - r0));
    }
    if (t == 0u) {
        st[p.s_off + wid * 2u] = r0;
        st[p.s_off + wid * 2u + 1u] = r1;
    }
}
