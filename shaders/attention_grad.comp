#version 450
// Flash-attention backward: the gradients of O = softmax(scale Q K^T) V
// without the Lq x Lk probabilities. With P_ij = exp(scale q_i.k_j - L_i)
// (L_i the row's log-sum-exp), dP_ij = dO_i.v_j and D_i = dO_i.O_i:
//   dQ_i = scale sum_j P_ij (dP_ij - D_i) k_j
//   dK_j = scale sum_i P_ij (dP_ij - D_i) q_i,   dV_j = sum_i P_ij dO_i
// Three variants, one per pass:
//  attention_bwd_stats  per query row: L_i (log2 domain) and D_i -> [.., 2]
//  attention_bwd_dq     per query row, looping over keys: dQ
//  attention_bwd_dkv    per key row, looping over queries: dK and/or dV,
//                       side by side per row ([dK | dV]; p.outs says which)
// Each invocation owns TR rows in registers; the loop side (keys, or
// queries) streams in unrolled blocks of BL with addresses that depend on
// uniforms only, so on lavapipe every loop-side load is one scalar load
// broadcast to the SIMD lanes; no shared memory, no barriers. Every loop but
// the block loop is unrolled (lavapipe ends a loop after 65535 iterations:
// the op splits long loop ranges into several nodes, which resume from the
// previous node's partial result, PREV, when p.accum is set).
// Scores are in the log2 domain: s = scale log2(e) q.k, P = exp2(s - L).
// Causal: local loop/row pair (query i, key j) is visible when
// j <= i + p.cshift; a query row that sees no key has L = -inf and P = 0.
// CPU reference: runtime/ref/ref_attention_grad.c. Op: runtime/ops/attention_flash_grad.c.
// @variant attention_bwd_stats MODE=0
// @variant attention_bwd_dq MODE=1
// @variant attention_bwd_dkv MODE=2
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
layout(local_size_x_id = 0) in;
const uint WG = gl_WorkGroupSize.x;
layout(constant_id = 1) const uint D = 64;   // head dimension
layout(constant_id = 2) const uint TR = 1;   // rows per invocation
layout(constant_id = 3) const uint BL = 4;   // loop items per unrolled block
layout(constant_id = 4) const uint QDT = 0;
layout(constant_id = 5) const uint KDT = 0;
layout(constant_id = 6) const uint VDT = 0;
DECLARE_INPUT(0, Q)
DECLARE_INPUT(1, K)
DECLARE_INPUT(2, V)
layout(binding = 3) readonly buffer G { float g_in[]; };    // dO, contiguous [.., Lq, D]
layout(binding = 4) readonly buffer O { float o_in[]; };    // O, contiguous [.., Lq, D]
layout(binding = 5) readonly buffer S { float st[]; };      // [L, D] per query row
layout(binding = 6) writeonly buffer X { float x_out[]; };  // this pass's result
layout(binding = 7) readonly buffer PR { float prev[]; };   // the previous node's result (accum)
layout(push_constant) uniform P {
    uint nrow;        // rows (queries, or keys for dkv) in this dispatch
    uint nloop;       // loop items (keys, or queries for dkv)
    int cshift;       // visible when key <= query + cshift (local indices)
    uint causal;
    uint nh;          // heads: workgroup z = b * nh + h
    uint nqr, nkr;    // rows per (batch, head) of contiguous query-side / key-side tensors (0 when split)
    uint accum;
    uint outs;        // dkv: bit 0 dK, bit 1 dV (uniform branches: one pipeline serves all)
    uint q_off, k_off, v_off, g_off, o_off, s_off, x_off, p_off;
    uint sq[4], sk[4], sv[4];   // element strides (batch, head, row, d); 0 batch/head when split
    float scale;
} p;

#define NEG_INF uintBitsToFloat(0xff800000u)
const float LOG2E = 1.4426950408889634;

bool visible(int qi, int kj) { return p.causal == 0u || kj <= qi + p.cshift; }

#if MODE == 0 || MODE == 1
// ---------------------------------------------------------------- per query row
float q[TR][D];
float m[TR], l[TR], dsum[TR];
#if MODE == 1
float go[TR][D];
float acc[TR][D];
#endif

