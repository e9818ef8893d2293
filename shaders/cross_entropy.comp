#version 450
// Cross-entropy with an ignore index, as four modes (spec constant MODE):
//   0 rows:      out[r] = logsumexp(a[r,:]) - a[r, t[r]]  (0 for an ignored row)
//   1 rows grad: out[r,v] = b[r] * (softmax(a[r,:])[v] - (v == t[r]))  (0 for an ignored row)
//   2 mean:      out[0] = sum_r a[r] / #valid rows          (one workgroup)
//   3 mean grad: out[r] = valid(r) ? a[0] / #valid : 0      (one workgroup)
// A row is valid when its target lies in [0, V) and differs from the ignore
// index. Modes 0/1 run one workgroup per row of a window of rows; logsumexp
// subtracts the row maximum. Modes 2/3 see all rows (one small binding).
// CPU reference: runtime/ref/ref_cross_entropy.c. Op: runtime/ops/cross_entropy.c.
// @variant cross_entropy
// @variant cross_entropy_subgroup SUBGROUP=1
#extension GL_KHR_shader_subgroup_arithmetic : enable
#define WG 64u
#include "common.glsl"
#include "wg_reduce.glsl"
layout(local_size_x = 64) in;
layout(constant_id = 0) const uint MODE = 0;
layout(binding = 0) readonly buffer A { float a[]; };
layout(binding = 1) readonly buffer T { int t[]; };
layout(binding = 2) readonly buffer Bb { float b[]; };
layout(binding = 3) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P {
    uint rows;       // rows in this window (modes 0/1), all rows (2/3)
    uint V;          // row length (modes 0/1)
    uint row_first;  // first row of the window: index into t and b
    uint a_off, t_off, b_off, y_off;
    int ignore_index;
} p;

bool valid_target(int tg) { return tg >= 0 && uint(tg) < p.V && tg != p.ignore_index; }

void main() {
    uint tid = gl_LocalInvocationIndex;
    if (MODE >= 2u) {
        // one workgroup over every row
        float s = 0.0, cnt = 0.0;
        for (uint r = tid; r < p.rows; r += WG) {
            bool ok = valid_target(t[p.t_off + r]);
            cnt += ok ? 1.0 : 0.0;
            if (MODE == 2u) s += a[p.a_off + r];
        }
        cnt = wg_sum(cnt);
        if (MODE == 2u) {
            s = wg_sum(s);
            if (tid == 0u) y[p.y_off] = s / cnt;
        } else {
            float g = a[p.a_off] / cnt;
            for (uint r = tid; r < p.rows; r += WG) y[p.y_off + r] = valid_target(t[p.t_off + r]) ? g : 0.0;
        }
        return;
    }
    uint r = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (r >= p.rows) return;   // uniform per workgroup
    int tg = t[p.t_off + p.row_first + r];
    bool ok = valid_target(tg);
    uint base = p.a_off + r * p.V;
    float m = -1.0 / 0.0;
    for (uint v = tid; v < p.V; v += WG) m = max(m, a[base + v]);
    m = wg_max(m);
    float s = 0.0;
    for (uint v = tid; v < p.V; v += WG) s += exp(a[base + v] - m);
    s = wg_sum(s);
    if (MODE == 0u) {
        if (tid == 0u) y[p.y_off + r] = ok ? (m + log(s)) - a[base + uint(tg)] : 0.0;
    } else {
        float g = ok ? b[p.b_off + p.row_first + r] : 0.0;
        float inv = 1.0 / s;
        uint ybase = p.y_off + r * p.V;
        for (uint v = tid; v < p.V; v += WG) {
            float pr = exp(a[base + v] - m) * inv;
            y[ybase + v] = ok ? g * (pr - (int(v) == tg ? 1.0 : 0.0)) : 0.0;
        }
    }
}
