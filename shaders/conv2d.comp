#version 450
// 2-D convolution as an implicit GEMM, fp32 accumulation:
//   Y[z][o][p] = sum_k W[o][k] * patch(X[z])[k][p]  (+ bias[o]) (+ y, ACC)
//                (+ sum_r B[o][r] * s[r] * T[z][r][p], LORA)
// with o an output channel (GEMM rows), p = oy*Wo + ox an output pixel (GEMM
// columns) and k = (c*KH + ky)*KW + kx; patch elements are gathered from
// the NCHW input on the fly (zero outside the padded image), so no im2col
// buffer exists. X may be any strided view stored as f32/f16/bf16; W is
// [O, C*KH*KW] with row stride swo, f32/f16/bf16 or NF4 / NF4_DQ (a frozen
// QLoRA base: dequantised per element in registers, nf4.glsl; bound whole,
// w_off then counts from its first code at wq_code); Y is f32 [O, Ho*Wo] per
// image.
//
// Register-blocked like matmul.comp: each invocation owns a TM x TN tile
// (TM output channels x TN consecutive pixels), no shared memory and no
// barriers. On lavapipe every buffer load is a per-lane loop, so a tile with
// TM*TN FMAs per TM+TN loads is what sets the speed.
//
// FOLD makes the columns run over every image's pixels (q = z*P + pixel):
// with small images (the 8x8 .. 2x2 levels of a small UNet) one image's
// pixels would fill a fraction of one tile and leave most lanes idle.
//
// LORA fuses the up-projection of a LoRA adapter into the same tile: T is the
// down-projection conv(x, A_cat) [R, Ho*Wo] per image, s the per-rank scale.
// CPU reference: runtime/ref/ref_conv2d.c. Ops: runtime/ops/conv2d.c,
// runtime/ops/conv2d_lora.c.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 16;
layout(constant_id = 2) const uint TN = 16;
layout(constant_id = 3) const uint XDT = 0;
layout(constant_id = 4) const uint WDT = 0;
layout(constant_id = 5) const uint BIASDT = 0;
layout(constant_id = 6) const uint PADDED = 1;  // 0: every tap is inside the image
layout(constant_id = 7) const uint ACC = 0;     // add what y (1) or YIN (2) holds (later input-channel chunk)
layout(constant_id = 8) const uint LORA = 0;
layout(constant_id = 9) const uint BDT = 0;     // element type of the LoRA up weight
layout(constant_id = 10) const uint FOLD = 0;   // 1: columns over all images (workgroup z unused)
DECLARE_INPUT(0, X)
DECLARE_INPUT(1, W)
layout(binding = 2) buffer Y { float y[]; };
DECLARE_INPUT(3, BIAS)
DECLARE_INPUT(4, T)
DECLARE_INPUT(5, B)
DECLARE_INPUT(6, S)
DECLARE_INPUT(7, YIN)  // ACC 2: y's earlier ranges as recomputed by a checkpoint replay
layout(push_constant) uniform P {
    uint C, H, W, O, Ho, Wo;
    uint kdims;                // KH | KW << 8 | SH << 16 | SW << 24 (each <= 64):
                               // push constants so that one pipeline serves
                               // every layer shape; packed to leave room for
                               // the NF4 offsets within 128 bytes
    int pt, pl;
    uint has_bias;
    uint x_off, w_off, y_off, bias_off;
    uint sxn, sxc, sxh, sxw;   // input strides (batch, channel, row, column)
    uint swo, syn;             // weight row stride, output image stride
    uint t_off, b_off, s_off, R, stn, sbo;
    uint nimg;                 // FOLD: images
    uint wq_code, wq_scale, wq_qcode;  // NF4 W: vkl_quant_offsets
} p;

#include "nf4.glsl"
DECLARE_NF4_SCALE(W)
DECLARE_NF4_GET(W)

