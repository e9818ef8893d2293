// Workgroup-wide sum and max of one float per invocation, the result returned
// to every invocation. Needs `WG` (the workgroup size, a power of two <= 64)
// defined before inclusion. With SUBGROUP the values are combined with
// subgroup arithmetic and one shared slot per subgroup (two barriers);
// without it (profile `portable`, devices lacking subgroup arithmetic) with a
// shared-memory tree. Must be called in workgroup-uniform control flow.
shared float wg_red[WG];

float wg_combine(float a, float b, bool is_max) { return is_max ? max(a, b) : a + b; }

float wg_reduce(float v, bool is_max) {
#ifdef SUBGROUP
    v = is_max ? subgroupMax(v) : subgroupAdd(v);
    if (gl_SubgroupInvocationID == 0u) wg_red[gl_SubgroupID] = v;
    barrier();
    float r = wg_red[0];
    for (uint i = 1u; i < gl_NumSubgroups; i++) r = wg_combine(r, wg_red[i], is_max);
    barrier();   // wg_red is reused by the next call
    return r;
#else
    uint t = gl_LocalInvocationIndex;
    wg_red[t] = v;
    barrier();
    for (uint s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) wg_red[t] = wg_combine(wg_red[t], wg_red[t + s], is_max);
        barrier();
    }
    float r = wg_red[0];
    barrier();
    return r;
#endif
}
float wg_sum(float v) { return wg_reduce(v, false); }
float wg_max(float v) { return wg_reduce(v, true); }
