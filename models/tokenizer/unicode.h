/* Small Unicode toolkit for the tokenizer (internal): character classes,
 * UTF-8 <-> code points, NFC and Python-compatible lower-casing.
 * Text is handled as arrays of code points (uint32_t). */
#ifndef VKL_UNICODE_H
#define VKL_UNICODE_H

#include <stddef.h>
#include <stdint.h>

#include "vkl_base.h"

/* General-category classes the tokenizer distinguishes. */
enum {
    VKL_UC_OTHER = 0,
    VKL_UC_LETTER = 1,  /* L* */
    VKL_UC_NUMBER = 2,  /* N* */
    VKL_UC_CONTROL = 3, /* C*: Cc Cf Cs Co Cn */
    VKL_UC_SPACE_SEP = 4 /* Zs */
};
int vkl_uc_class(uint32_t cp);
int vkl_uc_ccc(uint32_t cp); /* canonical combining class */
/* Unicode White_Space (what the `regex` module's \s matches). */
int vkl_uc_is_white_space(uint32_t cp);
/* Oniguruma's Unicode \w (what the Hugging Face tokenizers' Whitespace
 * pre-tokenizer matches) as its classes use it: Alphabetic, Mark,
 * Decimal_Number, Connector_Punctuation (not ZWJ/ZWNJ, unlike UTS #18). */
int vkl_uc_is_word(uint32_t cp);
/* Python's str.isspace() (adds U+001C..U+001F to White_Space). */
int vkl_uc_is_py_space(uint32_t cp);
/* 1 = Cased (and not Case_Ignorable), 2 = Case_Ignorable, 0 = neither. */
int vkl_uc_case_prop(uint32_t cp);
/* Simple one-code-point lower-case mapping (identity when none). */
uint32_t vkl_uc_lower1(uint32_t cp);

/* Growable code-point buffer. */
typedef struct {
    uint32_t *v;
    size_t n, cap;
} vkl_ucbuf;
int vkl_ucbuf_push(vkl_ucbuf *b, uint32_t cp);
void vkl_ucbuf_free(vkl_ucbuf *b);

/* Decodes strict UTF-8 (no overlongs, no surrogates) into out (appended).
 * Fails naming the byte offset of the first invalid sequence. */
int vkl_utf8_decode(const char *s, size_t len, vkl_ucbuf *out, vkl_err *e);
/* Writes the UTF-8 form of cp into buf (4 bytes room); returns the length. */
size_t vkl_utf8_put(uint32_t cp, unsigned char *buf);

/* NFC of in[0..n) appended to out. */
int vkl_uc_nfc(const uint32_t *in, size_t n, vkl_ucbuf *out);
/* CPython str.lower() of in[0..n) appended to out: full mapping (U+0130 gives
 * two code points) and the Final_Sigma rule for U+03A3. */
int vkl_uc_lower(const uint32_t *in, size_t n, vkl_ucbuf *out);
/* The same one character at a time, as Rust's char::to_lowercase (what the
 * Hugging Face tokenizers' Lowercase normalizer calls): no Final_Sigma
 * context, capital sigma always becomes U+03C3. */
int vkl_uc_lower_chars(const uint32_t *in, size_t n, vkl_ucbuf *out);

#endif
