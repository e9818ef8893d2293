/* Internals shared by the CLIP tokenizer's files. */
#ifndef VKL_CLIP_INTERNAL_H
#define VKL_CLIP_INTERNAL_H

#include "clip_tokenizer.h"
#include "strmap.h"
#include "unicode.h"

typedef struct {
    int32_t *v;
    size_t n, cap;
} vkl_i32buf;
int vkl_i32buf_push(vkl_i32buf *b, int32_t x);
void vkl_i32buf_free(vkl_i32buf *b);

struct vkl_clip_tokenizer {
    char *source;         /* file or folder loaded */
    vkl_strmap vocab;     /* byte-level token string -> id */
    char *strs;           /* id -> string: NUL-terminated strings back to back */
    size_t strs_len, strs_cap;
    size_t *str_off;      /* per id, offset into strs */
    size_t n_vocab;
    size_t str_off_cap;   /* ids str_off has room for (grown geometrically) */
    int32_t bos, eos;
    /* Padding after EOS: the tokenizer config's pad_token (EOS when none).
     * A pad token other than BOS/EOS is also a special token that
     * transformers cuts out of the raw text (SDXL's tokenizer_2 and SD 2.x
     * pad with "!"): pad_text holds its code points then (n 0 otherwise). */
    int32_t pad;
    vkl_ucbuf pad_text;
    int32_t byte_id[256];     /* id of each byte as a word-inner symbol */
    int32_t byte_eow_id[256]; /* ... and as a word's last symbol ("x</w>") */
    /* merges: (left id, right id) -> rank and merged id */
    uint64_t *mkey;       /* ((uint64)left << 32 | right) + 1, 0 = empty */
    uint32_t *mrank;
    int32_t *mres;
    size_t mcap, n_merges;
    /* per-word BPE cache: word bytes -> offset into pool ([len, ids...]) */
    vkl_strmap cache;
    vkl_i32buf pool;
    /* word-level mode (tokenizer.json with a WordLevel model, word_level.h):
     * no merges or byte symbols; words are looked up whole. */
    int word_level;
    int wl_lowercase;     /* normalizer Lowercase */
    int32_t unk;          /* id of unknown words */
    int32_t comma;        /* id of ",", -1 when absent: A1111's comma backtracking */
    char **added;         /* added_tokens, cut out of the raw text before normalising */
    int32_t *added_id;
    size_t n_added;
};

/* The code point that byte b stands for in token strings (GPT-2's
 * bytes_to_unicode), and the byte order CLIP uses for its first 256 ids. */
uint32_t vkl_clip_byte_cp(int b);
int vkl_clip_byte_order(int i);

/* Vocabulary building (clip_vocab.c). */
int vkl_clip_vocab_add(vkl_clip_tokenizer *t, const char *tok, size_t len, int32_t id);
/* After every token is in: checks ids are dense, finds specials and byte ids. */
int vkl_clip_vocab_finish(vkl_clip_tokenizer *t, const char *what, vkl_err *e);
/* Adds the merge "a b" with the given rank (later duplicates win, as in a dict). */
int vkl_clip_merge_add(vkl_clip_tokenizer *t, const char *a, size_t alen, const char *b,
                       size_t blen, uint32_t rank, vkl_err *e);
/* Rank and result of merging (a, b); UINT32_MAX when they do not merge. */
uint32_t vkl_clip_merge_find(const vkl_clip_tokenizer *t, int32_t a, int32_t b, int32_t *res);
/* Merge limit CLIP uses: lines[1 : 49152 - 256 - 2 + 1]. */
#define VKL_CLIP_MAX_MERGES (49152 - 256 - 2)

/* The most a tokenizer file may hold (vocab.json, merges.txt, tokenizer.json, ...). */
#define VKL_CLIP_MAX_FILE_BYTES ((size_t)64 << 20)
int vkl_clip_load_folder(vkl_clip_tokenizer *t, const char *dir, vkl_err *e);
/* pad_token of a tokenizer folder's tokenizer_config.json, overridden by its
 * special_tokens_map.json as transformers does (clip_pad.c); EOS without one. */
int vkl_clip_pad_from_folder(vkl_clip_tokenizer *t, const char *dir, vkl_err *e);
int vkl_clip_load_bpe_gz(vkl_clip_tokenizer *t, const char *file, vkl_err *e);

/* Byte-level BPE of one pre-split word (raw UTF-8 bytes); ids appended. */
int vkl_clip_bpe(vkl_clip_tokenizer *t, const char *word, size_t len, vkl_i32buf *out, vkl_err *e);

/* Text cleanup before pre-splitting; both append normalised text to out. */
int vkl_clip_clean_basic(const uint32_t *in, size_t n, vkl_ucbuf *out);
int vkl_clip_clean_ftfy(const uint32_t *in, size_t n, vkl_ucbuf *out);

/* CLIP's pre-split regex: spans [start, end) of the words, appended to out as
 * start/end pairs. */
int vkl_clip_presplit(const uint32_t *s, size_t n, vkl_i32buf *spans);

#endif
