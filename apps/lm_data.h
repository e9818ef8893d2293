/* Training samples for `vklora lm train`: rows of seq-len token ids with
 * their labels (the ids, -100 on padding) and attention mask.
 *   plain text: the whole file tokenized once (BOS first) and cut into
 *     consecutive seq-len windows; a shorter tail of at least two tokens is
 *     kept, padded;
 *   .jsonl: one sample per line, truncated to seq-len or padded, blank
 *     lines skipped; a line is
 *       {"text": T}: T with BOS first, every token a label;
 *       {"prompt": P, "completion": C}: BOS, P, C, EOS encoded as one text
 *         with labels on C's tokens and EOS only (chat_template.h's rule at
 *         the boundary);
 *       {"messages": [{"role", "content"}, ...]}: rendered with the chat
 *         template (the model's, or --chat-template), labels on the
 *         assistant's answers and their end markers only.
 *     A sample whose labels all fall beyond seq-len is dropped. */
#ifndef VKL_LM_DATA_H
#define VKL_LM_DATA_H

#include "lm_tok.h"

typedef struct vkl_app_lm_data {
    int n, L;        /* samples, tokens per sample */
    int32_t *ids;    /* [n, L] */
    int32_t *labels; /* [n, L] */
    int *attn;       /* [n, L], 1 = token */
    long long tokens; /* real (unpadded) tokens */
} vkl_app_lm_data;

/* pad: the id written on padded positions (masked, never a label); eos: the
 * model's end id (-1: none; then completions end without one). pack (.jsonl):
 * the samples, each ended by EOS, run on one after another and are cut into
 * full rows of L (the last one padded), their label flags kept; attention
 * crosses the sample boundaries, as in a plain concatenation. */
int vkl_app_lm_data_load(const char *path, const vkl_app_lm_tok *tok, int bos, int eos, int pad, int L, int pack,
                         vkl_app_lm_data *d, vkl_err *e);
void vkl_app_lm_data_free(vkl_app_lm_data *d);

#endif
