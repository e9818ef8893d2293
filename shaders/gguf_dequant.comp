#version 450
// GGUF block dequantisation: y = the values of blocks of ggml type QT (F32,
// F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), read as bytes
// from a word buffer, written as f32 or packed 16-bit (YDT). Every scale
// product is `precise` and in the order of the format's reference
// dequantisation, so the f32 result equals the CPU one bit for bit (Vulkan
// rounds adds and multiplies correctly; fusing them would not be).
// CPU reference: runtime/ref/ref_gguf.c.
#include "common.glsl"
layout(local_size_x = 256) in;
layout(constant_id = 0) const uint QT = 0;
layout(constant_id = 1) const uint YDT = 0;
layout(binding = 0) readonly buffer Q { uint q[]; };
layout(binding = 1) writeonly buffer YF { float yf[]; };
layout(binding = 1) writeonly buffer YU { uint yu[]; };
layout(push_constant) uniform P {
    uint n;       // elements of this window
    uint q_byte;  // byte of the window's first block within binding 0
    uint y_off;   // element offset of the window's first element within binding 1
} p;

uint byte_at(uint k) { return (q[k >> 2u] >> ((k & 3u) * 8u)) & 0xffu; }
float half_at(uint k) { return unpackHalf2x16(byte_at(k) | (byte_at(k + 1u) << 8u)).x; }
int int8_at(uint k) { return int(byte_at(k)) - (byte_at(k) >= 128u ? 256 : 0); }
uint u32_at(uint k) { return byte_at(k) | (byte_at(k + 1u) << 8u) | (byte_at(k + 2u) << 16u) | (byte_at(k + 3u) << 24u); }

// the 6-bit scale (x) and min (y) of sub-block j of a Q4_K/Q5_K scales array at s
uvec2 scale_min(uint s, uint j) {
    if (j < 4u) return uvec2(byte_at(s + j) & 63u, byte_at(s + j + 4u) & 63u);
    return uvec2((byte_at(s + j + 4u) & 15u) | ((byte_at(s + j - 4u) >> 6u) << 4u),
                 (byte_at(s + j + 4u) >> 4u) | ((byte_at(s + j) >> 6u) << 4u));
}

float value(uint i) {
    if (QT == 0u) return uintBitsToFloat(u32_at(p.q_byte + 4u * i));
    if (QT == 1u) return half_at(p.q_byte + 2u * i);
    if (QT == 30u) return uintBitsToFloat((byte_at(p.q_byte + 2u * i) | (byte_at(p.q_byte + 2u * i + 1u) << 8u)) << 16u);
    if (QT == 2u || QT == 3u || QT == 6u || QT == 7u || QT == 8u) {
        uint bytes = QT == 2u ? 18u : QT == 3u ? 20u : QT == 6u ? 22u : QT == 7u ? 24u : 34u;
        uint b = p.q_byte + (i / 32u) * bytes, j = i % 32u;
        float d = half_at(b);
        if (QT == 8u) {
            precise float y8 = float(int8_at(b + 2u + j)) * d;
            return y8;
        }
        uint qs = QT == 2u ? b + 2u : QT == 3u ? b + 4u : QT == 6u ? b + 6u : b + 8u;
        uint qb = byte_at(qs + (j & 15u));
        uint lo = j < 16u ? qb & 15u : qb >> 4u;
        if (QT == 2u) {
            precise float y = float(int(lo) - 8) * d;
            return y;
        }
        if (QT == 3u) {
            precise float y = float(lo) * d + half_at(b + 2u);
            return y;
        }
        uint qh = u32_at(QT == 6u ? b + 2u : b + 4u);
        uint x = lo | (((qh >> j) & 1u) << 4u);
        if (QT == 6u) {
            precise float y = float(int(x) - 16) * d;
            return y;
        }
        precise float y = float(x) * d + half_at(b + 2u);
        return y;
    }
    if (QT == 12u || QT == 13u) {
        uint b = p.q_byte + (i / 256u) * (QT == 12u ? 144u : 176u), j = i % 256u;
        uint sub = j / 32u, l = j % 32u, pair = j / 64u;
        uvec2 sm = scale_min(b + 4u, sub);
        uint qs = QT == 12u ? b + 16u : b + 48u;
        uint qb = byte_at(qs + 32u * pair + l);
        uint x = (sub & 1u) == 0u ? qb & 15u : qb >> 4u;
        if (QT == 13u) x += ((byte_at(b + 16u + l) >> sub) & 1u) * 16u;
        precise float d1 = half_at(b) * float(sm.x);
        precise float m1 = half_at(b + 2u) * float(sm.y);
        precise float y = d1 * float(x) - m1;
        return y;
    }
    // Q6_K
    uint b = p.q_byte + (i / 256u) * 210u, j = i % 256u;
    uint half_ = j / 128u, r = j % 128u, k = r / 32u, l = r % 32u;
    uint qlb = byte_at(b + 64u * half_ + 32u * (k & 1u) + l);
    uint lo = k < 2u ? qlb & 15u : qlb >> 4u;
    uint hi = (byte_at(b + 128u + 32u * half_ + l) >> (2u * k)) & 3u;
    int x = int(lo | (hi << 4u)) - 32;
    precise float d1 = half_at(b + 208u) * float(int8_at(b + 192u + j / 16u));
    precise float y = d1 * float(x);
    return y;
}

void main() {
    uint i = flat_index(256u);
    if (YDT == DT_F32) {
        if (i < p.n) yf[p.y_off + i] = value(i);
        return;
    }
    uint e = 2u * i;
    if (e >= p.n) return;
    float a = value(e);
    float c = e + 1u < p.n ? value(e + 1u) : 0.0;
    yu[(p.y_off + e) >> 1u] = pack2(a, c, YDT);
}