void main() {
    uint KH = p.kdims & 255u, KW = (p.kdims >> 8u) & 255u, SH = (p.kdims >> 16u) & 255u, SW = p.kdims >> 24u;
    uint P = p.Ho * p.Wo;
    uint NP = FOLD != 0u ? p.nimg * P : P;
    uint n0 = gl_GlobalInvocationID.x * TN;
    if (n0 >= NP) return;
    uint m0 = gl_WorkGroupID.y * TM;

    // per column: its image and pixel
    int iy0[TN], ix0[TN];
    uint zc[TN], pc[TN];
    for (uint j = 0u; j < TN; j++) {
        uint q = min(n0 + j, NP - 1u);
        zc[j] = FOLD != 0u ? q / P : gl_WorkGroupID.z;
        pc[j] = FOLD != 0u ? q - zc[j] * P : q;
        uint oy = pc[j] / p.Wo, ox = pc[j] - oy * p.Wo;
        iy0[j] = int(oy * SH) - p.pt;
        ix0[j] = int(ox * SW) - p.pl;
    }
    uint wrow[TM];
    for (uint i = 0u; i < TM; i++) wrow[i] = p.w_off + min(m0 + i, p.O - 1u) * p.swo;

    float acc[TM][TN];
    for (uint i = 0u; i < TM; i++)
        for (uint j = 0u; j < TN; j++) acc[i][j] = 0.0;

    int hmax = int(p.H) - 1, wmax = int(p.W) - 1;
    uint xb[TN];
    for (uint j = 0u; j < TN; j++) xb[j] = p.x_off + zc[j] * p.sxn;
    uint k = 0u;
    for (uint c = 0u; c < p.C; c++) {
        uint xc = c * p.sxc;
        for (uint ky = 0u; ky < KH; ky++) {
            for (uint kx = 0u; kx < KW; kx++, k++) {
                float xv[TN], wv[TM];
                for (uint j = 0u; j < TN; j++) {
                    int iy = iy0[j] + int(ky), ix = ix0[j] + int(kx);
                    if (PADDED != 0u) {
                        bool inside = uint(iy) <= uint(hmax) && uint(ix) <= uint(wmax);
                        float v = X_load(xb[j] + xc + uint(clamp(iy, 0, hmax)) * p.sxh + uint(clamp(ix, 0, wmax)) * p.sxw,
                                         XDT);
                        xv[j] = inside ? v : 0.0;
                    } else {
                        xv[j] = X_load(xb[j] + xc + uint(iy) * p.sxh + uint(ix) * p.sxw, XDT);
                    }
                }
                for (uint i = 0u; i < TM; i++) wv[i] = W_get(wrow[i] + k, WDT, p.wq_code, p.wq_scale, p.wq_qcode);
                for (uint i = 0u; i < TM; i++)
                    for (uint j = 0u; j < TN; j++) acc[i][j] = fma(wv[i], xv[j], acc[i][j]);
            }
        }
    }

    if (LORA != 0u) {
        uint brow[TM];
        for (uint i = 0u; i < TM; i++) brow[i] = p.b_off + min(m0 + i, p.O - 1u) * p.sbo;
        for (uint r = 0u; r < p.R; r++) {
            float s = S_load(p.s_off + r, DT_F32);
            float tv[TN], bv[TM];
            for (uint j = 0u; j < TN; j++) tv[j] = s * T_load(p.t_off + zc[j] * p.stn + r * P + pc[j], DT_F32);
            for (uint i = 0u; i < TM; i++) bv[i] = B_load(brow[i] + r, BDT);
            for (uint i = 0u; i < TM; i++)
                for (uint j = 0u; j < TN; j++) acc[i][j] = fma(bv[i], tv[j], acc[i][j]);
        }
    }

    for (uint i = 0u; i < TM; i++) {
        uint m = m0 + i;
        if (m >= p.O) break;
        float b = p.has_bias != 0u ? BIAS_load(p.bias_off + m, BIASDT) : 0.0;
        for (uint j = 0u; j < TN; j++) {
            if (n0 + j >= NP) break;
            uint yi = p.y_off + zc[j] * p.syn + m * P + pc[j];
            float v = acc[i][j] + b;
            if (ACC == 1u) v += y[yi];
            if (ACC == 2u) v += YIN_load(yi, DT_F32);
            y[yi] = v;
        }
    }
}
