/* The split regexes of byte-level BPE tokenizers, as hand-written scanners
 * that reproduce Oniguruma's leftmost, ordered-alternative, backtracking
 * match at each position (tokenizers runs the Split with behavior Isolated,
 * so every match is a piece; these patterns match every character):
 *
 * GPT-2 (ByteLevel's use_regex, and Split in some files):
 *   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 * Llama 3 (Qwen2 is the same with \p{N} in place of \p{N}{1,3}):
 *   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * \s is Unicode White_Space, \p{L} / \p{N} the general categories. */
#include <string.h>

#include "hf_bpe_internal.h"

static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";
static const char LLAMA3_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
                                     "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char QWEN2_PATTERN[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                                    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

int vkl_hf_regex_from_pattern(const char *p)
{
    if (!strcmp(p, GPT2_PATTERN)) return VKL_RX_GPT2;
    if (!strcmp(p, LLAMA3_PATTERN)) return VKL_RX_LLAMA3;
    if (!strcmp(p, QWEN2_PATTERN)) return VKL_RX_QWEN2;
    return -1;
}

static int is_l(uint32_t c) { return vkl_uc_class(c) == VKL_UC_LETTER; }
static int is_n(uint32_t c) { return vkl_uc_class(c) == VKL_UC_NUMBER; }
static int is_s(uint32_t c) { return vkl_uc_is_white_space(c); }
static int is_nl(uint32_t c) { return c == '\r' || c == '\n'; }
/* [^\s\p{L}\p{N}] */
static int is_other(uint32_t c) { return !is_s(c) && !is_l(c) && !is_n(c); }
static int is_not_n(uint32_t c) { return !is_n(c); }

/* Oniguruma's case-insensitive match of a lower-case ASCII letter: the
 * capital, and U+017F (long s) for s, whose case folding is s. */
static int ci_eq(uint32_t c, char lit)
{
    if (c == (uint32_t)lit) return 1;
    if (lit >= 'a' && lit <= 'z' && c == (uint32_t)(lit - 32)) return 1;
    return lit == 's' && c == 0x17F;
}

/* Length of the contraction at s[i] ('s 't 're 've 'm 'll 'd, tried in that
 * order), 0 if none. */
static size_t contraction(const uint32_t *s, size_t n, size_t i, int ignore_case)
{
    static const char *const alts[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    if (s[i] != '\'') return 0;
    for (size_t a = 0; a < sizeof alts / sizeof *alts; a++) {
        size_t k = 1;
        for (; alts[a][k]; k++) {
            if (i + k >= n) break;
            uint32_t c = s[i + k];
            if (ignore_case ? !ci_eq(c, alts[a][k]) : c != (uint32_t)alts[a][k]) break;
        }
        if (!alts[a][k]) return k;
    }
    return 0;
}

static size_t run(const uint32_t *s, size_t n, size_t i, int (*pred)(uint32_t))
{
    size_t j = i;
    while (j < n && pred(s[j])) j++;
    return j - i;
}

/* \s+(?!\S) then \s+: a whitespace run, less its last character when a
 * non-space follows it and the run is longer than one (that character then
 * starts the next piece, e.g. " world"). */
static size_t spaces(const uint32_t *s, size_t n, size_t i)
{
    size_t len = run(s, n, i, is_s);
    if (i + len < n && len > 1) return len - 1;
    return len;
}

static size_t gpt2_at(const uint32_t *s, size_t n, size_t i)
{
    size_t len = contraction(s, n, i, 0);
    if (len) return len;
    size_t sp = s[i] == ' ' && i + 1 < n ? 1 : 0; /* " ?" */
    int (*classes[])(uint32_t) = {is_l, is_n, is_other};
    for (int k = 0; k < 3; k++) {
        if (sp && classes[k](s[i + 1])) return 1 + run(s, n, i + 1, classes[k]);
        if (classes[k](s[i])) return run(s, n, i, classes[k]);
    }
    return spaces(s, n, i);
}

static size_t llama3_at(const uint32_t *s, size_t n, size_t i, int max_digits)
{
    size_t len = contraction(s, n, i, 1);
    if (len) return len;
    /* [^\r\n\p{L}\p{N}]?\p{L}+ */
    if (!is_nl(s[i]) && !is_l(s[i]) && !is_n(s[i]) && i + 1 < n && is_l(s[i + 1])) return 1 + run(s, n, i + 1, is_l);
    if (is_l(s[i])) return run(s, n, i, is_l);
    /* \p{N}{1,max} */
    if (is_n(s[i])) {
        len = run(s, n, i, is_n);
        return len < (size_t)max_digits ? len : (size_t)max_digits;
    }
    /* " ?[^\s\p{L}\p{N}]+[\r\n]*" */
    size_t at = s[i] == ' ' && i + 1 < n && is_other(s[i + 1]) ? i + 1 : i;
    if (is_other(s[at])) {
        size_t j = at + run(s, n, at, is_other);
        return j + run(s, n, j, is_nl) - i;
    }
    /* \s*[\r\n]+: up to the last \r or \n of the whitespace run */
    size_t ws = run(s, n, i, is_s);
    for (size_t k = ws; k > 0; k--)
        if (is_nl(s[i + k - 1])) return k;
    return spaces(s, n, i);
}

int vkl_hf_regex_split(vkl_hf_regex rx, const uint32_t *s, size_t n, vkl_i32buf *spans)
{
    for (size_t i = 0; i < n;) {
        size_t len = rx == VKL_RX_GPT2 ? gpt2_at(s, n, i) : llama3_at(s, n, i, rx == VKL_RX_LLAMA3 ? 3 : 1);
        if (!len) len = 1; /* not reached: the patterns match every character */
        if (vkl_i32buf_push(spans, (int32_t)i) || vkl_i32buf_push(spans, (int32_t)(i + len))) return -1;
        i += len;
    }
    return 0;
}

int vkl_hf_digits_split(int individual, const uint32_t *s, size_t n, vkl_i32buf *spans)
{
    for (size_t i = 0; i < n;) {
        size_t len = is_n(s[i]) ? (individual ? 1 : run(s, n, i, is_n)) : run(s, n, i, is_not_n);
        if (vkl_i32buf_push(spans, (int32_t)i) || vkl_i32buf_push(spans, (int32_t)(i + len))) return -1;
        i += len;
    }
    return 0;
}
