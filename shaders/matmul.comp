#version 450
// C[z] = A[z] . B[z] (+ bias), fp32 accumulation; A is [M,K], B is [K,N] as
// strided views (so either operand may be transposed), C is f32 [M,N]
// contiguous per batch. A and B may be stored as f32, f16 or bf16.
//
// Register-blocked: each invocation computes a TM x TN tile of C with no
// shared memory and no barriers, which is what runs fast on lavapipe (loads
// and barriers, not arithmetic, set its speed). Out-of-range rows/columns
// are clamped on load and skipped on store, so any M, N, K works.
// CPU reference: runtime/ref/ref_matmul.c. Op: runtime/ops/matmul.c.
#include "common.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 4;
layout(constant_id = 2) const uint TN = 8;
layout(constant_id = 3) const uint ADT = 0;
layout(constant_id = 4) const uint BDT = 0;
layout(constant_id = 5) const uint HAS_BIAS = 0;
layout(constant_id = 6) const uint BIASDT = 0;
DECLARE_INPUT(0, A)
DECLARE_INPUT(1, B)
layout(binding = 2) writeonly buffer C { float c[]; };
DECLARE_INPUT(3, BIAS)
layout(push_constant) uniform P {
    uint M, N, K;
    uint nb1;                  // batch = z / nb1, z % nb1 (two batch dims)
    uint a_off, b_off, c_off, bias_off;
    uint sam, sak, sbk, sbn;   // element strides inside one matrix
    uint sa0, sa1, sb0, sb1;   // batch strides (0 = broadcast)
} p;

void main() {
    uint tn = gl_GlobalInvocationID.x;   // tile column
    uint m0 = gl_WorkGroupID.y * TM;
    uint n0 = tn * TN;
    if (n0 >= p.N) return;
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

    for (uint k = 0u; k < p.K; k++) {
        float av[TM], bv[TN];
        for (uint i = 0u; i < TM; i++) av[i] = A_load(arow[i] + k * p.sak, ADT);
        for (uint j = 0u; j < TN; j++) bv[j] = B_load(bcol[j] + k * p.sbk, BDT);
        for (uint i = 0u; i < TM; i++)
            for (uint j = 0u; j < TN; j++) acc[i][j] = fma(av[i], bv[j], acc[i][j]);
    }

    uint cbase = p.c_off + z * p.M * p.N;
    for (uint i = 0u; i < TM; i++) {
        uint m = m0 + i;
        if (m >= p.M) break;
        for (uint j = 0u; j < TN; j++) {
            uint n = n0 + j;
            if (n >= p.N) break;
            float v = acc[i][j];
            if (HAS_BIAS != 0u) v += BIAS_load(p.bias_off + n, BIASDT);
            c[cbase + m * p.N + n] = v;
        }
    }
}
