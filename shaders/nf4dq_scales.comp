#version 450
// The block scales of an NF4_DQ weight (runtime/quant.h) as plain f32, one
// invocation per 64-element block: map[code] * absmax2 + offset, rounded as
// the host's double quantisation does (nf4.glsl's DECLARE_NF4_SCALE). A
// pre-pass of the matmul (runtime/ops/nf4dq_scales.c): the product then reads
// one f32 per block instead of a code, a map entry and an absmax2, which cost
// the input gradient (B read along N, a scale per four elements) a third of
// its time on lavapipe.
#include "common.glsl"
layout(local_size_x = 256) in;
DECLARE_INPUT(0, W)
layout(binding = 1) writeonly buffer S { float s[]; };
layout(push_constant) uniform P {
    uint nblocks;
    uint map_off;   // f32 index of the weight's map in binding 0
    uint qcode_off; // word index of its u8 scale codes in binding 0
    uint s_off;     // element offset of the output in binding 1
} p;

#include "nf4.glsl"
DECLARE_NF4_SCALE(W)

void main() {
    uint blk = flat_index(256u);
    if (blk >= p.nblocks) return;
    s[p.s_off + blk] = W_nf4_scale(DT_NF4_DQ, blk, p.map_off, p.qcode_off);
}
