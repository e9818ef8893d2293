// GGUF block dequantisation of one element (or four in a row), shared by
// gguf_dequant.comp (the blocks into an f32/f16 copy) and the matmul shaders
// (a GGUF weight read in place as their B operand). Every scale product is
// `precise` and in the order of the format's reference dequantisation, so
// the value equals the CPU one (runtime/ref/ref_gguf.c) bit for bit: Vulkan
// rounds adds and multiplies correctly, fusing them would not be.
//
// Before including, define GGUF_WORD(k): word k of the buffer holding the
// blocks. qt is the ggml block type (F32 0, F16 1, Q4_0 2, Q4_1 3, Q5_0 6,
// Q5_1 7, Q8_0 8, Q4_K 12, Q5_K 13, Q6_K 14, BF16 30), a specialisation
// constant at every call so that only its branch is compiled; base the byte
// of the first block (a multiple of 4); i the element's index from there.

uint gguf_byte(uint k) { return (GGUF_WORD(k >> 2u) >> ((k & 3u) * 8u)) & 0xffu; }
// Four (two) bytes from byte k on, any alignment; only the words holding
// them are read (the blocks' buffer may end right after them).
uint gguf_u32(uint k) {
    uint s = (k & 3u) * 8u, lo = GGUF_WORD(k >> 2u);
    return s == 0u ? lo : (lo >> s) | (GGUF_WORD((k >> 2u) + 1u) << (32u - s));
}
uint gguf_u16(uint k) {
    uint s = (k & 3u) * 8u, lo = GGUF_WORD(k >> 2u) >> s;
    if (s == 24u) lo |= GGUF_WORD((k >> 2u) + 1u) << 8u;
    return lo & 0xffffu;
}
float gguf_half(uint k) { return unpackHalf2x16(gguf_u16(k)).x; }
int gguf_sbyte(uint w, uint n) { return int(w << (24u - 8u * n)) >> 24; }

uint gguf_block_bytes(uint qt) {
    return qt == 2u ? 18u : qt == 3u ? 20u : qt == 6u ? 22u : qt == 7u ? 24u : qt == 8u ? 34u
         : qt == 12u ? 144u : qt == 13u ? 176u : 210u;
}

// The scales of element i's scale group (GGUF_GROUP(qt) elements): x the
// multiplier (the block's d; a K-quant's d * sub-block scale), y the 32-block
// types' added min (Q4_1, Q5_1) or the K-quants' subtracted d_min * min.
// A reader walking along a row may keep them while the group lasts.
#define GGUF_GROUP(qt) ((qt) == 14u ? 16u : 32u)
// Blocks of Q4_1 (20 bytes), Q5_1 (24), Q4_K (144) and Q5_K (176) start on
// words, and so do the parts read four bytes at a time: one load, no shifts.
bool gguf_aligned(uint qt) { return (gguf_block_bytes(qt) & 3u) == 0u; }
uint gguf_u32q(uint qt, uint k) { return gguf_aligned(qt) ? GGUF_WORD(k >> 2u) : gguf_u32(k); }
vec2 gguf_scales(uint qt, uint base, uint i) {
    if (qt < 12u) {
        uint b = base + (i / 32u) * gguf_block_bytes(qt);
        if (gguf_aligned(qt)) return unpackHalf2x16(GGUF_WORD(b >> 2u)); // Q4_1, Q5_1: d, m
        return vec2(gguf_half(b), 0.0);
    }
    uint b = base + (i / 256u) * gguf_block_bytes(qt), j = i % 256u;
    if (qt == 14u) {
        precise float d1 = gguf_half(b + 208u) * float(gguf_sbyte(gguf_byte(b + 192u + j / 16u), 0u));
        return vec2(d1, 0.0);
    }
    // Q4_K / Q5_K blocks (144, 176 bytes) start on words: d and dmin are one
    // word, the 12 bytes of 6-bit scales and mins three
    uint sub = j / 32u, w0 = GGUF_WORD((b >> 2u) + 1u), w1 = GGUF_WORD((b >> 2u) + 2u), w2 = GGUF_WORD((b >> 2u) + 3u);
    uint sh = (sub & 3u) * 8u, sc, mn;
    if (sub < 4u) {
        sc = (w0 >> sh) & 63u;
        mn = (w1 >> sh) & 63u;
    } else {
        sc = ((w2 >> sh) & 15u) | (((w0 >> sh) >> 6u) & 3u) << 4u;
        mn = ((w2 >> sh) >> 4u & 15u) | (((w1 >> sh) >> 6u) & 3u) << 4u;
    }
    vec2 dm = unpackHalf2x16(GGUF_WORD(b >> 2u));
    precise float d1 = dm.x * float(sc);
    precise float m1 = dm.y * float(mn);
    return vec2(d1, m1);
}

