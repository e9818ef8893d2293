#version 450
// y = x, except y = value where key column j is hidden from query row i by a
// causal mask (j > i + shift); x and y contiguous [..., Lq, Lk] f32. The
// attention gradient recomputes masked probabilities with it.
// CPU reference: vkl_ref_causal_mask (runtime/ref/ref_attention.c). Op: runtime/ops/attention_grad.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X { float x[]; };
layout(binding = 1) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint n, first, lq, lk; int shift; uint x_off, y_off; float value; } p;
void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    uint g = p.first + i;
    int col = int(g % p.lk), row = int((g / p.lk) % p.lq);
    y[p.y_off + i] = col > row + p.shift ? p.value : x[p.x_off + i];
}
