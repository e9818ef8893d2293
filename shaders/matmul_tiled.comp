#version 450
// Matmul for GPUs: a 16x16 workgroup computes a 64x64 tile of C, staging
// 64x16 slices of A and B in shared memory (each element read from global
// memory once per workgroup), each invocation accumulating 4x4 outputs
// strided by 16 so that shared-memory reads and C stores are contiguous
// across neighbouring invocations. Loads into shared memory run along the
// operand's contiguous dimension where known (AVEC/BVEC say which) so that
// they coalesce. Any M, N, K and strides: out-of-range elements read as 0.
// Chosen for devices that are not CPUs (runtime/ops/matmul.c); CI runs it on
// lavapipe through VKLORA_MATMUL_VARIANT=tiled.
#include "matmul_common.glsl"
layout(local_size_x = 16, local_size_y = 16) in;

#define BM 64u
#define BN 64u
#define BK 16u
shared float As[BK][BM + 1u];
shared float Bs[BK][BN + 1u];

void main() {
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    uint tid = ty * 16u + tx;
    uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
    uint z = gl_WorkGroupID.z;
    uint z0 = z / p.nb1, z1 = z % p.nb1;
    uint abase = p.a_off + z0 * p.sa0 + z1 * p.sa1;
    uint bbase = p.b_off + z0 * p.sb0 + z1 * p.sb1;

    float acc[4][4];
    for (uint i = 0u; i < 4u; i++)
        for (uint j = 0u; j < 4u; j++) acc[i][j] = 0.0;

    for (uint k0 = 0u; k0 < p.K; k0 += BK) {
        for (uint q = 0u; q < 4u; q++) {
            uint e = tid + 256u * q;
            // A: K fastest when A is K-contiguous, else M fastest
            uint kk = AVEC == 1u ? e % BK : e / BM;
            uint mm = AVEC == 1u ? e / BK : e % BM;
            uint m = m0 + mm, k = k0 + kk;
            As[kk][mm] = (m < p.M && k < p.K) ? A_load(abase + m * p.sam + k * p.sak, ADT) : 0.0;
            uint kb = BVEC == 1u ? e % BK : e / BN;
            uint nn = BVEC == 1u ? e / BK : e % BN;
            uint n = n0 + nn;
            k = k0 + kb;
            Bs[kb][nn] = (n < p.N && k < p.K) ? B_get(bbase + k * p.sbk + n * p.sbn) : 0.0;
        }
        barrier();
        for (uint kk = 0u; kk < BK; kk++) {
            float av[4], bv[4];
            for (uint i = 0u; i < 4u; i++) av[i] = As[kk][ty + 16u * i];
            for (uint j = 0u; j < 4u; j++) bv[j] = Bs[kk][tx + 16u * j];
            for (uint i = 0u; i < 4u; i++)
                for (uint j = 0u; j < 4u; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
        }
        barrier();
    }

    uint cbase = p.c_off + z * p.M * p.N;
    uint a2base = p.a2_off + z * p.sa2z;
    for (uint i = 0u; i < 4u; i++) {
        uint m = m0 + ty + 16u * i;
        if (m >= p.M) break;
        for (uint j = 0u; j < 4u; j++) {
            uint n = n0 + tx + 16u * j;
            if (n >= p.N) break;
            float v = mm_epilogue(acc[i][j], n);
            if (HAS_SEG2 != 0u)
                for (uint r = 0u; r < p.K2; r++)
                    v = fma(A2_load(a2base + m * p.sa2m + r, A2DT), B2_load(p.b2_off + r * p.sb2k + n * p.sb2n, B2DT), v);
            c[cbase + m * p.N + n] = v;
        }
    }
}
