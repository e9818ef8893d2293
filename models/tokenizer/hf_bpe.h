/* Hugging Face tokenizer.json with a byte-level BPE model (GPT-2, Llama 3,
 * Qwen2/2.5, SmolLM, Mistral's tekken-style files): what transformers'
 * fast tokenizers compute, written out by hand.
 *
 * Encoding, as the tokenizers library runs its pipeline:
 *   1. added tokens are cut out of the raw text first (leftmost, then
 *      longest match; their single_word / lstrip / rstrip flags honoured);
 *      those marked normalized:false before the normalizer, the others after;
 *   2. the normalizer (none, or NFC as Qwen2 uses) on the other pieces;
 *   3. the pre-tokenizer: ByteLevel (GPT-2's regex, optional prefix space),
 *      Split with the GPT-2, Llama 3 or Qwen2 regex (hand-coded scanners over
 *      the project's Unicode tables, hf_bpe_pretok.c), Digits, or a Sequence
 *      of them; the pieces' bytes are then mapped to GPT-2's printable
 *      characters (bytes_to_unicode);
 *   4. BPE: a piece's symbols merge by rank (lowest first, leftmost among
 *      equal ranks); with ignore_merges a piece that is a token is kept whole;
 *   5. the post-processor's template (BOS/EOS ids around the text), unless
 *      tokenizer_config.json sets add_bos_token / add_eos_token and its
 *      tokenizer_class is a LLaMA/CodeLlama/Gemma one (or absent): the flags
 *      then decide, as those transformers classes rebuild their template.
 * Decoding maps the tokens' characters back to bytes (an added token whose
 * characters are not in the byte map contributes its own UTF-8), and turns
 * invalid UTF-8 into U+FFFD per maximal invalid subsequence, as Rust's
 * String::from_utf8_lossy does.
 *
 * Anything else in the file (other models, normalizers, pre-tokenizers,
 * regexes, BPE dropout, subword prefixes) is refused with a message that
 * names it, rather than tokenized differently. */
#ifndef VKL_HF_BPE_H
#define VKL_HF_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "vkl_base.h"

typedef struct vkl_hfbpe vkl_hfbpe;

/* path: tokenizer.json; config: tokenizer_config.json or NULL (a missing
 * file is fine: the post-processor alone decides BOS/EOS). */
int vkl_hfbpe_load(const char *path, const char *config, vkl_hfbpe **out, vkl_err *e);
/* The same from memory (label names the text in errors). */
int vkl_hfbpe_load_text(const char *json, const char *config_json, const char *label, vkl_hfbpe **out, vkl_err *e);
void vkl_hfbpe_free(vkl_hfbpe *t);

/* One more than the largest id (vocabulary and added tokens). */
int vkl_hfbpe_size(const vkl_hfbpe *t);
/* The token's string (byte-mapped for vocabulary tokens), NULL if none. */
const char *vkl_hfbpe_token(const vkl_hfbpe *t, int id);
int vkl_hfbpe_find(const vkl_hfbpe *t, const char *token); /* id or -1 */
int vkl_hfbpe_is_special(const vkl_hfbpe *t, int id);
/* BOS / EOS ids named by tokenizer_config.json or the template, -1 if none. */
int vkl_hfbpe_bos(const vkl_hfbpe *t);
int vkl_hfbpe_eos(const vkl_hfbpe *t);

/* ids of text (UTF-8); with add_special the template's (or add_bos_token's)
 * ids around them. *ids malloc'd (NULL when *n is 0). */
int vkl_hfbpe_encode(const vkl_hfbpe *t, const char *text, int add_special, int32_t **ids, int *n, vkl_err *e);

/* The raw bytes of ids appended to *buf (growable: *len used, *cap room),
 * special tokens left out when skip_special is set. Not NUL-terminated;
 * may end inside a UTF-8 character (what a stream holds back). */
int vkl_hfbpe_decode_bytes(const vkl_hfbpe *t, const int32_t *ids, int n, int skip_special, char **buf,
                           size_t *len, size_t *cap);
/* Text of ids, invalid UTF-8 replaced; malloc'd, NULL when out of memory. */
char *vkl_hfbpe_decode(const vkl_hfbpe *t, const int32_t *ids, int n, int skip_special);
/* from_utf8_lossy of s[0..len): malloc'd, NUL-terminated. */
char *vkl_utf8_lossy(const char *s, size_t len);
/* transformers' clean_up_tokenization, in place: " ." " ?" " !" " ,"
 * " ' " " n't" " 'm" " 's" " 've" " 're" lose their space, replaced in that
 * order over the whole string. vkl_hfbpe_decode applies it when
 * tokenizer_config.json sets clean_up_tokenization_spaces (Llama 3, GPT-2). */
void vkl_hf_clean_up_spaces(char *s);
int vkl_hfbpe_cleans_up(const vkl_hfbpe *t);

#endif
