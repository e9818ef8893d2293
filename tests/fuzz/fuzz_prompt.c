/* libFuzzer target: text that users type or that comes with datasets —
 * A1111 prompt weighting ("(a:1.2) [b] BREAK"), kohya caption processing
 * (shuffle, keep tokens, tag dropout, trigger word) — and, when the CLIP
 * vocabulary is at $VKLORA_SHARED/data/clip-bpe, CLIP tokenisation of the
 * same text with and without the ftfy-like cleaning and as a weighted prompt.
 * Prompt spans must come back with finite weights. */
#include "fuzz_util.h"
#include "tokenizer/clip_tokenizer.h"
#include "train/dataset.h"

#include <math.h>

static vkl_clip_tokenizer *clip(void)
{
    static int tried;
    static vkl_clip_tokenizer *t;
    if (!tried) {
        tried = 1;
        const char *shared = getenv("VKLORA_SHARED");
        char path[1024];
        snprintf(path, sizeof path, "%s/data/clip-bpe", shared ? shared : "../shared");
        vkl_err e = {0};
        if (vkl_clip_tokenizer_load(&t, path, &e)) {
            fprintf(stderr, "fuzz_prompt: no CLIP vocabulary (%s); tokenisation is not fuzzed\n", e.msg);
            t = NULL;
        }
    }
    return t;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint8_t knobs = data[0], keep = data[1];
    char *text = fuzz_cstr(data + 2, size - 2);
    vkl_err e = {0};

    vkl_prompt_span *spans = NULL;
    size_t n = 0;
    if (vkl_prompt_parse(text, &spans, &n, &e) == 0) {
        for (size_t i = 0; i < n; i++) {
            if (!spans[i].text || !isfinite(spans[i].weight)) abort();
        }
        vkl_prompt_spans_free(spans, n);
    } else {
        FUZZ_ERROR_SAYS_WHY(e);
    }

    vkl_caption_opts o = {.shuffle = knobs & 1, .keep_tokens = keep % 8, .dropout_rate = (knobs & 2) ? 0.5 : 0,
                          .tag_dropout_rate = (knobs & 4) ? 0.3 : 0, .trigger = (knobs & 8) ? "sks style" : NULL};
    char *out = NULL;
    if (vkl_caption_process(&o, text, knobs, keep, 3, &out, &e) == 0) free(out);
    else FUZZ_ERROR_SAYS_WHY(e);

    vkl_clip_tokenizer *t = clip();
    if (t) {
        int32_t *ids = NULL;
        size_t nid = 0;
        unsigned flags = (knobs & 16) ? VKL_CLIP_FTFY_LIKE : 0;
        if (vkl_clip_encode(t, text, strlen(text), flags, &ids, &nid, &e) == 0) {
            for (size_t i = 0; i < nid; i++)
                if (ids[i] < 0 || (size_t)ids[i] >= vkl_clip_vocab_size(t)) abort();
            free(ids);
        }
        int32_t row[VKL_CLIP_CONTEXT];
        size_t nc;
        if (vkl_clip_encode_padded(t, text, flags, row, &nc, &e) == 0 && row[0] != vkl_clip_bos(t)) abort();
        vkl_prompt_opts po;
        memset(&po, 0, sizeof po);
        po.flags = flags;
        vkl_prompt_tokens pt;
        if (vkl_clip_encode_prompt(t, text, &po, &pt, &e) == 0) vkl_prompt_tokens_free(&pt);
    }
    free(text);
    return 0;
}
