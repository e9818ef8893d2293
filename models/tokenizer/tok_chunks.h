/* Long texts for the BPE encoders (sp_bpe.h, llama2c_tokenizer.h): the
 * text is cut at single spaces between two words and each part encoded
 * alone, which bounds the encoders' working memory per call (their merge
 * loop, tokenizer/bpe_merge.h, is O(n log n) in the text's length; it was
 * quadratic when this was written). The part after a cut starts with the encoder's dummy-prefix
 * space, which stands for the dropped space, and LLaMA vocabularies have no
 * piece spanning the start of a word, so the concatenated ids are those of
 * the whole text (tests/models/test_tok_chunks.c checks both encoders). */
#ifndef VKL_TOK_CHUNKS_H
#define VKL_TOK_CHUNKS_H

#include <stddef.h>

/* End of the part starting at start: the first single space at or after
 * start + min_len with a non-space on both sides (the part excludes it; the
 * next part starts after it), or len when there is none. */
size_t vkl_tok_chunk_end(const char *text, size_t start, size_t len, size_t min_len);

#endif
