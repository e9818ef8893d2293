#version 450
// Backward of the embedding lookup (embedding.comp): dtable[v, :] = sum of
// dy[r, :] over the rows r with ids[r] == v, summed in increasing r with no
// atomics, so the result is bit-reproducible. Two passes:
//   PASS 0 (index): idx[v] = the first r with ids[r] == v, or -1 (v < V);
//                   idx[V + r] = the next r' > r with ids[r'] == ids[r], or -1.
//   PASS 1 (sum):   one invocation per (table row, column) follows its chain.
// Ids outside [0, V) read zeros in the forward and get no gradient.
// CPU reference: vkl_ref_embedding_backward (runtime/ref/ref_embed.c). Op: runtime/ops/embed.c.
// @variant embedding_grad_index PASS=0
// @variant embedding_grad PASS=1
#include "common.glsl"
#if PASS == 0
layout(local_size_x = 64) in;
layout(binding = 0) readonly buffer Ids { int ids[]; };
layout(binding = 1) writeonly buffer Idx { int idx[]; };
layout(push_constant) uniform P { uint V, n, ids_off, idx_off; } p;

void main() {
    uint i = flat_index(64u);
    if (i >= p.V + p.n) return;
    int found = -1;
    if (i < p.V) {
        for (uint r = 0u; r < p.n; r++)
            if (ids[p.ids_off + r] == int(i)) {
                found = int(r);
                break;
            }
    } else {
        uint r = i - p.V;
        int id = ids[p.ids_off + r];
        if (id >= 0 && uint(id) < p.V)
            for (uint r2 = r + 1u; r2 < p.n; r2++)
                if (ids[p.ids_off + r2] == id) {
                    found = int(r2);
                    break;
                }
    }
    idx[p.idx_off + i] = found;
}
#else
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Idx { int idx[]; };
layout(binding = 1) readonly buffer DYB { float dy[]; };
layout(binding = 2) writeonly buffer DT { float dt[]; };
layout(push_constant) uniform P { uint V, D, nrows, row_first, idx_off, dy_off, dt_off; } p;

void main() {
    uint i = flat_index(256u);
    if (i >= p.nrows * p.D) return;
    uint v = p.row_first + i / p.D, col = i % p.D;
    float s = 0.0;
    for (int r = idx[p.idx_off + v]; r >= 0; r = idx[p.idx_off + p.V + uint(r)]) s += dy[p.dy_off + uint(r) * p.D + col];
    dt[p.dt_off + i] = s;
}
#endif