void main() {
    uint lid = gl_LocalInvocationID.x, z = gl_WorkGroupID.z;
    uint b = z / p.nh, h = z % p.nh;
    uint qbase = p.q_off + b * p.sq[0] + h * p.sq[1];
    uint kbase = p.k_off + b * p.sk[0] + h * p.sk[1];
    uint vbase = p.v_off + b * p.sv[0] + h * p.sv[1];
    uint row0 = gl_WorkGroupID.x * WG * TR;
    float sl2 = p.scale * LOG2E;
    [[unroll]] for (uint t = 0u; t < TR; t++) {
        uint r = min(row0 + t * WG + lid, p.nrow - 1u);
        uint cr = z * p.nqr + r;
        [[unroll]] for (uint d = 0u; d < D; d++) q[t][d] = Q_load(qbase + r * p.sq[2] + d * p.sq[3], QDT) * sl2;
#if MODE == 0
        if (p.accum != 0u) {
            float lp = prev[p.p_off + cr * 2u];
            m[t] = lp;
            l[t] = lp == NEG_INF ? 0.0 : 1.0;
            dsum[t] = prev[p.p_off + cr * 2u + 1u];
        } else {
            m[t] = NEG_INF;
            l[t] = 0.0;
            float ds = 0.0;
            [[unroll]] for (uint d = 0u; d < D; d++) ds = fma(g_in[p.g_off + cr * D + d], o_in[p.o_off + cr * D + d], ds);
            dsum[t] = ds;
        }
#else
        m[t] = st[p.s_off + cr * 2u];
        dsum[t] = st[p.s_off + cr * 2u + 1u];
        [[unroll]] for (uint d = 0u; d < D; d++) {
            go[t][d] = g_in[p.g_off + cr * D + d];
            acc[t][d] = 0.0;
        }
#endif
    }
    // uniform trip count: the workgroup's last row sees the most keys
    uint rlast = min(row0 + WG * TR - 1u, p.nrow - 1u);
    uint nk = p.causal != 0u ? uint(clamp(int(rlast) + p.cshift + 1, 0, int(p.nloop))) : p.nloop;
    for (uint j0 = 0u; j0 < nk; j0 += BL) {
        float kr[BL][D];
        uint vrow[BL];
        [[unroll]] for (uint j = 0u; j < BL; j++) {
            uint jj = min(j0 + j, p.nloop - 1u);
            vrow[j] = vbase + jj * p.sv[2];
            [[unroll]] for (uint d = 0u; d < D; d++) kr[j][d] = K_load(kbase + jj * p.sk[2] + d * p.sk[3], KDT);
        }
        float s[TR][BL];
        [[unroll]] for (uint t = 0u; t < TR; t++)
            [[unroll]] for (uint j = 0u; j < BL; j++) {
                float a = 0.0;
                [[unroll]] for (uint d = 0u; d < D; d++) a = fma(q[t][d], kr[j][d], a);
                s[t][j] = a;
            }
#if MODE == 0
        [[unroll]] for (uint t = 0u; t < TR; t++) {
            int r = int(row0 + t * WG + lid);
            float bm = NEG_INF;
            [[unroll]] for (uint j = 0u; j < BL; j++) {
                bool ok = j0 + j < p.nloop && visible(r, int(j0 + j));
                s[t][j] = ok ? s[t][j] : NEG_INF;
                bm = max(bm, s[t][j]);
            }
            float mn = max(m[t], bm);
            float ms = mn == NEG_INF ? 0.0 : mn;   // no visible key yet: avoid inf - inf
            float ls = 0.0;
            [[unroll]] for (uint j = 0u; j < BL; j++) ls += exp2(s[t][j] - ms);
            l[t] = l[t] * exp2(m[t] - ms) + ls;
            m[t] = mn;
        }
#else
        float dp[TR][BL];
        [[unroll]] for (uint t = 0u; t < TR; t++)
            [[unroll]] for (uint j = 0u; j < BL; j++) dp[t][j] = 0.0;
        [[unroll]] for (uint d = 0u; d < D; d++)
            [[unroll]] for (uint j = 0u; j < BL; j++) {
                float vv = V_load(vrow[j] + d * p.sv[3], VDT);
                [[unroll]] for (uint t = 0u; t < TR; t++) dp[t][j] = fma(go[t][d], vv, dp[t][j]);
            }
        [[unroll]] for (uint t = 0u; t < TR; t++) {
            int r = int(row0 + t * WG + lid);
            [[unroll]] for (uint j = 0u; j < BL; j++) {
                bool ok = j0 + j < p.nloop && visible(r, int(j0 + j));
                float pr = ok ? exp2(s[t][j] - m[t]) : 0.0;
                s[t][j] = pr * (dp[t][j] - dsum[t]);
            }
        }
        [[unroll]] for (uint d = 0u; d < D; d++)
            [[unroll]] for (uint j = 0u; j < BL; j++)
                [[unroll]] for (uint t = 0u; t < TR; t++) acc[t][d] = fma(s[t][j], kr[j][d], acc[t][d]);
#endif
    }
    [[unroll]] for (uint t = 0u; t < TR; t++) {
        uint r = row0 + t * WG + lid;
        if (r >= p.nrow) continue;
        uint cr = z * p.nqr + r;
#if MODE == 0
        x_out[p.x_off + cr * 2u] = l[t] > 0.0 ? m[t] + log2(l[t]) : NEG_INF;
        x_out[p.x_off + cr * 2u + 1u] = dsum[t];
#else
        [[unroll]] for (uint d = 0u; d < D; d++) {
            float base = p.accum != 0u ? prev[p.p_off + cr * D + d] : 0.0;
            x_out[p.x_off + cr * D + d] = fma(acc[t][d], p.scale, base);
        }
#endif
    }
}
#else
// ---------------------------------------------------------------- per key row
float kk[TR][D], vr[TR][D];
float dk[TR][D], dv[TR][D];

