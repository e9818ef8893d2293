#version 450
// Sums x over the dimensions where the output has size 1 (the gradient of a
// broadcast): y[o] = sum over r of x[o, r]. One invocation per output element.
// CPU reference: vkl_ref_sum_to (runtime/ref/ref_grad.c). Op: vkl_sum_to.
#include "common.glsl"
layout(local_size_x = 64) in;
DECLARE_INPUT(0, X)
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n;              // output elements
    uint oshape[4];      // output shape (4-D)
    uint ostride[4];     // x strides along the kept dims (0 where reduced)
    uint rshape[4];      // reduced index space (1 where kept)
    uint rstride[4];     // x strides along the reduced dims
    uint x_off, y_off;
} p;
void main() {
    uint o = flat_index(64u);
    if (o >= p.n) return;
    uint base = p.x_off + strided_offset(o, U4(p.oshape), U4(p.ostride));
    uint nr = p.rshape[0] * p.rshape[1] * p.rshape[2] * p.rshape[3];
    float acc = 0.0;
    for (uint r = 0u; r < nr; r++) acc += X_load(base + strided_offset(r, U4(p.rshape), U4(p.rstride)), DT_F32);
    y[p.y_off + o] = acc;
}
