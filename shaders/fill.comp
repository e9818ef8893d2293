#version 450
// y[i] = value for a contiguous f32 window. Op: vkl_fill (runtime/ops/grad_ops.c).
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint n, y_off; float value; } p;
void main() {
    uint i = flat_index(256u);
    if (i < p.n) y[p.y_off + i] = p.value;
}
