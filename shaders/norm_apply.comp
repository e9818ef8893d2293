#version 450
// Second pass of the segment normalisations: each workgroup merges the chunk
// statistics of its segment (norm_stats.comp) and writes one block of one
// line of that segment. A segment is `lines` lines of `inner` elements; for
// group norm a line is one channel (so gamma/beta are uniform per workgroup),
// for row norms the segment is a single line and gamma/beta go per element.
// y is f32, contiguous, segment after segment.
// Op: runtime/ops/norm.c. CPU reference: runtime/ref/ref_norm.c.
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint MODE = 0;      // 0 mean/var norm, 1 RMS norm, 2 softmax
layout(constant_id = 1) const uint XDT = 0;
layout(constant_id = 2) const uint GDT = 0;
layout(constant_id = 3) const uint BDT = 0;
layout(constant_id = 4) const uint HAS_GAMMA = 0;
layout(constant_id = 5) const uint HAS_BETA = 0;
layout(constant_id = 6) const uint PER_ELEM = 0;  // 1: param index = position in the line
layout(constant_id = 7) const uint SILU = 0;
layout(constant_id = 8) const uint BLOCK = 1024;  // elements of a line per workgroup
DECLARE_INPUT(0, X)
layout(binding = 1) readonly buffer S { float st[]; };
DECLARE_INPUT(2, G)
DECLARE_INPUT(3, B)
layout(binding = 4) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint nseg, seg_first, seglen, nchunk, chunk, nblk;  // nblk: blocks per line
    uint sdim[4]; uint sst[4];   // as in norm_stats.comp; edim[1] = lines, edim[2]*edim[3] = inner
    uint edim[4]; uint est[4];
    uint x_off, s_off, y_off, g_off, b_off, x_contig;
    uint pmod, pmul;             // !PER_ELEM: param = (segment % pmod) * pmul + line
    float fparam;                // eps, or the softmax scale
} p;

#define NEG_INF (-1.0 / 0.0)

void main() {
    uint lines = p.edim[1], inner = p.edim[2] * p.edim[3];
    uint wid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (wid >= p.nseg * lines * p.nblk) return;
    uint sl = wid / (lines * p.nblk), rem = wid % (lines * p.nblk);
    uint line = rem / p.nblk, blk = rem % p.nblk;
    uint seg = p.seg_first + sl;

    // merge the chunk statistics (uniform loads, cheap next to the elements)
    uint sb = p.s_off + sl * p.nchunk * 2u;
    float a = 0.0, b = 0.0;   // shift and multiplier: r = (v - a) * b, or exp(v*scale - a) * b
    if (MODE == 0u) {
        float mean = 0.0, m2 = 0.0;
        for (uint c = 0u; c < p.nchunk; c++)
            mean += float(min(p.chunk, p.seglen - c * p.chunk)) * st[sb + 2u * c];
        mean /= float(p.seglen);
        for (uint c = 0u; c < p.nchunk; c++) {
            float d = st[sb + 2u * c] - mean;
            m2 += st[sb + 2u * c + 1u] + float(min(p.chunk, p.seglen - c * p.chunk)) * d * d;
        }
        a = mean;
        b = inversesqrt(m2 / float(p.seglen) + p.fparam);
    } else if (MODE == 1u) {
        float ms = 0.0;
        for (uint c = 0u; c < p.nchunk; c++)
            ms += float(min(p.chunk, p.seglen - c * p.chunk)) * st[sb + 2u * c];
        b = inversesqrt(ms / float(p.seglen) + p.fparam);
    } else {
        float m = NEG_INF, s = 0.0;
        for (uint c = 0u; c < p.nchunk; c++) m = max(m, st[sb + 2u * c]);
        for (uint c = 0u; c < p.nchunk; c++) {
            float mc = st[sb + 2u * c];
            if (mc != NEG_INF) s += st[sb + 2u * c + 1u] * exp(mc - m);
        }
        a = m;
        b = 1.0 / s;
    }

    uint pbase = (seg % p.pmod) * p.pmul + line;
    float gu = 1.0, bu = 0.0;   // per-line affine parameters
    if (PER_ELEM == 0u) {
        if (HAS_GAMMA != 0u) gu = G_load(p.g_off + pbase, GDT);
        if (HAS_BETA != 0u) bu = B_load(p.b_off + pbase, BDT);
    }
    uint i1 = min((blk + 1u) * BLOCK, inner);
    uint xbase = p.x_contig != 0u ? sl * p.seglen : strided_offset(seg, U4(p.sdim), U4(p.sst));
    for (uint i = blk * BLOCK + gl_LocalInvocationIndex; i < i1; i += 64u) {
        uint e = line * inner + i;
        uint off = p.x_contig != 0u ? xbase + e : xbase + strided_offset(e, U4(p.edim), U4(p.est));
        float v = X_load(p.x_off + off, XDT), r;
        if (MODE == 2u) {
            r = exp(v * p.fparam - a) * b;
        } else {
            r = (v - a) * b;
            if (PER_ELEM != 0u) {
                if (HAS_GAMMA != 0u) r *= G_load(p.g_off + i, GDT);
                if (HAS_BETA != 0u) r += B_load(p.b_off + i, BDT);
            } else {
                r = r * gu + bu;
            }
            if (SILU != 0u) r = r / (1.0 + exp(-r));
        }
        y[p.y_off + sl * p.seglen + e] = r;
    }
}
