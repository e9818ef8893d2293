/* Text cleanup of transformers' CLIPTokenizer when ftfy is absent (the usual
 * install, and what the reference input_ids use): its BasicTokenizer with
 * strip_accents=False and no punctuation split. Control and format characters
 * go, other whitespace becomes a space, CJK ideographs get spaces around them,
 * then NFC, whitespace split, lower-case each piece, join with one space. */
#include "clip_internal.h"

/* The CJK Unified Ideograph blocks BERT's tokenizer spaces out (not all CJK:
 * kana and Hangul stay joined to their neighbours). */
static int is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

int vkl_clip_clean_basic(const uint32_t *in, size_t n, vkl_ucbuf *out)
{
    vkl_ucbuf a = {0}, b = {0};
    int rc = -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        int cls = vkl_uc_class(c);
        int ws = c == ' ' || c == '\t' || c == '\n' || c == '\r' || cls == VKL_UC_SPACE_SEP;
        if (c == 0 || c == 0xFFFD || (cls == VKL_UC_CONTROL && !ws))
            continue;
        if (ws)
            c = ' ';
        if (is_cjk(c)) {
            if (vkl_ucbuf_push(&a, ' ') || vkl_ucbuf_push(&a, c) || vkl_ucbuf_push(&a, ' '))
                goto done;
        } else if (vkl_ucbuf_push(&a, c)) {
            goto done;
        }
    }
    if (vkl_uc_nfc(a.v, a.n, &b))
        goto done;
    /* Split on Python's whitespace; lower-case each piece on its own, since
     * the final-sigma rule looks only within the piece. */
    size_t i = 0, start_n = out->n;
    while (i < b.n) {
        while (i < b.n && vkl_uc_is_py_space(b.v[i]))
            i++;
        size_t s = i;
        while (i < b.n && !vkl_uc_is_py_space(b.v[i]))
            i++;
        if (i == s)
            break;
        if (out->n > start_n && vkl_ucbuf_push(out, ' '))
            goto done;
        if (vkl_uc_lower(b.v + s, i - s, out))
            goto done;
    }
    rc = 0;
done:
    vkl_ucbuf_free(&a);
    vkl_ucbuf_free(&b);
    return rc;
}
