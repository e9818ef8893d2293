/* libFuzzer target: tokenizer files people download — SentencePiece
 * .model (protobuf), llama2.c tokenizer.bin, Hugging Face WordLevel
 * tokenizer.json, CLIP vocab.json + merges.txt. The first byte picks the
 * format; a file that loads must then encode and decode text without
 * producing ids outside its vocabulary. */
#include "fuzz_util.h"
#include "tokenizer/clip_tokenizer.h"
#include "tokenizer/llama2c_tokenizer.h"
#include "tokenizer/sp_bpe.h"

#include <sys/stat.h>

static const char *const SAMPLE = "Hello, world! 123 \xc3\xa9t\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac <s> \t\n end";

static void sp_case(const uint8_t *data, size_t size)
{
    vkl_sp *s = NULL;
    vkl_err e = {0};
    if (vkl_sp_load_memory(data, size, "fuzz", &s, &e)) {
        FUZZ_ERROR_SAYS_WHY(e);
        return;
    }
    int32_t *ids = NULL;
    int n = 0;
    if (vkl_sp_encode(s, SAMPLE, &ids, &n, &e) == 0) {
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= vkl_sp_size(s)) abort();
        free(vkl_sp_decode(s, ids, n));
        free(ids);
    }
    vkl_sp_free(s);
}

static void l2c_case(const uint8_t *data, size_t size)
{
    if (size < 2) return;
    int vocab = 1 + data[0] * 4;
    const char *path = fuzz_file("tokenizer.bin", data + 1, size - 1);
    vkl_l2c_tok *t = NULL;
    vkl_err e = {0};
    if (vkl_l2c_tok_load(path, vocab, &t, &e)) {
        FUZZ_ERROR_SAYS_WHY(e);
        return;
    }
    int32_t *ids = NULL;
    int n = 0;
    int bos = vocab > 1 ? 1 : -1, eos = vocab > 2 ? 2 : -1; /* ids the caller knows exist */
    if (vkl_l2c_tok_encode(t, SAMPLE, bos, eos, &ids, &n, &e) == 0) {
        char buf[256];
        for (int i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= vkl_l2c_tok_vocab(t)) abort();
            vkl_l2c_tok_decode(t, i ? ids[i - 1] : 1, ids[i], buf, sizeof buf);
        }
        free(ids);
    }
    vkl_l2c_tok_free(t);
}

static void clip_case(const char *folder)
{
    vkl_clip_tokenizer *t = NULL;
    vkl_err e = {0};
    if (vkl_clip_tokenizer_load(&t, folder, &e)) {
        FUZZ_ERROR_SAYS_WHY(e);
        return;
    }
    int32_t *ids = NULL;
    size_t n = 0;
    if (vkl_clip_encode(t, SAMPLE, strlen(SAMPLE), 0, &ids, &n, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || (size_t)ids[i] >= vkl_clip_vocab_size(t)) abort();
        free(ids);
    }
    int32_t row[VKL_CLIP_CONTEXT];
    vkl_clip_encode_padded(t, SAMPLE, 0, row, NULL, &e);
    vkl_clip_tokenizer_free(t);
}

/* the input split at its first 0xFF byte: vocab.json, then merges.txt */
static void clip_bpe_case(const uint8_t *data, size_t size)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/clip", fuzz_dir());
    mkdir(dir, 0700);
    const uint8_t *cut = memchr(data, 0xff, size);
    size_t a = cut ? (size_t)(cut - data) : size;
    fuzz_file("clip/vocab.json", data, a);
    fuzz_file("clip/merges.txt", cut ? cut + 1 : data, cut ? size - a - 1 : 0);
    clip_case(dir);
}

static void word_level_case(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("tokenizer.json", data, size);
    char copy[256];
    snprintf(copy, sizeof copy, "%s", path);
    clip_case(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    switch (data[0] % 4) {
    case 0: sp_case(data + 1, size - 1); break;
    case 1: l2c_case(data + 1, size - 1); break;
    case 2: clip_bpe_case(data + 1, size - 1); break;
    default: word_level_case(data + 1, size - 1); break;
    }
    return 0;
}
