/* GGUF's block types (elements and bytes per block, names) and metadata
 * value types. */
#include "gguf_internal.h"

#include <strings.h>

/* ---- types */

static const struct { int type, block, bytes; const char *name; } types[] = {
    {VKL_GQ_F32, 1, 4, "F32"},       {VKL_GQ_F16, 1, 2, "F16"},       {VKL_GQ_BF16, 1, 2, "BF16"},
    {VKL_GQ_Q4_0, 32, 18, "Q4_0"},   {VKL_GQ_Q4_1, 32, 20, "Q4_1"},   {VKL_GQ_Q5_0, 32, 22, "Q5_0"},
    {VKL_GQ_Q5_1, 32, 24, "Q5_1"},   {VKL_GQ_Q8_0, 32, 34, "Q8_0"},   {VKL_GQ_Q4_K, 256, 144, "Q4_K"},
    {VKL_GQ_Q5_K, 256, 176, "Q5_K"}, {VKL_GQ_Q6_K, 256, 210, "Q6_K"},
};
#define NTYPES (int)(sizeof types / sizeof *types)

static int type_index(int type)
{
    for (int i = 0; i < NTYPES; i++)
        if (types[i].type == type) return i;
    return -1;
}
int vkl_gguf_type_block(int type) { int i = type_index(type); return i < 0 ? 0 : types[i].block; }
int vkl_gguf_type_bytes(int type) { int i = type_index(type); return i < 0 ? 0 : types[i].bytes; }
const char *vkl_gguf_type_name(int type) { int i = type_index(type); return i < 0 ? "?" : types[i].name; }
int vkl_gguf_type_parse(const char *s, int *type)
{
    for (int i = 0; i < NTYPES; i++)
        if (!strcasecmp(s, types[i].name)) return *type = types[i].type, 0;
    return -1;
}

static const char *const vtype_names[] = {"u8", "i8", "u16", "i16", "u32", "i32", "f32",
                                          "bool", "string", "array", "u64", "i64", "f64"};
static const int vtype_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
const char *vkl_gguf_vtype_name(int t) { return t >= 0 && t < VKL_GGUF_VTYPE_COUNT ? vtype_names[t] : "?"; }
int vkl_gguf__vtype_size(int t) { return t >= 0 && t < VKL_GGUF_VTYPE_COUNT ? vtype_size[t] : 0; }

uint64_t vkl_gguf__le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
