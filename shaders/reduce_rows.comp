#version 450
// y[r] = sum or max over the last dimension of x (rows of length n).
// One workgroup per row. With SUBGROUP the partial results are combined with
// subgroup operations (one barrier); without it (device profile `portable`,
// or devices lacking subgroup arithmetic) with a shared-memory tree.
// CPU reference: runtime/ref/ref_reduce.c. Op: runtime/ops/reduce.c.
// @variant reduce_rows
// @variant reduce_rows_subgroup SUBGROUP=1
#extension GL_KHR_shader_subgroup_arithmetic : enable
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint OP = 0;   // 0 sum, 1 max
layout(constant_id = 1) const uint XDT = 0;
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint rows, n;           // rows in this window, row length
    uint row_first;         // first row of the window (for strided addressing)
    uint rshape[4];           // shape of the row index space (3-D in .yzw, .x = 1)
    uint sx[4];               // strides of x: rows (.yzw over rshape) and .x = along the row
    uint x_off, y_off, x_local_stride;  // x_local_stride != 0: row r starts at r * that
} p;
shared float part[64];

float combine(float a, float b) { return OP == 0u ? a + b : max(a, b); }

void main() {
    uint r = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (r >= p.rows) return;   // uniform per workgroup: safe before barriers
    uint base = p.x_local_stride != 0u ? r * p.x_local_stride
                                       : strided_offset(p.row_first + r, U4(p.rshape), uvec4(0u, p.sx[1], p.sx[2], p.sx[3]));
    uint t = gl_LocalInvocationIndex;
    float acc = OP == 0u ? 0.0 : -1.0 / 0.0;
    for (uint k = t; k < p.n; k += 64u) acc = combine(acc, X_load(p.x_off + base + k * p.sx[0], XDT));
#ifdef SUBGROUP
    acc = OP == 0u ? subgroupAdd(acc) : subgroupMax(acc);
    if (gl_SubgroupInvocationID == 0u) part[gl_SubgroupID] = acc;
    barrier();
    if (t == 0u) {
        float s = part[0];
        for (uint i = 1u; i < gl_NumSubgroups; i++) s = combine(s, part[i]);
        y[p.y_off + r] = s;
    }
#else
    part[t] = acc;
    barrier();
    for (uint s = 32u; s > 0u; s >>= 1u) {
        if (t < s) part[t] = combine(part[t], part[t + s]);
        barrier();
    }
    if (t == 0u) y[p.y_off + r] = part[0];
#endif
}
