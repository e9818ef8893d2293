#version 450
// From the summed squares of all gradients: st = [norm, clip factor, skip].
// A NaN or infinite norm sets skip (the optimiser leaves every tensor alone
// this step). The gradients may carry a loss scale S (mixed precision):
// h[8] = 1/S, the norm is sqrt(sum) / S, clip = min(1, max_norm / (norm +
// 1e-6)) (max_norm <= 0: 1), and the factor the update multiplies the
// gradients by is clip / S, which unscales them in the same multiply.
layout(local_size_x = 1) in;
layout(binding = 0) readonly buffer SQ { float sq[]; };
layout(binding = 1) readonly buffer H { float h[]; };
layout(binding = 2) writeonly buffer S { float st[]; };
layout(push_constant) uniform P { uint sq_off; } pc;
void main() {
    float n2 = sq[pc.sq_off];
    float inv_scale = h[8];
    float norm = sqrt(n2) * inv_scale;
    bool bad = isnan(n2) || isinf(n2);
    float maxn = h[7];
    st[0] = norm;
    st[1] = ((bad || maxn <= 0.0) ? 1.0 : min(1.0, maxn / (norm + 1e-6))) * inv_scale;
    st[2] = bad ? 1.0 : 0.0;
}
