/* Building a word-level tokenizer from caption files, for vklora's own text
 * encoders: a vocabulary the project can ship (OpenAI's CLIP BPE cannot be),
 * saved as a Hugging Face tokenizers `tokenizer.json` (WordLevel model,
 * Lowercase normalizer, Whitespace pre-tokenizer, "<|startoftext|> $A
 * <|endoftext|>" template) with tokenizer_config.json and
 * special_tokens_map.json, so that vkl_clip_tokenizer_load and
 * tokenizers' Tokenizer.from_file read the same folder. */
#ifndef VKL_WORD_TOKENIZER_H
#define VKL_WORD_TOKENIZER_H

#include <stddef.h>

#include "vkl_base.h"

typedef struct {
    int min_count;  /* words seen fewer times are left out (and encode as <|unk|>) */
    int max_length; /* model_max_length in tokenizer_config.json */
    int force;      /* replace an existing output folder */
} vkl_word_build_opts;

typedef struct {
    size_t n_files;    /* caption files read */
    size_t n_words;    /* words in them, repeats included */
    size_t n_distinct; /* different words */
    size_t vocab_size; /* tokens written: 3 special tokens + the words kept */
} vkl_word_build_stats;

/* min_count 1, max_length 77, force 0. */
void vkl_word_build_opts_default(vkl_word_build_opts *o);

/* Reads every *.txt file under the n_dirs folders (sub-folders included,
 * hidden entries skipped, names in byte order so the result never depends on
 * the file system), and writes the tokenizer folder outdir: ids 0..2 are
 * <|startoftext|>, <|endoftext|>, <|unk|>, then the words with at least
 * min_count uses, most used first, ties in byte order. The folder is written
 * under a temporary name and moved into place; an existing outdir is refused
 * unless o->force. o and st may be NULL. */
int vkl_word_tokenizer_build(const char *const *dirs, size_t n_dirs, const vkl_word_build_opts *o,
                             const char *outdir, vkl_word_build_stats *st, vkl_err *e);

#endif
