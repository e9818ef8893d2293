/* bitsandbytes' dynamic quantization map (functional.create_dynamic_map with
 * max_exponent_bits 7, total_bits 8), computed as its torch code does in f32:
 * for exponent i = 0..6, the midpoints of linspace(0.1, 1, k + 1) scaled by
 * 10^(i-6), where k = 2^i (signed, mirrored with negative values) or 2^(i+1)
 * (unsigned); then 0 and 1; sorted ascending. */
#include "optim.h"

#include <math.h>
#include <stdlib.h>

/* torch.linspace for f32 on the CPU: the step is an f32, and the second half
 * counts back from the end (so the last value is exactly `end`). */
static float linspace_at(float start, float end, int steps, int idx)
{
    volatile float step = (end - start) / (float)(steps - 1);
    volatile float off;
    if (idx < steps / 2) {
        off = step * (float)idx;
        return start + off;
    }
    off = step * (float)(steps - idx - 1);
    return end - off;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void vkl_adamw8_map(int is_signed, float map[256])
{
    int n = 0;
    for (int i = 0; i < 7; i++) {
        int items = is_signed ? 1 << i : 1 << (i + 1);
        /* a Python float times an f32 tensor: the scale is rounded to f32 first */
        float scale = (float)pow(10.0, i - 6);
        for (int k = 0; k < items; k++) {
            volatile float lo = linspace_at(0.1f, 1.0f, items + 1, k), hi = linspace_at(0.1f, 1.0f, items + 1, k + 1);
            volatile float sum = lo + hi;
            volatile float mean = sum / 2.0f;
            volatile float v = scale * mean;
            map[n++] = v;
            if (is_signed) map[n++] = -v;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    qsort(map, (size_t)n, sizeof(float), cmp_float);
}
