#version 450
// Backward of the segment normalisations (norm_stats.comp + norm_apply.comp).
// With xh the normalised input ((x - mean) * rstd; RMS: x * rstd), z = xh * gamma
// + beta, y = z or silu(z), and g = dL/dz (dy, or dy * silu'(z)):
//   mean/var: dx = rstd * (dxh - mean(dxh) - xh * mean(dxh * xh)), dxh = g * gamma
//   RMS:      dx = rstd * (dxh - xh * mean(dxh * xh))
//   softmax:  dx = scale * y * (dy - sum(dy * y))
//   dbeta = sum g, dgamma = sum g * xh (over every element using that parameter).
// The forward's chunk statistics are reused, so the mean and rstd are exactly
// the forward's. Three passes, all with the forward's (segment, line, block)
// or row decomposition, each summing in fp32 within one workgroup and then
// across workgroups in a fixed order (no atomics: results are reproducible):
//   PASS 0 (part):  per (segment, line, block): (sum g, sum g * xh); for row
//                   norms (gamma per element) (sum dxh, sum dxh * xh); softmax
//                   (sum dy * y, 0). Group norm multiplies by the line's gamma
//                   when merging, so the same sums serve dx and dgamma/dbeta.
//   PASS 1 (apply): merges its segment's part sums, writes dx (f32, contiguous).
//   PASS 2 (param): row norms: per (64 columns, block of rows), column sums
//                   (sum g, sum g * xh), reduced over row blocks by sum_to.
// Op: runtime/ops/norm_grad.c. CPU reference: runtime/ref/ref_norm_grad.c.
// @variant norm_grad_part PASS=0
// @variant norm_grad_part_subgroup PASS=0 SUBGROUP=1
// @variant norm_grad_apply PASS=1
// @variant norm_grad_param PASS=2
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "common.glsl"
#define WG 64u
#if PASS == 0
#include "wg_reduce.glsl"
#endif
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint MODE = 0;      // 0 mean/var norm, 1 RMS norm, 2 softmax
layout(constant_id = 1) const uint XDT = 0;
layout(constant_id = 2) const uint GDT = 0;
layout(constant_id = 3) const uint BDT = 0;
layout(constant_id = 4) const uint HAS_GAMMA = 0;
layout(constant_id = 5) const uint HAS_BETA = 0;
layout(constant_id = 6) const uint PER_ELEM = 0;  // 1: param index = position in the line
layout(constant_id = 7) const uint SILU = 0;
layout(constant_id = 8) const uint BLOCK = 1024;  // elements of a line per workgroup (passes 0, 1)
layout(constant_id = 9) const uint X_CONTIG = 0;  // segment r of the window starts at r * seglen
DECLARE_INPUT(0, X)
layout(binding = 1) readonly buffer S { float st[]; };
DECLARE_INPUT(2, G)
DECLARE_INPUT(3, B)
layout(binding = 4) readonly buffer DYB { float dy[]; };
#if PASS == 1
layout(binding = 5) readonly buffer PB { float part[]; };
layout(binding = 6) writeonly buffer DXB { float dx[]; };
#else
layout(binding = 5) writeonly buffer PB { float part[]; };
#endif
layout(push_constant) uniform P {
    uint nseg, seg_first, seglen, chunk, nblk;   // PASS 2: nblk = rows per row block
    uint sdim[4]; uint sst[4];   // as in norm_stats.comp
    uint edim[4]; uint est[4];
    uint x_off, s_off, p_off, dy_off, dx_off, g_off, b_off;
    uint pmod, pmul;             // !PER_ELEM: param = (segment % pmod) * pmul + line
    float fparam;                // eps, or the softmax scale
} p;

#define NEG_INF (-1.0 / 0.0)

// The forward's merge of the chunk statistics of window segment sl (norm_apply.comp):
// r = (v - a) * b, or softmax exp(v * scale - a) * b.
void seg_stats(uint sl, out float a, out float b) {
    uint nchunk = (p.seglen + p.chunk - 1u) / p.chunk;
    uint sb = p.s_off + sl * nchunk * 2u;
    a = 0.0;
    b = 0.0;
    if (MODE == 0u) {
        float mean = 0.0, m2 = 0.0;
        for (uint c = 0u; c < nchunk; c++)
            mean += float(min(p.chunk, p.seglen - c * p.chunk)) * st[sb + 2u * c];
        mean /= float(p.seglen);
        for (uint c = 0u; c < nchunk; c++) {
            float d = st[sb + 2u * c] - mean;
            m2 += st[sb + 2u * c + 1u] + float(min(p.chunk, p.seglen - c * p.chunk)) * d * d;
        }
        a = mean;
        b = inversesqrt(m2 / float(p.seglen) + p.fparam);
    } else if (MODE == 1u) {
        float ms = 0.0;
        for (uint c = 0u; c < nchunk; c++)
            ms += float(min(p.chunk, p.seglen - c * p.chunk)) * st[sb + 2u * c];
        b = inversesqrt(ms / float(p.seglen) + p.fparam);
    } else {
        float m = NEG_INF, s = 0.0;
        for (uint c = 0u; c < nchunk; c++) m = max(m, st[sb + 2u * c]);
        for (uint c = 0u; c < nchunk; c++) {
            float mc = st[sb + 2u * c];
            if (mc != NEG_INF) s += st[sb + 2u * c + 1u] * exp(mc - m);
        }
        a = m;
        b = 1.0 / s;
    }
}

