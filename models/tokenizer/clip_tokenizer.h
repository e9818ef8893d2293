/* CLIP byte-level BPE tokenizer, exactly as Stable Diffusion 1.x/2.x feed their
 * text encoders (Hugging Face CLIPTokenizer; optionally its ftfy behaviour),
 * plus AUTOMATIC1111 prompt weighting and long-prompt chunking.
 * The same type also holds a word-level tokenizer (tokenizer.json with a
 * WordLevel model, as `vklora tokenizer build` writes for vklora's own
 * models): encoding is then lower-casing, the Whitespace split and a vocabulary
 * lookup (unknown words give the unk token; the ftfy flag does nothing), and
 * token strings are the words themselves; everything else is the same.
 *
 * A tokenizer is read-only after loading except for its per-word BPE cache, so
 * one tokenizer must not be used by two threads at once. */
#ifndef VKL_CLIP_TOKENIZER_H
#define VKL_CLIP_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "vkl_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_CLIP_CONTEXT 77 /* ids per encoder row: BOS + 75 + EOS */
#define VKL_CLIP_CHUNK 75   /* content ids per row */

typedef struct vkl_clip_tokenizer vkl_clip_tokenizer;

/* Finds the vocabulary: `path` when not NULL/empty, else $VKLORA_CLIP_VOCAB.
 * Accepted: a folder with vocab.json + merges.txt (a diffusers `tokenizer/`
 * folder, or a model folder that has one), or openai/CLIP's
 * bpe_simple_vocab_16e6.txt(.gz); or a word-level tokenizer: a folder (or a
 * model folder's tokenizer/) with a Hugging Face tokenizer.json whose model is
 * WordLevel, or such a *.json file itself. Writes the file or folder to use
 * into out. */
int vkl_clip_vocab_resolve(const char *path, char *out, size_t cap, vkl_err *e);

/* Loads the vocabulary found by vkl_clip_vocab_resolve(path). */
int vkl_clip_tokenizer_load(vkl_clip_tokenizer **out, const char *path, vkl_err *e);
void vkl_clip_tokenizer_free(vkl_clip_tokenizer *t);

size_t vkl_clip_vocab_size(const vkl_clip_tokenizer *t);
int32_t vkl_clip_bos(const vkl_clip_tokenizer *t); /* <|startoftext|>, 49406 for CLIP */
int32_t vkl_clip_eos(const vkl_clip_tokenizer *t); /* <|endoftext|>, 49407; SD 1.x pads with it */
/* The id rows are padded with after their EOS: the folder's pad_token
 * (tokenizer_config.json / special_tokens_map.json), else EOS. SDXL's
 * tokenizer_2 and SD 2.x tokenizers pad with "!" (id 0). */
int32_t vkl_clip_pad(const vkl_clip_tokenizer *t);
/* Sets the pad token (byte-level string, e.g. "!" or "<|endoftext|>"), for a
 * vocabulary that came without a config (a single-file checkpoint's second
 * encoder). A pad token other than BOS/EOS is split out of prompts as a
 * special token, as transformers does; "" or NULL restores EOS padding. */
int vkl_clip_set_pad(vkl_clip_tokenizer *t, const char *token, vkl_err *e);
/* Token string in byte-level form ("photo</w>", "Ã©"); NULL when id is out of range. */
const char *vkl_clip_token_str(const vkl_clip_tokenizer *t, int32_t id);
/* Id of a token string in byte-level form, -1 when absent. */
int32_t vkl_clip_token_id(const vkl_clip_tokenizer *t, const char *tok);

enum {
    /* Follow ftfy.fix_text (what transformers does when ftfy is installed, and
     * openai/CLIP always) instead of transformers' BasicTokenizer cleanup:
     * HTML entities, ligatures, full-width forms and curly quotes are fixed;
     * CJK ideographs are not spaced; format characters (ZWJ, ZWSP) are kept.
     * Covers the cases ftfy's default configuration fixes in clean text; it
     * does not repair mojibake. */
    VKL_CLIP_FTFY_LIKE = 1
};

/* Content ids of text (UTF-8, len bytes), no BOS/EOS, not truncated.
 * *ids is malloc'd (free it); *n may be 0. */
int vkl_clip_encode(vkl_clip_tokenizer *t, const char *text, size_t len, unsigned flags,
                    int32_t **ids, size_t *n, vkl_err *e);

/* One encoder row as SD pipelines build it: BOS, the first 75 content ids,
 * EOS, then the pad id up to 77. *n_content (may be NULL) gets the untruncated
 * content length so callers can warn about truncation. */
int vkl_clip_encode_padded(vkl_clip_tokenizer *t, const char *text, unsigned flags,
                           int32_t out[VKL_CLIP_CONTEXT], size_t *n_content, vkl_err *e);

/* ---- AUTOMATIC1111 prompt syntax ---------------------------------------- */

/* One piece of a parsed prompt. A BREAK keyword is the text "BREAK" with
 * weight -1 (as in A1111, where brackets around it multiply that weight too
 * and then make it plain text again). */
typedef struct {
    char *text;
    double weight;
} vkl_prompt_span;

/* A1111's parse_prompt_attention: "(x)" x1.1, "[x]" /1.1, "(x:1.3)", nesting,
 * "\(" "\)" "\[" "\]" "\\" escapes, unclosed brackets applied to the end,
 * BREAK on its own word; adjacent spans of equal weight merged. Fails only on
 * a weight that is not a number ("(x:1.2.3)"). */
int vkl_prompt_parse(const char *prompt, vkl_prompt_span **spans, size_t *n, vkl_err *e);
void vkl_prompt_spans_free(vkl_prompt_span *spans, size_t n);

typedef struct {
    unsigned flags;      /* VKL_CLIP_FTFY_LIKE or 0 */
    int plain;           /* 1: no emphasis syntax (A1111 emphasis "None") */
    int comma_backtrack; /* A1111's comma_padding_backtrack, its default is 20; 0 = off */
} vkl_prompt_opts;

/* A prompt as rows for the text encoder: n_chunks rows of 77 ids
 * (BOS, up to 75 ids, EOS, then the pad id; A1111 likewise pads after the
 * first EOS with the model's pad id) and a weight per id (1.0 for BOS, EOS and
 * padding). Prompts longer than 75 ids, or with BREAK, take several rows, cut
 * as A1111 cuts them (moving the words after a recent comma to the next row). */
typedef struct {
    int32_t *ids;
    float *weights;
    size_t n_chunks;
    size_t n_tokens; /* A1111's token count: 75 per full row plus the last row's ids */
} vkl_prompt_tokens;

/* opts may be NULL: emphasis on, comma_backtrack 20, no ftfy. */
int vkl_clip_encode_prompt(vkl_clip_tokenizer *t, const char *prompt, const vkl_prompt_opts *opts,
                           vkl_prompt_tokens *out, vkl_err *e);
void vkl_prompt_tokens_free(vkl_prompt_tokens *p);

#ifdef __cplusplus
}
#endif

#endif
