// NF4 (4-bit NormalFloat, runtime/quant.h): element 2j in the high nibble,
// 2j+1 in the low nibble of byte j; value = level[code] * the block's absmax
// (one f32 multiply, as the host's dequantisation, so both agree exactly).
const float NF4_LEVELS[16] = float[16](
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0);

// Element i given the byte that holds it in bits 0..7 of b.
float nf4_value(uint b, uint i, float absmax) {
    uint code = (i & 1u) != 0u ? (b & 15u) : ((b >> 4u) & 15u);
    return NF4_LEVELS[code] * absmax;
}

// Elements 4j..4j+3 given their two bytes in bits 0..15 of w (one block).
vec4 nf4_value4(uint w, float absmax) {
    return vec4(NF4_LEVELS[(w >> 4u) & 15u], NF4_LEVELS[w & 15u], NF4_LEVELS[(w >> 12u) & 15u],
                NF4_LEVELS[(w >> 8u) & 15u]) * absmax;
}
