#version 450
// In-place w += d (merge) or w -= d (unmerge) for a LoRA delta d (f32, made
// by the same matmul both times), on f32 weights or f16 weights packed two
// per word. Where the result stays in w's binade the delta is first rounded
// to w's own grid (a multiple of one ulp of w, ties to even), so the sum is
// exact and unmerge - which rounds the same delta to the same grid - gives
// back w bit for bit; plain rounding would lose w whenever the sum is a tie.
// Where the binade changes the plain sum is used (then unmerge is within one
// ulp when the sum moved up a binade: the coarser grid cannot hold w).
// Op: runtime/ops/lora.c (vkl_lora_merge / vkl_lora_unmerge).
#include "common.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint WDT = 0;      // DT_F32 or DT_F16
layout(constant_id = 1) const uint UNMERGE = 0;
layout(binding = 0) buffer W { uint w[]; };
layout(binding = 1) readonly buffer D { float d[]; };
layout(push_constant) uniform P {
    uint n;        // elements in this window
    uint w_off;    // element offsets of the window's first element (w_off even for f16)
    uint d_off;
} p;

// v +/- d, with d on v's grid when that result keeps v's sign and exponent;
// mant = mantissa bits of the storage type, lo/hi = its normal exponent range
// as biased f32 exponents.
float step_exact(float v, float dv, uint mant, uint lo, uint hi) {
    uint ev = floatBitsToUint(v) >> 23u;   // sign and exponent
    uint e = ev & 0xffu;
    if (e >= lo && e <= hi) {
        int k = int(e) - 127 - int(mant);  // v's ulp is 2^k
        float dq = ldexp(roundEven(ldexp(dv, -k)), k);
        float s = UNMERGE != 0u ? v - dq : v + dq;
        // The same test in both directions: a merge that took this path left
        // s in w's binade, so unmerge rounds d to the same grid and lands on w.
        if (floatBitsToUint(s) >> 23u == ev) return s;
    }
    return UNMERGE != 0u ? v - dv : v + dv;
}

void main() {
    uint t = flat_index(64u);
    if (WDT == DT_F32) {
        if (t >= p.n) return;
        uint i = p.w_off + t;
        w[i] = floatBitsToUint(step_exact(uintBitsToFloat(w[i]), d[p.d_off + t], 23u, 24u, 254u));
    } else {
        uint e0 = 2u * t;
        if (e0 >= p.n) return;
        uint wi = (p.w_off + e0) >> 1u;
        vec2 v = unpackHalf2x16(w[wi]);
        // f16 normals have biased f32 exponents 113..142
        v.x = step_exact(v.x, d[p.d_off + e0], 10u, 113u, 142u);
        if (e0 + 1u < p.n) v.y = step_exact(v.y, d[p.d_off + e0 + 1u], 10u, 113u, 142u);
        w[wi] = pack_half2(v);
    }
}
