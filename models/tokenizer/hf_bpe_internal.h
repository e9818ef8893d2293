/* Internals shared by the hf_bpe_*.c files (hf_bpe.h). */
#ifndef VKL_HF_BPE_INTERNAL_H
#define VKL_HF_BPE_INTERNAL_H

#include "clip_internal.h" /* vkl_i32buf */
#include "hf_bpe.h"
#include "strmap.h"
#include "unicode.h"

/* The split regexes vklora knows, by the exact pattern strings the files carry. */
typedef enum { VKL_RX_GPT2, VKL_RX_LLAMA3, VKL_RX_QWEN2 } vkl_hf_regex;

/* Appends the [start, end) code-point spans of the regex's matches over
 * s[0..n) (the three regexes match every character, so the spans tile s).
 * Returns -1 when out of memory. */
int vkl_hf_regex_split(vkl_hf_regex rx, const uint32_t *s, size_t n, vkl_i32buf *spans);
/* The Digits pre-tokenizer: numbers (Unicode N) isolated one by one
 * (individual) or as runs; the rest left in runs between them. */
int vkl_hf_digits_split(int individual, const uint32_t *s, size_t n, vkl_i32buf *spans);
/* The regex a pattern string is, or -1. */
int vkl_hf_regex_from_pattern(const char *pattern);

typedef enum { VKL_PRE_SPLIT, VKL_PRE_DIGITS, VKL_PRE_BYTELEVEL } vkl_hf_pre_kind;
typedef struct {
    vkl_hf_pre_kind kind;
    vkl_hf_regex regex; /* SPLIT; BYTELEVEL with use_regex: GPT-2's */
    int arg;            /* DIGITS: individual_digits; BYTELEVEL: use_regex */
} vkl_hf_pre_step;

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    unsigned char single_word, lstrip, rstrip, normalized, special;
} vkl_hf_added;

#define VKL_HF_MAX_STEPS 8
#define VKL_HF_MAX_AROUND 8

struct vkl_hfbpe {
    vkl_strmap vocab;    /* model vocabulary: byte-mapped token -> id */
    char **tok;          /* id -> token (vocabulary or added), NULL where none */
    unsigned char *special;
    int n_ids;
    /* merges: (left id, right id) -> rank and merged id, open addressing */
    uint64_t *mkey;      /* ((uint64)left << 32 | right) + 1; 0 = empty */
    uint32_t *mrank;
    int32_t *mres;
    size_t mcap;
    vkl_hf_added *added;
    size_t n_added;
    int nfc;             /* normalizer NFC */
    int prefix_space;    /* ByteLevel add_prefix_space (first step) */
    vkl_hf_pre_step steps[VKL_HF_MAX_STEPS];
    int n_steps;
    int ignore_merges;
    int32_t unk;         /* -1: none */
    int fuse_unk;
    int32_t before[VKL_HF_MAX_AROUND], after[VKL_HF_MAX_AROUND]; /* add_special ids around the text */
    int n_before, n_after;
    int32_t bos, eos;
    int cleanup;            /* clean_up_tokenization_spaces */
    uint32_t byte_cp[256];  /* byte -> GPT-2's printable code point */
    int16_t cp_byte[512];   /* and back (-1: not a byte's code point) */
};

/* The post-processor (NULL or null: none) and tokenizer_config.json (NULL:
 * none) of a tokenizer whose vocabulary and added tokens are read
 * (hf_bpe_special.c). */
struct cJSON;
int vkl_hfbpe_read_post(vkl_hfbpe *t, const struct cJSON *post, const char *file, vkl_err *e);
int vkl_hfbpe_read_config(vkl_hfbpe *t, const struct cJSON *cfg, const char *file, vkl_err *e);

/* Merge lookup: rank and merged id of the pair, or -1. */
int vkl_hfbpe_merge_find(const vkl_hfbpe *t, int32_t left, int32_t right, int32_t *merged);

#endif
