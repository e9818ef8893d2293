#version 450
// Scaled dot-product attention, flash style: O = softmax(Q K^T * scale) V for
// one (batch, head) per workgroup z and a block of query rows per workgroup x.
// The Lq x Lk score matrix is never stored: each query row keeps a running
// max m, a running sum l and an unnormalised accumulator acc[D] (online
// softmax), so memory stays linear in the sequence length.
//
// Variants:
//  attention        each invocation owns TQ query rows and streams over the
//                   keys straight from the storage buffers. Key/value
//                   addresses depend only on the workgroup, push constants and
//                   loop counters, so on lavapipe every K/V load is one scalar
//                   load broadcast to the 8 SIMD lanes; no barriers, no
//                   shared memory.
//  attention_tiled  GPUs: the workgroup loads a tile of KT keys and values
//                   into shared memory cooperatively (coalesced), then every
//                   invocation (one query row each) reads the tile.
//
// Keys go in blocks of KB: the scores of a block for all D dims are one
// unrolled body, then one softmax rescale per block, then the unrolled
// P V update. Every loop but the one over key blocks is unrolled: llvmpipe
// (lavapipe) ends every loop once an invocation has run 65535 loop
// iterations in total (its guard against endless loops), so loops over D
// inside the key loop would silently cut long sequences short. Unrolled, only
// the block loop counts (Lk / KB iterations; the op splits longer key ranges
// into several passes). KB is small so that the unrolled body (2 KB D TQ
// FMAs) compiles quickly.
//
// Keys can be processed in several passes (graph nodes: when a (batch, head)
// slice of K/V does not fit one storage binding, or on lavapipe past the loop
// limit above): STATE_OUT writes [acc, m, l] per row instead of the result, and
// STATE_IN resumes from such a state. Scores are in the log2 domain
// (p.scale already holds scale * log2(e)).
// CPU reference: runtime/ref/ref_attention.c. Op: runtime/ops/attention.c.
// @variant attention
// @variant attention_tiled TILED=1
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
layout(local_size_x_id = 0) in;
const uint WG = gl_WorkGroupSize.x;
layout(constant_id = 1) const uint D = 64;       // head dimension
layout(constant_id = 2) const uint TQ = 1;       // query rows per invocation
layout(constant_id = 3) const uint KB = 8;       // keys per unrolled block
layout(constant_id = 10) const uint KT = 8;      // keys per shared-memory tile (TILED; a multiple of KB)
layout(constant_id = 4) const uint QDT = 0;
layout(constant_id = 5) const uint KDT = 0;
layout(constant_id = 6) const uint VDT = 0;
layout(constant_id = 7) const uint CAUSAL = 0;
layout(constant_id = 8) const uint STATE_IN = 0;
layout(constant_id = 9) const uint STATE_OUT = 0;
DECLARE_INPUT(0, Q)
DECLARE_INPUT(1, K)
DECLARE_INPUT(2, V)
layout(binding = 3) writeonly buffer O { float o[]; };
layout(binding = 4) readonly buffer S { float s_in[]; };
layout(push_constant) uniform P {
    uint nq;          // query rows in this dispatch
    uint nk;          // keys in this dispatch
    int cshift;       // local key j is visible to local row r when j <= r + cshift (causal)
    uint nh;          // heads: workgroup z = b * nh + h
    uint q_off, k_off, v_off, o_off, s_off;
    uint sq[4], sk[4], sv[4];   // element strides (batch, head, row, d); 0 batch/head when split
    uint o_bh, o_row;           // output: per (batch, head) and per row
    uint s_bh, s_row;           // input state: likewise
    float scale;                // scale * log2(e)
} p;

#ifdef TILED
shared float ks[KT * D];
shared float vs[KT * D];
#endif

#define NEG_INF uintBitsToFloat(0xff800000u)

float q[TQ][D];
float acc[TQ][D];
float m[TQ], l[TQ];
uint lid, wrow0, kbase, vbase;

#ifdef TILED
#define KVAL(j, d) ks[(j) * D + (d)]
#define VVAL(j, d) vs[(j) * D + (d)]
#else
#define KVAL(j, d) K_load(krow[j] + (d) * p.sk[3], KDT)
#define VVAL(j, d) V_load(vrow[j] + (d) * p.sv[3], VDT)
#endif

