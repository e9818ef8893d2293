/* VKL_NF4_DQ on the host: NF4 codes with QLoRA's double-quantised scales kept
 * quantised in the tensor's memory (layout in quant.h). The values equal
 * vkl_nf4_pack's with double_quant bit for bit: the same codes, and each scale
 * is the same f32 table[q] * absmax2 + offset. */
#include "quant.h"

#include <stdlib.h>
#include <string.h>

int vkl_nf4dq_pack(const float *x, uint64_t n, void *dst, vkl_err *e)
{
    vkl_quant_layout l;
    vkl_quant_layout_of(VKL_NF4_DQ, n, &l);
    uint8_t *d = dst;
    memset(d, 0, (size_t)l.total_bytes);
    float *absmax = malloc(sizeof(float) * (size_t)(l.nblocks ? l.nblocks : 1));
    float *a2 = malloc(sizeof(float) * (size_t)(l.nblocks2 ? l.nblocks2 : 1));
    if (!absmax || !a2) {
        free(absmax);
        free(a2);
        return vkl_fail(e, "out of host memory quantising %llu elements", (unsigned long long)n);
    }
    int rc = vkl_nf4_quantize(x, n, d, absmax, e);
    if (!rc) {
        float table[256], offset;
        vkl_dynamic8_table(table);
        vkl_nf4_double_quant(absmax, l.nblocks, &offset, d + l.qcode_offset, a2);
        memcpy(d + l.scale_offset, table, sizeof table);
        memcpy(d + l.scale_offset + sizeof table, &offset, 4);
        memcpy(d + l.absmax2_offset, a2, sizeof(float) * (size_t)l.nblocks2);
    }
    free(absmax);
    free(a2);
    return rc;
}

void vkl_nf4dq_unpack(const void *src, uint64_t n, float *y)
{
    vkl_quant_layout l;
    vkl_quant_layout_of(VKL_NF4_DQ, n, &l);
    const uint8_t *s = src;
    float table[256], offset;
    memcpy(table, s + l.scale_offset, sizeof table);
    memcpy(&offset, s + l.scale_offset + sizeof table, 4);
    for (uint64_t b = 0; b < l.nblocks; b++) {
        float a2;
        memcpy(&a2, s + l.absmax2_offset + 4 * (b / VKL_NF4_DQ_BLOCK), 4);
        float scale = table[s[l.qcode_offset + b]] * a2 + offset; /* as vkl_nf4_double_dequant */
        uint64_t i1 = (b + 1) * VKL_NF4_BLOCK < n ? (b + 1) * VKL_NF4_BLOCK : n;
        for (uint64_t i = b * VKL_NF4_BLOCK; i < i1; i++) {
            uint8_t c = (uint8_t)(i & 1 ? s[i >> 1] & 15 : s[i >> 1] >> 4);
            y[i] = vkl_nf4_levels[c] * scale;
        }
    }
}
