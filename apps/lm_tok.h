/* Shared by `vklora lm generate` and `vklora lm train`: the tokenizer of a
 * LLaMA-family model folder (DIR/tokenizer.model, else DIR/tokenizer.json; or
 * a named SentencePiece model, llama2.c .bin file or Hugging Face
 * tokenizer.json with a byte-level BPE) and encoding with the model's BOS
 * first (for tokenizer.json: what its template or tokenizer_config.json adds). */
#ifndef VKL_LM_TOK_H
#define VKL_LM_TOK_H

#include "tokenizer/bbpe.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/hf_bpe.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/sp_bpe.h"

#include <stddef.h>

typedef struct vkl_app_lm_tok {
    vkl_sp *sp;
    vkl_l2c_tok *l2c;
    vkl_hfbpe *bpe;  /* byte-level BPE of a tokenizer.json */
    vkl_bbpe *bbpe;  /* byte-level BPE of a GGUF file (tokenizer.ggml.model gpt2) */
    /* the model folder's tokenizer_config.json chat_template as a built-in
     * (chat_template.h); kind VKL_CHAT_NONE when it has none or an unknown
     * one (chat_error says which) */
    vkl_chat chat;
    char chat_error[512];
} vkl_app_lm_tok;

/* path NULL: model/tokenizer.model, else model/tokenizer.json, or the
 * tokenizer in the metadata when model is a GGUF file. Refuses a tokenizer
 * larger than vocab. */
int vkl_app_lm_tok_open(const char *model, const char *path, int vocab, vkl_app_lm_tok *t, vkl_err *e);
void vkl_app_lm_tok_free(vkl_app_lm_tok *t);
/* BOS (bos, or 1 when the model names none) then the text's ids; *ids malloc'd. */
/* The text of ids (SentencePiece or byte-level BPE; not llama2.c), malloc'd. */
char *vkl_app_lm_tok_decode(const vkl_app_lm_tok *t, const int32_t *ids, int n);
int vkl_app_lm_tok_encode(const vkl_app_lm_tok *t, const char *text, int bos, int32_t **ids, int *n, vkl_err *e);

/* ids of text alone: no BOS, no template ids (added tokens in the text are
 * recognised by a tokenizer.json). */
int vkl_app_lm_tok_encode_raw(const vkl_app_lm_tok *t, const char *text, int32_t **ids, int *n, vkl_err *e);

/* The prompt of a chat: the user's text (after an optional system message)
 * rendered with t->chat and its generation prompt (chat_template.h). */
int vkl_app_lm_tok_chat_prompt(const vkl_app_lm_tok *t, const char *system, const char *user, int bos, int eos,
                               int32_t **ids, int *n, vkl_err *e);
/* The prompt of a whole conversation (n messages; roles system, user,
 * assistant) rendered with t->chat, the assistant's turn opened. */
int vkl_app_lm_tok_chat_messages(const vkl_app_lm_tok *t, const vkl_chat_msg *m, int n, int bos, int eos,
                                 int32_t **ids, int *n_ids, vkl_err *e);
/* The BOS id the tokenizer puts first (encoding nothing), else bos; *adds
 * says whether it puts one. -2 on error. */
int vkl_app_lm_tok_lead_bos(const vkl_app_lm_tok *t, int bos, int *adds, vkl_err *e);

/* The text of ids (special tokens left out) appended to *buf as raw bytes
 * (*len used, *cap room); a byte-level BPE may end inside a character. */
int vkl_app_lm_tok_text(const vkl_app_lm_tok *t, const int32_t *ids, int n, char **buf, size_t *len, size_t *cap);
/* The id that ends a text: the model's eos, else the tokenizer's (-1: none). */
int vkl_app_lm_tok_eos(const vkl_app_lm_tok *t, int model_eos);

#endif
