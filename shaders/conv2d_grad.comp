#version 450
// Gradients of conv2d.comp, fp32 accumulation, register tiles without shared
// memory or barriers (the forward's reasons: on lavapipe loads set the speed).
//
// conv2d_dx: the input gradient, a transposed convolution as an implicit GEMM
//   dX[z][c][iy][ix] = sum_{o,ky,kx} W[o][c][ky][kx] * dY[z][o][oy][ox]
//   over the taps with iy = oy*SH - pt + ky and ix = ox*SW - pl + kx.
// Rows are input channels c, columns input pixels, the reduction runs over
// output channels and taps. With a stride the pixels are taken one phase
// class (iy mod SH, ix mod SW) at a time (workgroup z = image * SH*SW +
// phase): within a class the valid taps are the same for every pixel and oy,
// ox are the pixel's class coordinates minus the tap's, so no per-tap
// divisibility test exists. Pixels no output reads (a phase without taps,
// rows past the last window) get zeros. ACC adds to what dX holds (a later
// range of output channels). FOLD: the columns run over the class pixels of
// every image (q = z*P + pixel, workgroup z = phase), so small images fill
// the tiles.
//
// conv2d_dw: the weight gradient, a GEMM over the N*Ho*Wo output pixels:
//   dW[s][o][k] = sum_{(n,p) in split s} dY[n][o][p] * patch(X[n])[k][p]
// with rows o, columns k = (c*KH + ky)*KW + kx (patch elements gathered from
// the strided input, zero outside the image). Workgroup z is a split of the
// reduction range (the splits are summed afterwards); ACC adds to what dW
// holds (the next image when images are bound one at a time).
// CPU reference: runtime/ref/ref_conv2d.c. Op: runtime/ops/conv2d_grad.c.
// @variant conv2d_dx PASS=0
// @variant conv2d_dw PASS=1
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 16;
layout(constant_id = 2) const uint TN = 16;
layout(constant_id = 3) const uint ADT = 0;   // dx: W's element type; dw: X's
layout(constant_id = 4) const uint DYDT = 0;
layout(constant_id = 5) const uint ACC = 0;
layout(constant_id = 6) const uint FOLD = 0;  // dx: columns over all images
DECLARE_INPUT(0, A)   // dx: W [O, C*KH*KW] (row stride swo; NF4 / NF4_DQ too); dw: X, strided
DECLARE_INPUT(1, DY)  // strided [N, O, Ho, Wo]
layout(binding = 2) buffer OUT { float outv[]; };
layout(push_constant) uniform P {
    uint C, O, H, W, Ho, Wo;   // dx: C rows, O reduced; dw: O rows, C*KH*KW columns
    uint KH, KW, SH, SW;
    int pt, pl;
    uint a_off, dy_off, out_off;
    uint sdn, sdo, sdh, sdw;   // dy strides
    uint sxn, sxc, sxh, sxw;   // dx: output image / channel stride; dw: input strides
    uint swo;                  // dx: W's row stride; dw: output row stride
    uint nimg, chunk, sos;     // dw: images, reduction steps per split, output split stride
    uint wq_code, wq_scale, wq_qcode;  // dx, NF4 W (bound whole): vkl_quant_offsets
} p;

#include "nf4.glsl"
DECLARE_NF4_SCALE(A)
DECLARE_NF4_GET(A)

