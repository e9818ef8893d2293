#version 450
// Matmul for CPU devices (lavapipe): each invocation computes a TM x TN tile
// of C in registers, with no shared memory and no barriers, because there
// loads and barriers, not arithmetic, set the speed: every load whose address
// differs per lane is a scalar loop over the lanes. So K is walked four at a
// time with vec4 loads where the layout allows (AVEC/BVEC), and the lanes of
// a workgroup share their rows of A (lanes run along N), whose loads are then
// the same for all lanes. Out-of-range rows/columns are clamped on load and
// skipped on store, so any M, N, K works.
// CPU reference: runtime/ref/ref_matmul.c. Op: runtime/ops/matmul.c.
#include "matmul_common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 4;
layout(constant_id = 2) const uint TN = 8;
// 1: lanes run along M instead (sharing their columns of B), for products
// too narrow to give every lane its own columns (a LoRA down-projection).
layout(constant_id = 13) const uint LANES_M = 0;

void main() {
    uint tile_m = LANES_M != 0u ? gl_WorkGroupID.y * gl_WorkGroupSize.x + gl_LocalInvocationID.x : gl_WorkGroupID.y;
    uint tile_n = LANES_M != 0u ? gl_WorkGroupID.x : gl_GlobalInvocationID.x;
    uint m0 = tile_m * TM, n0 = tile_n * TN;
    if (n0 >= p.N || m0 >= p.M) return;
    uint z = gl_WorkGroupID.z;
    uint z0 = z / p.nb1, z1 = z % p.nb1;
    uint abase = p.a_off + z0 * p.sa0 + z1 * p.sa1;
    uint bbase = p.b_off + z0 * p.sb0 + z1 * p.sb1;

    uint arow[TM];
    for (uint i = 0u; i < TM; i++) arow[i] = abase + min(m0 + i, p.M - 1u) * p.sam;
    uint bcol[TN];
    for (uint j = 0u; j < TN; j++) bcol[j] = bbase + min(n0 + j, p.N - 1u) * p.sbn;

    float acc[TM][TN];
    for (uint i = 0u; i < TM; i++)
        for (uint j = 0u; j < TN; j++) acc[i][j] = 0.0;

    // a quantised B read along K: each column's block scale, loaded only
    // when its block changes (NF4: every 16 vector loads; GGUF: its scale
    // group, every 4 or 8)
    float bscale[TN];
    vec2 bgscale[TN]; // a GGUF B: its scale group's (gguf_scales)
    uint bblock[TN];
    for (uint j = 0u; j < TN; j++) bblock[j] = 0xffffffffu;

    uint K4 = p.K & ~3u;
    for (uint k = 0u; k < K4; k += 4u) {
        vec4 av[TM];   // A[m_i][k..k+3]
        vec4 bv[TN];   // B[k..k+3][n_j]
        for (uint i = 0u; i < TM; i++) {
            if (AVEC == 1u) av[i] = A_load4(arow[i] + k);
            else av[i] = vec4(A_load(arow[i] + k * p.sak, ADT), A_load(arow[i] + (k + 1u) * p.sak, ADT),
                              A_load(arow[i] + (k + 2u) * p.sak, ADT), A_load(arow[i] + (k + 3u) * p.sak, ADT));
        }
        if (BVEC == 2u) {
            // rows of B along N, transposed into columns in registers
            for (uint j4 = 0u; j4 < TN / 4u; j4++) {
                uint col = bbase + min(n0 + 4u * j4, p.N - 4u);
                vec4 r0 = B_load4(col + k * p.sbk), r1 = B_load4(col + (k + 1u) * p.sbk);
                vec4 r2 = B_load4(col + (k + 2u) * p.sbk), r3 = B_load4(col + (k + 3u) * p.sbk);
                bv[4u * j4] = vec4(r0.x, r1.x, r2.x, r3.x);
                bv[4u * j4 + 1u] = vec4(r0.y, r1.y, r2.y, r3.y);
                bv[4u * j4 + 2u] = vec4(r0.z, r1.z, r2.z, r3.z);
                bv[4u * j4 + 3u] = vec4(r0.w, r1.w, r2.w, r3.w);
            }
        } else {
            for (uint j = 0u; j < TN; j++) {
                if (BVEC == 1u && is_gguf(BDT)) {
                    uint i = bcol[j] + k, grp = i / GGUF_GROUP(BQT);
                    if (grp != bblock[j]) {
                        bblock[j] = grp;
                        bgscale[j] = gguf_scales(BQT, p.bq_off, i);
                    }
                    bv[j] = gguf_value4_s(BQT, p.bq_off, i, bgscale[j]);
                } else if (BVEC == 1u && is_nf4(BDT)) {
                    uint i = bcol[j] + k, blk = (i - p.b_off) >> 6u;
                    if (blk != bblock[j]) {
                        bblock[j] = blk;
                        bscale[j] = B_scale(i);
                    }
                    bv[j] = nf4_value4(B_u[i >> 3u] >> (((i >> 2u) & 1u) * 16u), bscale[j]);
                } else if (BVEC == 1u) bv[j] = B_load4(bcol[j] + k);
                else bv[j] = vec4(B_get(bcol[j] + k * p.sbk), B_get(bcol[j] + (k + 1u) * p.sbk),
                                  B_get(bcol[j] + (k + 2u) * p.sbk), B_get(bcol[j] + (k + 3u) * p.sbk));
            }
        }
        for (uint i = 0u; i < TM; i++)
            for (uint j = 0u; j < TN; j++) {
                float s = acc[i][j];
                s = fma(av[i].x, bv[j].x, s);
                s = fma(av[i].y, bv[j].y, s);
                s = fma(av[i].z, bv[j].z, s);
                acc[i][j] = fma(av[i].w, bv[j].w, s);
            }
    }
    for (uint k = K4; k < p.K; k++) {
        float av[TM], bv[TN];
        for (uint i = 0u; i < TM; i++) av[i] = A_load(arow[i] + k * p.sak, ADT);
        for (uint j = 0u; j < TN; j++) bv[j] = B_get(bcol[j] + k * p.sbk);
        for (uint i = 0u; i < TM; i++)
            for (uint j = 0u; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }

    for (uint i = 0u; i < TM; i++)
        for (uint j = 0u; j < TN; j++) acc[i][j] = mm_epilogue(acc[i][j], min(n0 + j, p.N - 1u));

    if (HAS_SEG2 != 0u) {
        uint a2base = p.a2_off + z * p.sa2z;
        for (uint r = 0u; r < p.K2; r++) {
            float hv[TM], uv[TN];
            for (uint i = 0u; i < TM; i++) hv[i] = A2_load(a2base + min(m0 + i, p.M - 1u) * p.sa2m + r, A2DT);
            for (uint j = 0u; j < TN; j++) uv[j] = B2_load(p.b2_off + r * p.sb2k + min(n0 + j, p.N - 1u) * p.sb2n, B2DT);
            for (uint i = 0u; i < TM; i++)
                for (uint j = 0u; j < TN; j++) acc[i][j] = fma(hv[i], uv[j], acc[i][j]);
        }
    }

    uint cbase = p.c_off + z * p.M * p.N;
    for (uint i = 0u; i < TM; i++) {
        uint m = m0 + i;
        if (m >= p.M) break;
        for (uint j = 0u; j < TN; j++) {
            uint n = n0 + j;
            if (n >= p.N) break;
            c[cbase + m * p.N + n] = acc[i][j];
        }
    }
}
