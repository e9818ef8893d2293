#version 450
// y = a OP b with numpy broadcasting; y is f32 and contiguous.
// CPU reference: runtime/ref/ref_elementwise.c. Op: runtime/ops/elementwise.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint OP = 0;      // 0 add, 1 sub, 2 mul, 3 div
layout(constant_id = 1) const uint ADT = 0;
layout(constant_id = 2) const uint BDT = 0;
DECLARE_INPUT(0, A)
DECLARE_INPUT(1, B)
layout(binding = 2) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n, first;            // window: elements [first, first+n) of y
    uint shape[4];              // y's shape (4-D, leading 1s)
    uint sa[4]; uint sb[4];             // strides of a and b (0 where broadcast)
    uint a_off, b_off, y_off;
    uint a_local, b_local;    // 1: operand laid out like y and bound per window
} p;
void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    uint g = p.first + i;
    uint ia = p.a_local != 0u ? i : strided_offset(g, U4(p.shape), U4(p.sa));
    uint ib = p.b_local != 0u ? i : strided_offset(g, U4(p.shape), U4(p.sb));
    float a = A_load(p.a_off + ia, ADT), b = B_load(p.b_off + ib, BDT), r;
    if (OP == 0u) r = a + b;
    else if (OP == 1u) r = a - b;
    else if (OP == 2u) r = a * b;
    else r = a / b;
    y[p.y_off + i] = r;
}