#if PASS == 0
void main() {
    uint phases = p.SH * p.SW;
    uint zg = FOLD != 0u ? 0u : gl_WorkGroupID.z / phases, ph = gl_WorkGroupID.z - zg * phases;
    uint py = ph / p.SW, px = ph - py * p.SW;
    if (py >= p.H || px >= p.W) return;
    uint Hp = (p.H - py + p.SH - 1u) / p.SH, Wp = (p.W - px + p.SW - 1u) / p.SW;
    uint P = Hp * Wp;
    uint NP = FOLD != 0u ? p.nimg * P : P;
    uint n0 = gl_GlobalInvocationID.x * TN;
    if (n0 >= NP) return;
    uint m0 = gl_WorkGroupID.y * TM;

    // first valid tap of this class, and the output row/column it reads for class coordinate 0
    uint ky0 = (py + uint(p.pt)) % p.SH, kx0 = (px + uint(p.pl)) % p.SW;
    int oyc = int((py + uint(p.pt) - ky0) / p.SH), oxc = int((px + uint(p.pl) - kx0) / p.SW);
    uint NA = p.KH > ky0 ? (p.KH - ky0 + p.SH - 1u) / p.SH : 0u;
    uint NB = p.KW > kx0 ? (p.KW - kx0 + p.SW - 1u) / p.SW : 0u;

    int oyb[TN], oxb[TN];
    uint zc[TN], qc[TN];
    for (uint j = 0u; j < TN; j++) {
        uint qq = min(n0 + j, NP - 1u);
        zc[j] = FOLD != 0u ? qq / P : zg;
        uint q = FOLD != 0u ? qq - zc[j] * P : qq;
        qc[j] = q;
        uint jy = q / Wp;
        oyb[j] = int(jy) + oyc;
        oxb[j] = int(q - jy * Wp) + oxc;
    }
    uint KK = p.KH * p.KW;
    uint wc[TM];
    for (uint i = 0u; i < TM; i++) wc[i] = p.a_off + min(m0 + i, p.C - 1u) * KK;

    float acc[TM][TN];
    for (uint i = 0u; i < TM; i++)
        for (uint j = 0u; j < TN; j++) acc[i][j] = 0.0;

    // taps outside, output channels inside: the bounds of each tap's dy
    // element are worked out once per tap, not once per channel and tap
    int hmax = int(p.Ho) - 1, wmax = int(p.Wo) - 1;
    for (uint a = 0u; a < NA; a++) {
        uint ky = ky0 + a * p.SH;
        for (uint b = 0u; b < NB; b++) {
            uint tap = ky * p.KW + kx0 + b * p.SW;
            uint doff[TN];
            bool inside[TN];
            for (uint j = 0u; j < TN; j++) {
                int oy = oyb[j] - int(a), ox = oxb[j] - int(b);
                inside[j] = uint(oy) <= uint(hmax) && uint(ox) <= uint(wmax);
                doff[j] = p.dy_off + zc[j] * p.sdn + uint(clamp(oy, 0, hmax)) * p.sdh + uint(clamp(ox, 0, wmax)) * p.sdw;
            }
            for (uint o = 0u; o < p.O; o++) {
                uint dyo = o * p.sdo, wo = o * p.swo + tap;
                float dv[TN], wv[TM];
                // a select, not a product: an inf next to the border stays out
                for (uint j = 0u; j < TN; j++) {
                    float v = DY_load(doff[j] + dyo, DYDT);
                    dv[j] = inside[j] ? v : 0.0;
                }
                for (uint i = 0u; i < TM; i++) wv[i] = A_get(wc[i] + wo, ADT, p.wq_code, p.wq_scale, p.wq_qcode);
                for (uint i = 0u; i < TM; i++)
                    for (uint j = 0u; j < TN; j++) acc[i][j] = fma(wv[i], dv[j], acc[i][j]);
            }
        }
    }

    for (uint i = 0u; i < TM; i++) {
        uint m = m0 + i;
        if (m >= p.C) break;
        for (uint j = 0u; j < TN; j++) {
            if (n0 + j >= NP) break;
            uint q = qc[j];
            uint jy = q / Wp;
            uint iy = py + jy * p.SH, ix = px + (q - jy * Wp) * p.SW;
            uint oi = p.out_off + zc[j] * p.sxn + m * p.sxc + iy * p.W + ix;
            float v = acc[i][j];
            if (ACC != 0u) v += outv[oi];
            outv[oi] = v;
        }
    }
}
#else
void main() {
    uint K = p.C;   // columns of this dispatch
    uint n0 = gl_GlobalInvocationID.x * TN;
    if (n0 >= K) return;
    uint m0 = gl_WorkGroupID.y * TM;
    uint s = gl_WorkGroupID.z;
    uint P = p.Ho * p.Wo, total = p.nimg * P;
    uint r0 = s * p.chunk;
    if (r0 >= total) return;
    uint r1 = min(r0 + p.chunk, total);

    uint KK = p.KH * p.KW;
    uint xo[TN];
    int ky[TN], kx[TN];
    for (uint j = 0u; j < TN; j++) {
        uint k = min(n0 + j, K - 1u);
        uint c = k / KK, t = k - c * KK;
        uint a = t / p.KW;
        xo[j] = p.a_off + c * p.sxc;
        ky[j] = int(a);
        kx[j] = int(t - a * p.KW);
    }
    uint drow[TM];
    for (uint i = 0u; i < TM; i++) drow[i] = p.dy_off + min(m0 + i, p.O - 1u) * p.sdo;

    float acc[TM][TN];
    for (uint i = 0u; i < TM; i++)
        for (uint j = 0u; j < TN; j++) acc[i][j] = 0.0;

    int hmax = int(p.H) - 1, wmax = int(p.W) - 1;
    uint n = r0 / P, q = r0 - n * P;
    uint oy = q / p.Wo, ox = q - oy * p.Wo;
    for (uint r = r0; r < r1; r++) {
        uint dn = n * p.sdn + oy * p.sdh + ox * p.sdw;
        uint xn = n * p.sxn;
        int iy0 = int(oy * p.SH) - p.pt, ix0 = int(ox * p.SW) - p.pl;
        float dv[TM], xv[TN];
        for (uint i = 0u; i < TM; i++) dv[i] = DY_load(drow[i] + dn, DYDT);
        for (uint j = 0u; j < TN; j++) {
            int iy = iy0 + ky[j], ix = ix0 + kx[j];
            bool inside = uint(iy) <= uint(hmax) && uint(ix) <= uint(wmax);
            float v = A_load(xo[j] + xn + uint(clamp(iy, 0, hmax)) * p.sxh + uint(clamp(ix, 0, wmax)) * p.sxw, ADT);
            xv[j] = inside ? v : 0.0;
        }
        for (uint i = 0u; i < TM; i++)
            for (uint j = 0u; j < TN; j++) acc[i][j] = fma(dv[i], xv[j], acc[i][j]);
        if (++ox == p.Wo) {
            ox = 0u;
            if (++oy == p.Ho) {
                oy = 0u;
                n++;
            }
        }
    }

    uint ob = p.out_off + s * p.sos;
    for (uint i = 0u; i < TM; i++) {
        uint m = m0 + i;
        if (m >= p.O) break;
        for (uint j = 0u; j < TN; j++) {
            uint k = n0 + j;
            if (k >= K) break;
            uint oi = ob + m * p.swo + k;
            float v = acc[i][j];
            if (ACC != 0u) v += outv[oi];
            outv[oi] = v;
        }
    }
}
#endif
