/* Byte-level BPE (GPT-2's scheme) as GGUF files embed it: tokenizer.ggml.model
 * "gpt2", tokens (strings over GPT-2's byte-to-code-point alphabet), merges
 * ("A B", in priority order), token types. Encoding: the text is split by
 * GPT-2's pre-tokenizer pattern ('s 't 're 've 'm 'll 'd, " ?letters",
 * " ?digits", " ?other", whitespace runs with the last space left to the
 * next word); each piece's bytes become one symbol each and the adjacent pair
 * with the best-ranked merge is merged until none is left. Special tokens in
 * the text are not recognised (they are text). tokenizer.ggml.pre other than
 * the GPT-2 pattern ("default", "gpt2", or absent) is refused. */
#ifndef VKL_BBPE_H
#define VKL_BBPE_H

#include "io/gguf.h"

typedef struct vkl_bbpe vkl_bbpe;

int vkl_bbpe_from_gguf(const vkl_gguf_file *f, vkl_bbpe **out, vkl_err *e);
void vkl_bbpe_free(vkl_bbpe *t);
int vkl_bbpe_size(const vkl_bbpe *t);
/* ids malloc'd (no BOS). */
int vkl_bbpe_encode(const vkl_bbpe *t, const char *text, int32_t **ids, int *n, vkl_err *e);
/* Bytes of the ids' tokens (control tokens dropped), malloc'd, NUL-terminated. */
char *vkl_bbpe_decode(const vkl_bbpe *t, const int32_t *ids, int n);

#endif
