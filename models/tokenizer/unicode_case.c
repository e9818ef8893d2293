/* Lower-casing exactly as CPython's str.lower(): the one-to-one mapping from
 * the tables, U+0130 -> "i\u0307", and capital sigma -> final sigma when it
 * ends a cased word (Unicode's Final_Sigma context); or without that context,
 * as Rust lower-cases one char. */
#include "unicode.h"

static int final_sigma(const uint32_t *s, size_t n, size_t i)
{
    size_t j = i;
    uint32_t c = 0;
    int found = 0;
    while (j > 0) {
        c = s[--j];
        if (vkl_uc_case_prop(c) != 2) {
            found = 1;
            break;
        }
    }
    if (!found || vkl_uc_case_prop(c) != 1)
        return 0;
    for (j = i + 1; j < n; j++) {
        if (vkl_uc_case_prop(s[j]) != 2)
            return vkl_uc_case_prop(s[j]) != 1;
    }
    return 1;
}

int vkl_uc_lower(const uint32_t *in, size_t n, vkl_ucbuf *out)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == 0x130) {
            if (vkl_ucbuf_push(out, 'i') || vkl_ucbuf_push(out, 0x307))
                return -1;
        } else if (c == 0x3A3) {
            if (vkl_ucbuf_push(out, final_sigma(in, n, i) ? 0x3C2 : 0x3C3))
                return -1;
        } else if (vkl_ucbuf_push(out, vkl_uc_lower1(c))) {
            return -1;
        }
    }
    return 0;
}

int vkl_uc_lower_chars(const uint32_t *in, size_t n, vkl_ucbuf *out)
{
    for (size_t i = 0; i < n; i++) {
        if (in[i] == 0x130 ? vkl_ucbuf_push(out, 'i') || vkl_ucbuf_push(out, 0x307)
                           : vkl_ucbuf_push(out, vkl_uc_lower1(in[i])))
            return -1;
    }
    return 0;
}
