/* CLIP's pre-split, the regex
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 * (IGNORECASE), written out by hand: at each position the alternatives are
 * tried in that order, and whitespace between matches is skipped. */
#include "clip_internal.h"

/* Simple case folding as the regex module's IGNORECASE applies it to the
 * letters of the patterns: only U+017F (long s) folds to one of them besides
 * the ASCII capitals. */
static uint32_t fold(uint32_t c)
{
    if (c >= 'A' && c <= 'Z')
        return c + 32;
    if (c == 0x17F)
        return 's';
    return c;
}

static size_t match_lit(const uint32_t *s, size_t n, size_t i, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++)
        if (i + k >= n || fold(s[i + k]) != (uint32_t)(unsigned char)lit[k])
            return 0;
    return k;
}

int vkl_clip_presplit(const uint32_t *s, size_t n, vkl_i32buf *spans)
{
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    size_t i = 0;
    while (i < n) {
        size_t len = 0;
        if (s[i] == '<') {
            len = match_lit(s, n, i, "<|startoftext|>");
            if (!len)
                len = match_lit(s, n, i, "<|endoftext|>");
        } else if (s[i] == '\'') {
            for (size_t k = 0; k < sizeof contractions / sizeof *contractions && !len; k++)
                len = match_lit(s, n, i, contractions[k]);
        }
        if (!len) {
            int cls = vkl_uc_class(s[i]);
            if (cls == VKL_UC_LETTER) {
                while (i + len < n && vkl_uc_class(s[i + len]) == VKL_UC_LETTER)
                    len++;
            } else if (cls == VKL_UC_NUMBER) {
                len = 1;
            } else if (!vkl_uc_is_white_space(s[i])) {
                while (i + len < n) {
                    uint32_t c = s[i + len];
                    int k = vkl_uc_class(c);
                    if (k == VKL_UC_LETTER || k == VKL_UC_NUMBER || vkl_uc_is_white_space(c))
                        break;
                    len++;
                }
            }
        }
        if (!len) {
            i++;
            continue;
        }
        if (vkl_i32buf_push(spans, (int32_t)i) || vkl_i32buf_push(spans, (int32_t)(i + len)))
            return -1;
        i += len;
    }
    return 0;
}