// Elements i..i+3 (i a multiple of 4: one scale group) of a quantised type
// given their group's scales s; each element's arithmetic is the reference's.
vec4 gguf_value4_s(uint qt, uint base, uint i, vec2 s) {
    vec4 y;
    if (qt < 12u) { // 32-element blocks
        uint b = base + (i / 32u) * gguf_block_bytes(qt), j = i % 32u;
        if (qt == 8u) {
            uint w = gguf_u32(b + 2u + j);
            for (uint n = 0u; n < 4u; n++) {
                precise float v = float(gguf_sbyte(w, n)) * s.x;
                y[n] = v;
            }
            return y;
        }
        uint qs = qt == 2u ? b + 2u : qt == 3u ? b + 4u : qt == 6u ? b + 6u : b + 8u;
        uint w = gguf_u32q(qt, qs + (j & 15u)), sh = j < 16u ? 0u : 4u;
        // the four fifth bits (Q5_0, Q5_1), bits j..j+3 of qh, in bits 0..3:
        // Q5_0's unaligned qh is read as the one byte that holds them
        uint qh = qt == 7u ? GGUF_WORD((b + 4u) >> 2u) >> j
                : qt == 6u ? gguf_byte(b + 2u + (j >> 3u)) >> (j & 7u) : 0u;
        for (uint n = 0u; n < 4u; n++) {
            uint x = (w >> (8u * n + sh)) & 15u;
            if (qt == 6u || qt == 7u) x |= ((qh >> n) & 1u) << 4u;
            if (qt == 2u) {
                precise float v = float(int(x) - 8) * s.x;
                y[n] = v;
            } else if (qt == 6u) {
                precise float v = float(int(x) - 16) * s.x;
                y[n] = v;
            } else {
                precise float v = float(x) * s.x + s.y;
                y[n] = v;
            }
        }
        return y;
    }
    uint b = base + (i / 256u) * gguf_block_bytes(qt), j = i % 256u;
    if (qt == 14u) { // Q6_K: 16 sub-blocks of 16
        uint half_ = j / 128u, r = j % 128u, k = r / 32u, l = r % 32u;
        uint ql = gguf_u32(b + 64u * half_ + 32u * (k & 1u) + l) >> (k < 2u ? 0u : 4u);
        uint qh = gguf_u32(b + 128u + 32u * half_ + l) >> (2u * k);
        for (uint n = 0u; n < 4u; n++) {
            int x = int(((ql >> (8u * n)) & 15u) | (((qh >> (8u * n)) & 3u) << 4u)) - 32;
            precise float v = s.x * float(x);
            y[n] = v;
        }
        return y;
    }
    // Q4_K / Q5_K: 8 sub-blocks of 32
    uint sub = j / 32u, l = j % 32u;
    uint qw = GGUF_WORD(((qt == 12u ? b + 16u : b + 48u) + 32u * (j / 64u) + l) >> 2u) >> ((sub & 1u) * 4u);
    uint qh = qt == 13u ? GGUF_WORD((b + 16u + l) >> 2u) >> sub : 0u;
    for (uint n = 0u; n < 4u; n++) {
        uint x = (qw >> (8u * n)) & 15u;
        if (qt == 13u) x += ((qh >> (8u * n)) & 1u) * 16u;
        precise float v = s.x * float(x) - s.y;
        y[n] = v;
    }
    return y;
}

// Elements i..i+3 (i a multiple of 4, so the four share a block).
vec4 gguf_value4(uint qt, uint base, uint i) {
    if (qt == 0u) return vec4(uintBitsToFloat(gguf_u32(base + 4u * i)), uintBitsToFloat(gguf_u32(base + 4u * i + 4u)),
                              uintBitsToFloat(gguf_u32(base + 4u * i + 8u)), uintBitsToFloat(gguf_u32(base + 4u * i + 12u)));
    if (qt == 1u || qt == 30u) {
        uint w0 = gguf_u32(base + 2u * i), w1 = gguf_u32(base + 2u * i + 4u);
        if (qt == 1u) return vec4(unpackHalf2x16(w0), unpackHalf2x16(w1));
        return vec4(uintBitsToFloat(w0 << 16u), uintBitsToFloat(w0 & 0xffff0000u), uintBitsToFloat(w1 << 16u),
                    uintBitsToFloat(w1 & 0xffff0000u));
    }
    return gguf_value4_s(qt, base, i, gguf_scales(qt, base, i));
}

// Element i.
float gguf_value(uint qt, uint base, uint i) {
    if (qt == 0u) return uintBitsToFloat(gguf_u32(base + 4u * i));
    if (qt == 1u) return unpackHalf2x16(gguf_u16(base + 2u * i)).x;
    if (qt == 30u) return uintBitsToFloat(gguf_u16(base + 2u * i) << 16u);
    return gguf_value4(qt, base, i & ~3u)[i & 3u];
}
