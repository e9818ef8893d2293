/* libFuzzer target: the input is split at its first NUL into a
 * tokenizer.json text and a text to encode. The file either loads or is
 * rejected with a message naming it; a loaded tokenizer encodes the text (or
 * rejects invalid UTF-8) into ids within its table, and decodes them back;
 * never a crash, leak or out-of-bounds access. The split regexes themselves
 * get the second part too. */
#include "tokenizer/hf_bpe_internal.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 2);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = 0;
    const char *json = buf, *text = buf + strlen(buf) + 1;
    if (text > buf + size) text = "";
    vkl_ucbuf cp = {0};
    vkl_i32buf spans = {0};
    if (!vkl_utf8_decode(text, strlen(text), &cp, NULL))
        for (int rx = VKL_RX_GPT2; rx <= VKL_RX_QWEN2; rx++) {
            spans.n = 0;
            if (vkl_hf_regex_split((vkl_hf_regex)rx, cp.v, cp.n, &spans)) abort();
            /* the pieces tile the text */
            for (size_t i = 0; i < spans.n; i += 2)
                if (spans.v[i] != (i ? spans.v[i - 1] : 0) || spans.v[i + 1] <= spans.v[i]) abort();
            if (cp.n && (size_t)spans.v[spans.n - 1] != cp.n) abort();
        }
    vkl_ucbuf_free(&cp);
    vkl_i32buf_free(&spans);
    vkl_hfbpe *t = NULL;
    vkl_err e;
    if (vkl_hfbpe_load_text(json, NULL, "fuzz", &t, &e)) {
        if (!e.msg[0] || strncmp(e.msg, "fuzz: ", 6)) abort(); /* every error names its source */
        free(buf);
        return 0;
    }
    int32_t *ids = NULL;
    int n = 0;
    if (!vkl_hfbpe_encode(t, text, 1, &ids, &n, &e)) {
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vkl_hfbpe_size(t)) abort();
        free(vkl_hfbpe_decode(t, ids, n, 0));
        free(ids);
    }
    vkl_hfbpe_free(t);
    free(buf);
    return 0;
}
