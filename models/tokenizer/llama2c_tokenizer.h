/* llama2.c's tokenizer file (tokenizer.bin / tok512.bin) and its encoder:
 * int32 max_token_length, then per token: float32 score, int32 byte length,
 * bytes. Encoding as llama2.c's run.c: an optional BOS, a dummy-prefix " "
 * piece for non-empty text, one piece per UTF-8 code point (byte fallback:
 * id = byte + 3), then repeatedly the adjacent pair whose concatenation is a
 * piece with the highest score is merged (the first pair on ties). */
#ifndef VKL_LLAMA2C_TOKENIZER_H
#define VKL_LLAMA2C_TOKENIZER_H

#include "vkl_base.h"

typedef struct vkl_l2c_tok vkl_l2c_tok;

/* vocab: the model's vocabulary size (the file holds no count). */
int vkl_l2c_tok_load(const char *path, int vocab, vkl_l2c_tok **out, vkl_err *e);
void vkl_l2c_tok_free(vkl_l2c_tok *t);
int vkl_l2c_tok_vocab(const vkl_l2c_tok *t);
/* ids: malloc'd. bos/eos: ids to add (-1: none). */
int vkl_l2c_tok_encode(const vkl_l2c_tok *t, const char *text, int bos, int eos, int32_t **ids, int *n, vkl_err *e);
/* Text of token id after token prev, as run.c prints it: the leading space of
 * the first piece after BOS (id 1) dropped, <0xXX> pieces as that byte, a lone
 * byte that is neither printable nor space dropped. Writes into buf (>= 2 *
 * max piece length + 8 bytes); returns the length. */
int vkl_l2c_tok_decode(const vkl_l2c_tok *t, int prev, int id, char *buf, size_t size);

#endif