// Keys j0 .. j0+KB-1 of this dispatch (tile-relative index tj0 in TILED).
void key_block(uint j0, uint tj0) {
#ifndef TILED
    // addresses depend on uniforms only: one broadcast load per element on lavapipe
    uint krow[KB], vrow[KB];
    [[unroll]] for (uint j = 0u; j < KB; j++) {
        uint jj = min(j0 + j, p.nk - 1u);
        krow[j] = kbase + jj * p.sk[2];
        vrow[j] = vbase + jj * p.sv[2];
    }
#endif
    float s[TQ][KB];
    [[unroll]] for (uint j = 0u; j < KB; j++) {
        [[unroll]] for (uint t = 0u; t < TQ; t++) s[t][j] = 0.0;
        [[unroll]] for (uint d = 0u; d < D; d++) {
            float kv = KVAL(tj0 + j, d);
            [[unroll]] for (uint t = 0u; t < TQ; t++) s[t][j] = fma(q[t][d], kv, s[t][j]);
        }
    }
    [[unroll]] for (uint t = 0u; t < TQ; t++) {
        int r = int(wrow0 + t * WG + lid);
        float bm = NEG_INF;
        [[unroll]] for (uint j = 0u; j < KB; j++) {
            bool ok = j0 + j < p.nk && (CAUSAL == 0u || int(j0 + j) <= r + p.cshift);
            s[t][j] = ok ? s[t][j] : NEG_INF;
            bm = max(bm, s[t][j]);
        }
        float mn = max(m[t], bm);
        // a row that has seen no visible key yet keeps m = -inf: avoid inf - inf
        float ms = mn == NEG_INF ? 0.0 : mn;
        float corr = exp2(m[t] - ms);
        float ls = 0.0;
        [[unroll]] for (uint j = 0u; j < KB; j++) {
            s[t][j] = exp2(s[t][j] - ms);
            ls += s[t][j];
        }
        l[t] = l[t] * corr + ls;
        m[t] = mn;
        [[unroll]] for (uint d = 0u; d < D; d++) acc[t][d] *= corr;
    }
    [[unroll]] for (uint d = 0u; d < D; d++) {
        [[unroll]] for (uint j = 0u; j < KB; j++) {
            float vv = VVAL(tj0 + j, d);
            [[unroll]] for (uint t = 0u; t < TQ; t++) acc[t][d] = fma(s[t][j], vv, acc[t][d]);
        }
    }
}

void main() {
    lid = gl_LocalInvocationID.x;
    uint z = gl_WorkGroupID.z;
    uint b = z / p.nh, h = z % p.nh;
    uint qbase = p.q_off + b * p.sq[0] + h * p.sq[1];
    kbase = p.k_off + b * p.sk[0] + h * p.sk[1];
    vbase = p.v_off + b * p.sv[0] + h * p.sv[1];
    wrow0 = gl_WorkGroupID.x * WG * TQ;

    [[unroll]] for (uint t = 0u; t < TQ; t++) {
        uint r = min(wrow0 + t * WG + lid, p.nq - 1u);
        [[unroll]] for (uint d = 0u; d < D; d++) q[t][d] = Q_load(qbase + r * p.sq[2] + d * p.sq[3], QDT) * p.scale;
        if (STATE_IN != 0u) {
            uint sb = p.s_off + z * p.s_bh + r * p.s_row;
            [[unroll]] for (uint d = 0u; d < D; d++) acc[t][d] = s_in[sb + d];
            m[t] = s_in[sb + D];
            l[t] = s_in[sb + D + 1u];
        } else {
            [[unroll]] for (uint d = 0u; d < D; d++) acc[t][d] = 0.0;
            m[t] = NEG_INF;
            l[t] = 0.0;
        }
    }

    // Uniform trip count (the last row of the workgroup sees the most keys);
    // rows that see fewer keys mask them.
    uint rlast = min(wrow0 + WG * TQ - 1u, p.nq - 1u);
    uint nk = CAUSAL != 0u ? uint(clamp(int(rlast) + p.cshift + 1, 0, int(p.nk))) : p.nk;
#ifdef TILED
    for (uint t0 = 0u; t0 < nk; t0 += KT) {
        barrier();
        [[unroll]] for (uint it = 0u; it < (KT * D + WG - 1u) / WG; it++) {
            uint i = it * WG + lid;
            if (i < KT * D) {
                uint j = min(t0 + i / D, p.nk - 1u), d = i % D;
                ks[i] = K_load(kbase + j * p.sk[2] + d * p.sk[3], KDT);
                vs[i] = V_load(vbase + j * p.sv[2] + d * p.sv[3], VDT);
            }
        }
        barrier();
        uint tn = min(KT, nk - t0);
        for (uint tj = 0u; tj < tn; tj += KB) key_block(t0 + tj, tj);
    }
#else
    for (uint j0 = 0u; j0 < nk; j0 += KB) key_block(j0, 0u);
#endif

    [[unroll]] for (uint t = 0u; t < TQ; t++) {
        uint r = wrow0 + t * WG + lid;
        if (r >= p.nq) continue;
        uint ob = p.o_off + z * p.o_bh + r * p.o_row;
        if (STATE_OUT != 0u) {
            [[unroll]] for (uint d = 0u; d < D; d++) o[ob + d] = acc[t][d];
            o[ob + D] = m[t];
            o[ob + D + 1u] = l[t];
        } else {
            // a row that sees no key at all (causal with Lk < Lq) gets zeros
            float inv = l[t] > 0.0 ? 1.0 / l[t] : 0.0;
            [[unroll]] for (uint d = 0u; d < D; d++) o[ob + d] = acc[t][d] * inv;
        }
    }
}
