/* Word-level tokenizers (internal): a Hugging Face tokenizer.json whose model
 * is WordLevel, with the Lowercase normalizer and the Whitespace
 * pre-tokenizer. vklora writes such files for its own models
 * (word_level_build.c) because OpenAI's CLIP BPE vocabulary cannot be shipped;
 * a word-level tokenizer is a vkl_clip_tokenizer in word_level mode, so the
 * prompt weighting and chunking above vkl_clip_encode work unchanged. */
#ifndef VKL_WORD_LEVEL_H
#define VKL_WORD_LEVEL_H

#include "clip_internal.h"

#define VKL_WL_BOS "<|startoftext|>"
#define VKL_WL_EOS "<|endoftext|>"
#define VKL_WL_UNK "<|unk|>"

/* Leftmost, then longest, occurrence in s[0..len) of one of the n strings in
 * toks (as the added-vocabulary split of tokenizers matches added tokens in
 * the raw text): its byte offset, or len when there is none. *which and *mlen
 * get the token's index and length. */
size_t vkl_wl_find_added(const char *s, size_t len, char *const *toks, size_t n, size_t *which,
                         size_t *mlen);

/* Normalises (Unicode lower case when lower is set) and pre-tokenizes the
 * UTF-8 text s[0..len) by the regex \w+|[^\w\s]+. *norm gets the
 * normalised words back to back (malloc'd, NUL-terminated), and spans their
 * start/end byte offsets into it (appended). `what` names the text in errors. */
int vkl_wl_pretokenize(const char *s, size_t len, int lower, const char *what, char **norm,
                       vkl_i32buf *spans, vkl_err *e);

/* Reads a tokenizer.json (file) into an empty t; dir_config, when not NULL,
 * is the tokenizer_config.json beside it (used for BOS/EOS when the file has
 * no post-processor template naming them). */
int vkl_wl_load(vkl_clip_tokenizer *t, const char *file, const char *dir_config, vkl_err *e);

/* Content ids of text: added tokens cut out first, every other piece
 * normalised, split and looked up (unknown words give t->unk). */
int vkl_wl_encode(const vkl_clip_tokenizer *t, const char *text, size_t len, vkl_i32buf *out, vkl_err *e);

/* A vocabulary on its way to a file: the words after the special tokens, in
 * id order (word_level_build.c). */
typedef struct {
    char **words;
    size_t n;
} vkl_wl_vocab;
void vkl_wl_vocab_free(vkl_wl_vocab *v);

/* Writes outdir/tokenizer.json, tokenizer_config.json and
 * special_tokens_map.json for the vocabulary, through a temporary folder
 * beside outdir that is then renamed (word_level_save.c). */
int vkl_wl_save(const vkl_wl_vocab *v, int max_length, const char *outdir, int force, vkl_err *e);

#endif
