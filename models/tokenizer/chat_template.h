/* Chat templates: a documented built-in set in place of a Jinja engine,
 * rendering exactly what the common models' chat_template strings render.
 *
 *   llama3   <|begin_of_text|> then per message
 *            <|start_header_id|>ROLE<|end_header_id|>\n\n CONTENT(trimmed) <|eot_id|>
 *            generation prompt: <|start_header_id|>assistant<|end_header_id|>\n\n
 *   chatml   (Qwen2/2.5) a default system message first when the template
 *            has one and the conversation does not start with a system turn;
 *            per message <|im_start|>ROLE\n CONTENT <|im_end|>\n
 *            generation prompt: <|im_start|>assistant\n
 *   mistral  BOS, then user turns [INST] CONTENT [/INST] and assistant turns
 *            CONTENT EOS, alternating from a user turn (no system role)
 *
 * A rendering is a list of segments: text, or the BOS / EOS id (for
 * SentencePiece tokenizers, which do not read "<s>" in text as BOS); the
 * assistant's content and its end marker are "trained" segments: the answer
 * tokens whose loss `lm train` keeps. */
#ifndef VKL_CHAT_TEMPLATE_H
#define VKL_CHAT_TEMPLATE_H

#include <stdint.h>

#include "vkl_base.h"

typedef enum { VKL_CHAT_NONE = 0, VKL_CHAT_LLAMA3, VKL_CHAT_CHATML, VKL_CHAT_MISTRAL } vkl_chat_kind;

typedef struct vkl_chat {
    vkl_chat_kind kind;
    char default_system[256]; /* chatml: "" when none */
} vkl_chat;

/* Which built-in a tokenizer_config.json chat_template string is (by its
 * markers; chatml's default system message is taken from it); -1 naming
 * the built-ins when it is none of them. */
int vkl_chat_from_template(const char *jinja, vkl_chat *c, vkl_err *e);
/* llama3, chatml or mistral. */
int vkl_chat_from_name(const char *name, vkl_chat *c, vkl_err *e);

typedef struct vkl_chat_msg {
    const char *role, *content;
} vkl_chat_msg;

enum { VKL_CHAT_TEXT = 0, VKL_CHAT_BOS = 1, VKL_CHAT_EOS = 2 };
typedef struct vkl_chat_seg {
    int kind;    /* VKL_CHAT_TEXT, _BOS, _EOS */
    char *text;  /* TEXT */
    int trained; /* part of an assistant answer */
} vkl_chat_seg;

int vkl_chat_render(const vkl_chat *c, const vkl_chat_msg *m, int n, int add_generation_prompt, vkl_chat_seg **segs,
                    int *nseg, vkl_err *e);
void vkl_chat_segs_free(vkl_chat_seg *s, int n);

/* Encodes text without BOS or template ids (the tokenizer's added tokens are
 * recognised in it). ids malloc'd. */
typedef int (*vkl_chat_encode_fn)(void *user, const char *text, int32_t **ids, int *n, vkl_err *e);

/* Ids of a rendering, and per id whether it is trained. Consecutive text
 * segments are encoded as one text (as the template's output is): each
 * segment's ids are those the text up to its end adds to the text before it
 * (where a merge crosses a boundary, the tokens from the first difference
 * belong to the later segment). bos / eos: the ids for BOS / EOS segments
 * (-1 refuses them). *ids and *trained malloc'd. */
int vkl_chat_tokenize(const vkl_chat_seg *s, int nseg, vkl_chat_encode_fn enc, void *user, int bos, int eos,
                      int32_t **ids, unsigned char **trained, int *n, vkl_err *e);

#endif