// xh: normalised input (softmax: y); returns g = dL/dz.
float elem_grad(float v, float d, float a, float b, float gm, float bt, out float xh) {
    if (MODE == 2u) {
        xh = exp(v * p.fparam - a) * b;
        return d;
    }
    xh = (v - a) * b;
    if (SILU == 0u) return d;
    float z = xh * gm + bt;
    float s = 1.0 / (1.0 + exp(-z));
    return d * s * (1.0 + z * (1.0 - s));
}

uint x_base(uint sl) {
    return X_CONTIG != 0u ? sl * p.seglen : strided_offset(p.seg_first + sl, U4(p.sdim), U4(p.sst));
}

uint x_elem(uint base, uint e) {
    return X_CONTIG != 0u ? base + e : base + strided_offset(e, U4(p.edim), U4(p.est));
}

#if PASS == 2
void main() {
    uint rb = p.nblk, ntile = (p.seglen + 63u) / 64u;
    uint wid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint nrb = (p.nseg + rb - 1u) / rb;
    if (wid >= nrb * ntile) return;   // no barriers in this pass
    uint rbl = wid / ntile, col = (wid % ntile) * 64u + gl_LocalInvocationIndex;
    if (col >= p.seglen) return;
    float gm = HAS_GAMMA != 0u ? G_load(p.g_off + col, GDT) : 1.0;
    float bt = HAS_BETA != 0u ? B_load(p.b_off + col, BDT) : 0.0;
    float sg = 0.0, sgx = 0.0;
    uint r1 = min((rbl + 1u) * rb, p.nseg);
    for (uint r = rbl * rb; r < r1; r++) {
        float a, b, xh;
        seg_stats(r, a, b);
        float v = X_load(p.x_off + x_elem(x_base(r), col), XDT);
        float g = elem_grad(v, dy[p.dy_off + r * p.seglen + col], a, b, gm, bt, xh);
        sg += g;
        sgx += g * xh;
    }
    uint o = p.p_off + ((p.seg_first / rb + rbl) * p.seglen + col) * 2u;
    part[o] = sg;
    part[o + 1u] = sgx;
}
#else
void main() {
    uint lines = p.edim[1], inner = p.edim[2] * p.edim[3];
    uint wid = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (wid >= p.nseg * lines * p.nblk) return;   // uniform per workgroup: safe before barriers
    uint sl = wid / (lines * p.nblk), rem = wid % (lines * p.nblk);
    uint line = rem / p.nblk, blk = rem % p.nblk;
    uint seg = p.seg_first + sl;
    float a, b;
    seg_stats(sl, a, b);
    uint pbase = (seg % p.pmod) * p.pmul;
    float gu = 1.0, bu = 0.0;   // per-line affine parameters
    if (PER_ELEM == 0u) {
        if (HAS_GAMMA != 0u) gu = G_load(p.g_off + pbase + line, GDT);
        if (HAS_BETA != 0u) bu = B_load(p.b_off + pbase + line, BDT);
    }
#if PASS == 1
    // merge the part sums of the segment: fixed order, lines then blocks
    float s0 = 0.0, s1 = 0.0;
    uint pb = p.p_off + sl * lines * p.nblk * 2u;
    for (uint l = 0u; l < lines; l++) {
        float t0 = 0.0, t1 = 0.0;
        for (uint k = 0u; k < p.nblk; k++) {
            t0 += part[pb + (l * p.nblk + k) * 2u];
            t1 += part[pb + (l * p.nblk + k) * 2u + 1u];
        }
        float w = PER_ELEM == 0u && HAS_GAMMA != 0u ? G_load(p.g_off + pbase + l, GDT) : 1.0;
        s0 += w * t0;
        s1 += w * t1;
    }
    float inv_n = 1.0 / float(p.seglen);
    float c1 = MODE == 0u ? s0 * inv_n : 0.0, c2 = s1 * inv_n;
#else
    float s0 = 0.0, s1 = 0.0;
#endif
    uint i1 = min((blk + 1u) * BLOCK, inner);
    uint xb = x_base(sl);
    for (uint i = blk * BLOCK + gl_LocalInvocationIndex; i < i1; i += 64u) {
        uint e = line * inner + i;
        float gm = gu, bt = bu;
        if (PER_ELEM != 0u) {
            if (HAS_GAMMA != 0u) gm = G_load(p.g_off + i, GDT);
            if (HAS_BETA != 0u && SILU != 0u) bt = B_load(p.b_off + i, BDT);
        }
        float xh, d = dy[p.dy_off + sl * p.seglen + e];
        float g = elem_grad(X_load(p.x_off + x_elem(xb, e), XDT), d, a, b, gm, bt, xh);
#if PASS == 1
        float r;
        if (MODE == 2u) r = p.fparam * xh * (d - s0);
        else r = b * (g * gm - c1 - xh * c2);
        dx[p.dx_off + sl * p.seglen + e] = r;
#else
        if (MODE == 2u) {
            s0 += d * xh;
        } else if (PER_ELEM != 0u) {
            float dxh = g * gm;
            s0 += dxh;
            s1 += dxh * xh;
        } else {
            s0 += g;
            s1 += g * xh;
        }
#endif
    }
#if PASS == 0
    float r0 = wg_sum(s0), r1 = wg_sum(s1);
    if (gl_LocalInvocationIndex == 0u) {
        part[p.p_off + wid * 2u] = r0;
        part[p.p_off + wid * 2u + 1u] = r1;
    }
#endif
}
#endif
