/* The SentencePiece tokenizer embedded in a GGUF file's metadata
 * (tokenizer.ggml.model "llama": tokens, scores, token_type,
 * add_space_prefix), as the BPE tokenizer of sp_bpe.h. */
#ifndef VKL_SP_GGUF_H
#define VKL_SP_GGUF_H

#include "io/gguf.h"
#include "tokenizer/sp_bpe.h"

int vkl_sp_from_gguf(const vkl_gguf_file *f, vkl_sp **out, vkl_err *e);
int vkl_sp_load_gguf(const char *path, vkl_sp **out, vkl_err *e);

#endif
