/* GGUF block types as tensor dtypes (VKL_Q4_0 .. VKL_Q6_K, quant.h): the
 * memory is the file's blocks as they are, so a GGUF weight is uploaded
 * without conversion and read in place by the matmul shaders
 * (shaders/gguf_blocks.glsl). Host conversions from and to f32 use the
 * project's GGUF quantiser (io/gguf_quant.c) and the CPU reference
 * dequantisation (ref/ref_gguf.c), which the shaders match bit for bit. */
#include "quant.h"

#include "io/gguf.h"
#include "ref/ref_gguf.h"

#include <string.h>

static const struct { vkl_dtype dt; int type; } gguf_map[] = {
    {VKL_Q4_0, VKL_GQ_Q4_0}, {VKL_Q4_1, VKL_GQ_Q4_1}, {VKL_Q5_0, VKL_GQ_Q5_0}, {VKL_Q5_1, VKL_GQ_Q5_1},
    {VKL_Q8_0, VKL_GQ_Q8_0}, {VKL_Q4_K, VKL_GQ_Q4_K}, {VKL_Q5_K, VKL_GQ_Q5_K}, {VKL_Q6_K, VKL_GQ_Q6_K},
};
#define N_GGUF_MAP (int)(sizeof gguf_map / sizeof *gguf_map)

int vkl_dtype_is_gguf(vkl_dtype t) { return vkl_dtype_gguf_type(t) >= 0; }

int vkl_dtype_gguf_type(vkl_dtype t)
{
    for (int i = 0; i < N_GGUF_MAP; i++)
        if (gguf_map[i].dt == t) return gguf_map[i].type;
    return -1;
}

int vkl_gguf_dtype(int type, vkl_dtype *out)
{
    for (int i = 0; i < N_GGUF_MAP; i++)
        if (gguf_map[i].type == type) return *out = gguf_map[i].dt, 0;
    if (type == VKL_GQ_F32) return *out = VKL_F32, 0;
    if (type == VKL_GQ_F16) return *out = VKL_F16, 0;
    if (type == VKL_GQ_BF16) return *out = VKL_BF16, 0;
    return -1;
}

int vkl_gguf_layout_of(vkl_dtype t, uint64_t n, vkl_quant_layout *l)
{
    int type = vkl_dtype_gguf_type(t);
    if (type < 0) return -1;
    memset(l, 0, sizeof *l);
    l->block = vkl_gguf_type_block(type);
    l->nblocks = (n + (uint64_t)l->block - 1) / (uint64_t)l->block;
    l->code_bytes = l->nblocks * (uint64_t)vkl_gguf_type_bytes(type);
    /* no separate scales: they are inside the blocks */
    l->scale_offset = l->total_bytes = l->code_bytes;
    return 0;
}

int vkl_gguf_convert_host(const void *src, vkl_dtype st, void *dst, vkl_dtype dt, size_t n, vkl_err *e)
{
    int type = vkl_dtype_gguf_type(vkl_dtype_is_gguf(st) ? st : dt);
    int blk = vkl_gguf_type_block(type);
    if ((st != VKL_F32 && dt != VKL_F32) || (vkl_dtype_is_gguf(st) && vkl_dtype_is_gguf(dt)))
        return vkl_fail(e, "cannot convert %s to %s (GGUF block types convert from and to f32)", vkl_dtype_name(st),
                        vkl_dtype_name(dt));
    if (n % (size_t)blk)
        return vkl_fail(e, "%zu elements are not whole %s blocks of %d", n, vkl_gguf_type_name(type), blk);
    if (dt == VKL_F32) return vkl_ref_gguf_dequant(type, src, n, dst) ? vkl_fail(e, "internal: GGUF type %d", type) : 0;
    return vkl_gguf_quantize(type, src, n, dst, e);
}
