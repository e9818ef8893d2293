#version 450
// AdamW with 8-bit blockwise moments (bitsandbytes' AdamW8bit state), in
// place. One workgroup per block of 256 elements:
//   m, v <- map[code] * absmax of the block (dequantize)
//   the f32 update of adamw.comp (clip factor, rate multiplier, decay)
//   new absmax = max |m|, max v over the block (a shared-memory reduction)
//   code <- nearest map entry to value / new absmax (a negative m never
//   rounds to the zero code, so m keeps its sign)
// Codes are bytes packed four to a word: each block owns 128 whole words
// (64 of m codes, then 64 of v codes), so no two workgroups share a word.
// Elements past n in the tail block count as zeros. A skipped step (NaN/Inf
// gradient) returns before touching p, codes or absmax.
// CPU reference: vkl_ref_adamw8 (runtime/ref/ref_adamw8.c). Op: runtime/adamw8.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(binding = 0) buffer Pm { float p[]; };
DECLARE_INPUT(1, G)
layout(binding = 2) buffer C { uint codes[]; };
layout(binding = 3) buffer A { float absmax[]; };        // per block: m, v
layout(binding = 4) readonly buffer H { float h[]; };    // lr, b1, b2, eps, wd, bc1, bc2, max_norm
layout(binding = 5) readonly buffer S { float st[]; };   // norm, clip factor, skip
layout(binding = 6) readonly buffer Q { float qmap[]; }; // signed map [0,256), unsigned [256,512)
// n: elements in this window; c_off: word offset of its codes; a_off: float offset of its absmax
layout(push_constant) uniform P { uint n, p_off, g_off, c_off, a_off; float lr_mult; } pc;

shared float smap[512];
shared float red_m[256], red_v[256];
shared uint cm[256], cv[256];

// Index of the map entry nearest to x in the sorted map at base: the first
// entry >= x, or the one below it when x is below their midpoint.
uint nearest(uint base, float x) {
    uint lo = 0u, hi = 255u; // first index in [lo, hi] with map >= x (255 if none)
    for (int k = 0; k < 8; k++) {
        uint mid = (lo + hi) >> 1u;
        if (smap[base + mid] >= x) hi = mid; else lo = mid + 1u;
    }
    uint j = lo;
    if (j > 0u && x < (smap[base + j - 1u] + smap[base + j]) * 0.5) j -= 1u;
    return j;
}

void main() {
    uint lid = gl_LocalInvocationIndex;
    uint blk = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    uint nblk = (pc.n + 255u) / 256u;
    if (blk >= nblk || st[2] != 0.0) return; // uniform over the workgroup
    smap[lid] = qmap[lid];
    smap[256u + lid] = qmap[256u + lid];
    uint i = blk * 256u + lid;
    bool live = i < pc.n;
    float am = absmax[pc.a_off + 2u * blk], av = absmax[pc.a_off + 2u * blk + 1u];
    uint wm = codes[pc.c_off + blk * 128u + (lid >> 2u)], wv = codes[pc.c_off + blk * 128u + 64u + (lid >> 2u)];
    uint sh = (lid & 3u) * 8u;
    barrier();
    precise float mv = 0.0, vv = 0.0;
    if (live) {
        float lr = h[0] * pc.lr_mult, b1 = h[1], b2 = h[2], eps = h[3], wd = h[4];
        float g = G_load(pc.g_off + i, DT_F32) * st[1];
        precise float m0 = smap[(wm >> sh) & 255u] * am;
        precise float v0 = smap[256u + ((wv >> sh) & 255u)] * av;
        mv = b1 * m0 + (1.0 - b1) * g;
        vv = b2 * v0 + (1.0 - b2) * g * g;
        float pv = p[pc.p_off + i] * (1.0 - lr * wd);
        p[pc.p_off + i] = pv - lr * (mv / h[5]) / (sqrt(vv / h[6]) + eps);
    }
    red_m[lid] = abs(mv);
    red_v[lid] = vv;
    barrier();
    for (uint s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_m[lid] = max(red_m[lid], red_m[lid + s]);
            red_v[lid] = max(red_v[lid], red_v[lid + s]);
        }
        barrier();
    }
    float nm = red_m[0], nv = red_v[0];
    uint c1 = nearest(0u, nm > 0.0 ? mv / nm : 0.0);
    if (mv < 0.0 && smap[c1] >= 0.0) c1 -= 1u;
    uint c2 = nearest(256u, nv > 0.0 ? vv / nv : 0.0);
    cm[lid] = c1;
    cv[lid] = c2;
    barrier();
    if (lid == 0u) {
        absmax[pc.a_off + 2u * blk] = nm;
        absmax[pc.a_off + 2u * blk + 1u] = nv;
    }
    if (lid < 128u) {
        uint w = lid & 63u, b = lid < 64u ? 0u : 1u, word = 0u;
        for (uint k = 0u; k < 4u; k++) word |= (b == 0u ? cm[4u * w + k] : cv[4u * w + k]) << (8u * k);
        codes[pc.c_off + blk * 128u + lid] = word;
    }
}
