/* `vklora info FILE.gguf`: version, alignment, what the file is (model or
 * adapter, architecture), tensors per block type with their bytes, and the
 * metadata (scalars and strings as values, arrays as their type and length,
 * so a 32000-token vocabulary is one line). */
#include "info.h"

#include "io/gguf.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

/* A scalar or string value as text (arrays: "[n x type]"). */
static void value_text(const vkl_gguf_kv *kv, char *buf, size_t n)
{
    switch (kv->type) {
    case VKL_GGUF_STRING: /* control bytes would reach the terminal: shown as '?' */
        snprintf(buf, n, "%s", kv->s);
        for (char *p = buf; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
        break;
    case VKL_GGUF_ARRAY: snprintf(buf, n, "[%llu x %s]", (unsigned long long)kv->n, vkl_gguf_vtype_name(kv->atype)); break;
    case VKL_GGUF_BOOL: snprintf(buf, n, "%s", kv->v.u ? "true" : "false"); break;
    case VKL_GGUF_F32: case VKL_GGUF_F64: snprintf(buf, n, "%.9g", kv->v.f); break;
    case VKL_GGUF_I8: case VKL_GGUF_I16: case VKL_GGUF_I32: case VKL_GGUF_I64:
        snprintf(buf, n, "%lld", (long long)kv->v.i);
        break;
    default: snprintf(buf, n, "%llu", (unsigned long long)kv->v.u); break;
    }
}

int vkl_info_gguf(const char *path, int json)
{
    vkl_gguf_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_gguf_open(path, &f, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    int count[32] = {0};
    uint64_t bytes[32] = {0}, total = 0;
    for (int i = 0; i < vkl_gguf_count(f); i++) {
        const vkl_gguf_tensor *t = vkl_gguf_at(f, i);
        count[t->type]++; /* supported types are all below 32 */
        bytes[t->type] += t->nbytes;
        total += t->nbytes;
    }
    const char *type = "model", *arch = "?";
    vkl_gguf_get_str(f, "general.type", &type, &e);
    vkl_gguf_get_str(f, "general.architecture", &arch, &e);
    char v[256];
    int rc = 0;
    if (json) {
        cJSON *o = cJSON_CreateObject(), *tt, *m;
        cJSON_AddStringToObject(o, "path", path);
        cJSON_AddStringToObject(o, "format", "gguf");
        cJSON_AddNumberToObject(o, "version", vkl_gguf_version(f));
        cJSON_AddNumberToObject(o, "alignment", vkl_gguf_alignment(f));
        cJSON_AddStringToObject(o, "type", type);
        cJSON_AddStringToObject(o, "architecture", arch);
        cJSON_AddNumberToObject(o, "tensors", vkl_gguf_count(f));
        cJSON_AddNumberToObject(o, "tensor_bytes", (double)total);
        tt = cJSON_AddObjectToObject(o, "tensor_types");
        for (int t = 0; t < 32; t++)
            if (count[t]) cJSON_AddNumberToObject(tt, vkl_gguf_type_name(t), count[t]);
        m = cJSON_AddObjectToObject(o, "metadata");
        for (int i = 0; i < vkl_gguf_kv_count(f); i++) {
            const vkl_gguf_kv *kv = vkl_gguf_kv_at(f, i);
            value_text(kv, v, sizeof v);
            if (kv->type == VKL_GGUF_STRING || kv->type == VKL_GGUF_ARRAY) cJSON_AddStringToObject(m, kv->key, v);
            else if (kv->type == VKL_GGUF_BOOL) cJSON_AddBoolToObject(m, kv->key, kv->v.u != 0);
            else if (kv->type == VKL_GGUF_F32 || kv->type == VKL_GGUF_F64) cJSON_AddNumberToObject(m, kv->key, kv->v.f);
            else cJSON_AddNumberToObject(m, kv->key, kv->type == VKL_GGUF_I8 || kv->type == VKL_GGUF_I16 ||
                                                      kv->type == VKL_GGUF_I32 || kv->type == VKL_GGUF_I64
                                                      ? (double)kv->v.i : (double)kv->v.u);
        }
        char *s = cJSON_Print(o);
        cJSON_Delete(o);
        if (s) puts(s);
        else rc = 1, vkl_log(VKL_LOG_ERROR, "%s: out of memory for the JSON report", path);
        cJSON_free(s);
    } else {
        printf("%s: GGUF v%u (alignment %u), %s %s, %d tensors, %.1f MiB\n", path, vkl_gguf_version(f),
               vkl_gguf_alignment(f), arch, type, vkl_gguf_count(f), total / 1048576.0);
        for (int t = 0; t < 32; t++)
            if (count[t]) printf("  %-5s %4d tensors  %.2f MiB\n", vkl_gguf_type_name(t), count[t], bytes[t] / 1048576.0);
        printf("metadata:\n");
        for (int i = 0; i < vkl_gguf_kv_count(f); i++) {
            const vkl_gguf_kv *kv = vkl_gguf_kv_at(f, i);
            value_text(kv, v, sizeof v);
            printf("  %s = %s\n", kv->key, v);
        }
    }
    vkl_gguf_close(f);
    return rc;
}
