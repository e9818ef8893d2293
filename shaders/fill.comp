#version 450
// Fills a f32 buffer window with a constant: y[i] = value.
layout(local_size_x = 64) in;
layout(binding = 0) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint n; uint off; float value; } p;
void main() {
    uint i = gl_GlobalInvocationID.x + gl_GlobalInvocationID.y * gl_NumWorkGroups.x * 64u;
    if (i < p.n) y[p.off + i] = p.value;
}