void main() {
    uint lid = gl_LocalInvocationID.x, z = gl_WorkGroupID.z;
    uint b = z / p.nh, h = z % p.nh;
    uint qbase = p.q_off + b * p.sq[0] + h * p.sq[1];
    uint kbase = p.k_off + b * p.sk[0] + h * p.sk[1];
    uint vbase = p.v_off + b * p.sv[0] + h * p.sv[1];
    uint row0 = gl_WorkGroupID.x * WG * TR;
    float sl2 = p.scale * LOG2E;
    bool want_dk = (p.outs & 1u) != 0u, want_dv = (p.outs & 2u) != 0u;
    uint W = (want_dk ? D : 0u) + (want_dv ? D : 0u), DV0 = want_dk ? D : 0u;
    [[unroll]] for (uint t = 0u; t < TR; t++) {
        uint r = min(row0 + t * WG + lid, p.nrow - 1u);
        [[unroll]] for (uint d = 0u; d < D; d++) {
            kk[t][d] = K_load(kbase + r * p.sk[2] + d * p.sk[3], KDT) * sl2;
            vr[t][d] = 0.0;
            dk[t][d] = 0.0;
            dv[t][d] = 0.0;
        }
        if (want_dk)
            [[unroll]] for (uint d = 0u; d < D; d++) vr[t][d] = V_load(vbase + r * p.sv[2] + d * p.sv[3], VDT);
    }
    // queries before the first one that sees the workgroup's first key add nothing
    uint i_first = p.causal != 0u ? uint(clamp(int(row0) - p.cshift, 0, int(p.nloop))) : 0u;
    for (uint i0 = i_first; i0 < p.nloop; i0 += BL) {
        float qr[BL][D], gr[BL][D], li[BL], di[BL];
        [[unroll]] for (uint i = 0u; i < BL; i++) {
            uint ii = min(i0 + i, p.nloop - 1u);
            uint cr = z * p.nqr + ii;
            li[i] = st[p.s_off + cr * 2u];
            di[i] = st[p.s_off + cr * 2u + 1u];
            [[unroll]] for (uint d = 0u; d < D; d++) {
                qr[i][d] = Q_load(qbase + ii * p.sq[2] + d * p.sq[3], QDT);
                gr[i][d] = g_in[p.g_off + cr * D + d];
            }
        }
        float s[TR][BL], dp[TR][BL];
        [[unroll]] for (uint t = 0u; t < TR; t++)
            [[unroll]] for (uint i = 0u; i < BL; i++) {
                float a = 0.0, c = 0.0;
                [[unroll]] for (uint d = 0u; d < D; d++) {
                    a = fma(kk[t][d], qr[i][d], a);
                    c = fma(vr[t][d], gr[i][d], c);
                }
                int r = int(row0 + t * WG + lid);
                bool ok = i0 + i < p.nloop && visible(int(i0 + i), r);
                float pr = ok ? exp2(a - li[i]) : 0.0;
                s[t][i] = pr;
                dp[t][i] = pr * (c - di[i]);
            }
        if (want_dv)
            [[unroll]] for (uint d = 0u; d < D; d++)
                [[unroll]] for (uint i = 0u; i < BL; i++)
                    [[unroll]] for (uint t = 0u; t < TR; t++) dv[t][d] = fma(s[t][i], gr[i][d], dv[t][d]);
        if (want_dk)
            [[unroll]] for (uint d = 0u; d < D; d++)
                [[unroll]] for (uint i = 0u; i < BL; i++)
                    [[unroll]] for (uint t = 0u; t < TR; t++) dk[t][d] = fma(dp[t][i], qr[i][d], dk[t][d]);
    }
    [[unroll]] for (uint t = 0u; t < TR; t++) {
        uint r = row0 + t * WG + lid;
        if (r >= p.nrow) continue;
        uint ob = (z * p.nkr + r) * W;
        [[unroll]] for (uint d = 0u; d < D; d++) {
            if (want_dk) {
                float base = p.accum != 0u ? prev[p.p_off + ob + d] : 0.0;
                x_out[p.x_off + ob + d] = fma(dk[t][d], p.scale, base);
            }
            if (want_dv) {
                float base = p.accum != 0u ? prev[p.p_off + ob + DV0 + d] : 0.0;
                x_out[p.x_off + ob + DV0 + d] = dv[t][d] + base;
            }
        }
    }
}
#endif
