/* Text rules shared by the safetensors reader and writer: the header must be
 * UTF-8 (what the reference Rust implementation demands, so a file we write
 * must pass it too), and dtypes have their own upper-case names. */
#include "safetensors_internal.h"

size_t vkl_st__utf8_bad_at(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp, min;
        if (c >= 0xc2 && c <= 0xdf) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if (c >= 0xe0 && c <= 0xef) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if (c >= 0xf0 && c <= 0xf4) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return i;
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += len;
    }
    return n;
}

static const char *const tags[VKL_DTYPE_COUNT] = {
    [VKL_F32] = "F32", [VKL_F16] = "F16", [VKL_BF16] = "BF16", [VKL_I32] = "I32",
    [VKL_I64] = "I64", [VKL_U8] = "U8",   [VKL_I8] = "I8",     [VKL_I16] = "I16",
    [VKL_F64] = "F64", [VKL_BOOL] = "BOOL",
};

const char *vkl_st__dtype_tag(vkl_dtype t)
{
    return (unsigned)t < VKL_DTYPE_COUNT && tags[t] ? tags[t] : "?";
}
