/* Shared by `vklora lm generate` and `vklora lm train`: the tokenizer of a
 * LLaMA model folder (DIR/tokenizer.model, or a named SentencePiece model or
 * llama2.c .bin file) and encoding with the model's BOS first. */
#ifndef VKL_LM_TOK_H
#define VKL_LM_TOK_H

#include "tokenizer/bbpe.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/sp_bpe.h"

/* exactly one is set */
typedef struct vkl_app_lm_tok {
    vkl_sp *sp;
    vkl_l2c_tok *l2c;
    vkl_bbpe *bbpe; /* byte-level BPE of a GGUF file (tokenizer.ggml.model gpt2) */
} vkl_app_lm_tok;

/* path NULL: model/tokenizer.model, or the tokenizer in the metadata when
 * model is a GGUF file. Refuses a tokenizer larger than vocab. */
int vkl_app_lm_tok_open(const char *model, const char *path, int vocab, vkl_app_lm_tok *t, vkl_err *e);
void vkl_app_lm_tok_free(vkl_app_lm_tok *t);
/* BOS (bos, or 1 when the model names none) then the text's ids; *ids malloc'd. */
/* The text of ids (SentencePiece or byte-level BPE; not llama2.c), malloc'd. */
char *vkl_app_lm_tok_decode(const vkl_app_lm_tok *t, const int32_t *ids, int n);
int vkl_app_lm_tok_encode(const vkl_app_lm_tok *t, const char *text, int bos, int32_t **ids, int *n, vkl_err *e);

#endif
