/* Looking up a read GGUF file's metadata and tensors (typed getters say
 * when a key holds another type than asked for). */
#include "gguf_internal.h"

#include <string.h>

/* ---- look-ups */

const char *vkl_gguf_label(const vkl_gguf_file *f) { return f->label; }
uint32_t vkl_gguf_version(const vkl_gguf_file *f) { return f->version; }
uint32_t vkl_gguf_alignment(const vkl_gguf_file *f) { return f->alignment; }
int vkl_gguf_kv_count(const vkl_gguf_file *f) { return f->nkv; }
const vkl_gguf_kv *vkl_gguf_kv_at(const vkl_gguf_file *f, int i) { return i >= 0 && i < f->nkv ? &f->kv[i] : NULL; }
int vkl_gguf_count(const vkl_gguf_file *f) { return f->nt; }
const vkl_gguf_tensor *vkl_gguf_at(const vkl_gguf_file *f, int i) { return i >= 0 && i < f->nt ? &f->t[i] : NULL; }

const vkl_gguf_kv *vkl_gguf_kv_find(const vkl_gguf_file *f, const char *key)
{
    int lo = 0, hi = f->nkv - 1;
    while (f->kv_by_key && lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(f->kv[f->kv_by_key[mid]].key, key);
        if (!c) return &f->kv[f->kv_by_key[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

const vkl_gguf_tensor *vkl_gguf_find(const vkl_gguf_file *f, const char *name)
{
    int lo = 0, hi = f->nt - 1;
    while (f->by_name && lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(f->t[f->by_name[mid]].name, name);
        if (!c) return &f->t[f->by_name[mid]];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return NULL;
}

static int is_int(int t) { return t <= VKL_GGUF_I32 || t == VKL_GGUF_U64 || t == VKL_GGUF_I64; }
static int is_signed(int t) { return t == VKL_GGUF_I8 || t == VKL_GGUF_I16 || t == VKL_GGUF_I32 || t == VKL_GGUF_I64; }

int vkl_gguf_get_uint(const vkl_gguf_file *f, const char *key, uint64_t *out, vkl_err *e)
{
    const vkl_gguf_kv *kv = vkl_gguf_kv_find(f, key);
    if (!kv) return 0;
    if (!is_int(kv->type))
        return vkl_fail(e, "%s: %s is a %s, not an integer", f->label, key, vkl_gguf_vtype_name(kv->type));
    if (is_signed(kv->type) && kv->v.i < 0)
        return vkl_fail(e, "%s: %s is %lld, not a count", f->label, key, (long long)kv->v.i);
    *out = kv->v.u;
    return 1;
}

int vkl_gguf_get_float(const vkl_gguf_file *f, const char *key, double *out, vkl_err *e)
{
    const vkl_gguf_kv *kv = vkl_gguf_kv_find(f, key);
    if (!kv) return 0;
    if (kv->type != VKL_GGUF_F32 && kv->type != VKL_GGUF_F64)
        return vkl_fail(e, "%s: %s is a %s, not a float", f->label, key, vkl_gguf_vtype_name(kv->type));
    *out = kv->v.f;
    return 1;
}

int vkl_gguf_get_bool(const vkl_gguf_file *f, const char *key, int *out, vkl_err *e)
{
    const vkl_gguf_kv *kv = vkl_gguf_kv_find(f, key);
    if (!kv) return 0;
    if (kv->type != VKL_GGUF_BOOL) return vkl_fail(e, "%s: %s is a %s, not a bool", f->label, key, vkl_gguf_vtype_name(kv->type));
    *out = kv->v.u != 0;
    return 1;
}

int vkl_gguf_get_str(const vkl_gguf_file *f, const char *key, const char **out, vkl_err *e)
{
    const vkl_gguf_kv *kv = vkl_gguf_kv_find(f, key);
    if (!kv) return 0;
    if (kv->type != VKL_GGUF_STRING)
        return vkl_fail(e, "%s: %s is a %s, not a string", f->label, key, vkl_gguf_vtype_name(kv->type));
    *out = kv->s;
    return 1;
}

double vkl_gguf_arr_num(const vkl_gguf_kv *kv, uint64_t i)
{
    if (kv->type != VKL_GGUF_ARRAY || i >= kv->n || kv->atype == VKL_GGUF_STRING) return 0;
    int sz = vkl_gguf__vtype_size(kv->atype);
    uint64_t v = vkl_gguf__le(kv->raw + i * (uint64_t)sz, sz);
    switch (kv->atype) {
    case VKL_GGUF_I8: return (int8_t)v;
    case VKL_GGUF_I16: return (int16_t)v;
    case VKL_GGUF_I32: return (int32_t)v;
    case VKL_GGUF_I64: return (double)(int64_t)v;
    case VKL_GGUF_F32: { uint32_t w = (uint32_t)v; float x; memcpy(&x, &w, 4); return x; }
    case VKL_GGUF_F64: { double d; memcpy(&d, &v, 8); return d; }
    default: return (double)v;
    }
}
