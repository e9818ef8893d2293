#version 450
// y[r, :] = table[ids[r], :]; an id outside [0, V) gives a row of zeros and
// is never used as an address. The table may be larger than one storage
// binding: it is bound as up to six windows of `rows_per_win` rows each, and
// each id picks its window. y f32, contiguous. A block-quantised table (TDT
// DT_NF4 or DT_NF4_DQ, runtime/quant.h) is one window holding the whole
// weight, contiguous; toff[0] is then twice the byte offset of its codes and
// tq_scale / tq_qcode locate its scales (nf4.glsl).
// CPU reference: runtime/ref/ref_embed.c. Op: runtime/ops/embed.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint TDT = 0;
DECLARE_INPUT(0, T0)
DECLARE_INPUT(1, T1)
DECLARE_INPUT(2, T2)
DECLARE_INPUT(3, T3)
DECLARE_INPUT(4, T4)
DECLARE_INPUT(5, T5)
layout(binding = 6) readonly buffer Ids { int ids[]; };
layout(binding = 7) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint n, D, V, rows_per_win, ids_off, y_off, st_row, st_col;
    uint toff[4]; uint toff_hi[4];   // element offset of each window (windows 4 and 5 in toff_hi)
    uint tq_scale, tq_qcode;
} p;

#include "nf4.glsl"
DECLARE_NF4_SCALE(T0)

void main() {
    uint i = flat_index(256u);
    if (i >= p.n) return;
    uint row = i / p.D, col = i - row * p.D;
    int id = ids[p.ids_off + row];
    float v = 0.0;
    if (id >= 0 && uint(id) < p.V) {
        uint w = uint(id) / p.rows_per_win;
        uint off = (uint(id) - w * p.rows_per_win) * p.st_row + col * p.st_col;
        if (is_nf4(TDT)) {
            uint e = uint(id) * p.D + col, i = p.toff[0] + e;
            v = nf4_value(T0_u[i >> 3u] >> (((i >> 1u) & 3u) * 8u), i, T0_nf4_scale(TDT, e >> 6u, p.tq_scale, p.tq_qcode));
        } else if (w == 0u) v = T0_load(p.toff[0] + off, TDT);
        else if (w == 1u) v = T1_load(p.toff[1] + off, TDT);
        else if (w == 2u) v = T2_load(p.toff[2] + off, TDT);
        else if (w == 3u) v = T3_load(p.toff[3] + off, TDT);
        else if (w == 4u) v = T4_load(p.toff_hi[0] + off, TDT);
        else v = T5_load(p.toff_hi[1] + off, TDT);
    }
    y[p.y_off + i] = v;
}
