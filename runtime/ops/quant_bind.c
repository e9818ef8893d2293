/* Binding a block-quantised weight (runtime/quant.h) for the shaders that
 * dequantise it in registers: the matmul family's B (matmul.c) and the
 * embedding gather's table (embed.c). */
#include "op_util.h"

#include "quant.h"

int vkl_bind_quant(vkl_graph *g, const vkl_tensor *t, vkl_bind *b, vkl_quant_offsets *q, vkl_err *e)
{
    vkl_ctx *c = vkl_graph_ctx(g);
    vkl_quant_layout l;
    if (vkl_quant_layout_of(t->dtype, (uint64_t)vkl_tensor_nelem(t), &l))
        return vkl_fail(e, "internal: %s is not a quantised type", vkl_dtype_name(t->dtype));
    if (!t->buf) return vkl_fail(e, "internal: tensor bound before it has memory");
    /* whole words: a GGUF weight's blocks may end inside one (its memory is rounded up to words) */
    uint64_t begin = vkl_buffer_vk_offset(t->buf) + t->offset, end = begin + ((l.total_bytes + 3) & ~3ull);
    uint64_t align = c->caps.storage_align < 4 ? 4 : c->caps.storage_align;
    uint64_t abegin = begin / align * align;
    char d[96];
    if (end - abegin > c->caps.max_storage_range) {
        vkl_tensor_describe(t, d, sizeof d);
        return vkl_fail(e, "quantised weight %s (%llu bytes) exceeds the device's storage binding limit (%llu bytes)",
                        d, (unsigned long long)l.total_bytes, (unsigned long long)c->caps.max_storage_range);
    }
    if ((begin - abegin) % 4) { /* the shaders read its scales as f32 words */
        vkl_tensor_describe(t, d, sizeof d);
        return vkl_fail(e, "internal: quantised weight %s does not start on a 4-byte boundary", d);
    }
    b->buf = t->buf;
    b->offset = abegin - vkl_buffer_vk_offset(t->buf);
    b->range = end - abegin;
    q->code_off = (uint32_t)(2 * (begin - abegin));
    q->scale_off = (uint32_t)((begin - abegin + l.scale_offset) / 4);
    q->qcode_off = (uint32_t)((begin - abegin + l.qcode_offset) / 4);
    return 0;
}
