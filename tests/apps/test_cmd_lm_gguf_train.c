/* `vklora lm train --model FILE.gguf`: a LoRA trained on the Q8_0 tiny LLaMA
 * lowers the loss and changes the file's output, and its GGUF form
 * (--format gguf) gives the same text as its PEFT form; a LoRA trained on a
 * base whose every matrix is Q4_K (random weights with rows of whole
 * 256-blocks, tiny-llama's tokenizer, written here) lowers the loss. */
#include "vkl_test.h"

#include "io/gguf.h"
#include "tokenizer/sp_bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GEN_REL "refkit/lm/vectors/generation.safetensors"

/* LoRA training on the Q8_0 tiny LLaMA:
 * the loss falls and the adapter applies to the same file */
static void train_on_gguf(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(GEN_REL);
    char path[512], *out = NULL;
    snprintf(path, sizeof path, "lm convert --model '%s' -o tiny-q8.gguf --quant Q8_0",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    assert_int_equal(vkl_test_cli(path, NULL, &out), 0);
    free(out);
    snprintf(path, sizeof path, "%s/data.txt", vkl_test_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 40; i++) fputs("You may convey verbatim copies of the Program's source code as you receive it.\n", f);
    fclose(f);
    assert_int_equal(vkl_test_cli("lm train --model tiny-q8.gguf --data data.txt -o ad --max-steps 20 --lr 1e-2 "
                                  "--seq-len 32 --batch 2 --quiet --format gguf --targets q_proj,k_proj,v_proj", NULL, &out), 0);
    free(out);
    char *log = vkl_test_slurp(vkl_test_dir, "ad/train_log.csv");
    assert_non_null(log);
    double first = -1, last = -1;
    for (char *line = strchr(log, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        int step;
        double epoch, loss;
        if (sscanf(line + 1, "%d,%lf,%lf", &step, &epoch, &loss) == 3) {
            if (first < 0) first = loss;
            last = loss;
        }
    }
    free(log);
    printf("  LoRA on the Q8_0 GGUF base: loss %.3f -> %.3f in 20 steps\n", first, last);
    assert_true(first > 0 && last < 0.8 * first);
    /* the adapter changes the continuation; at weight 0 it is the base's */
    char *base = NULL, *zero = NULL;
    assert_int_equal(vkl_test_cli("lm generate --model tiny-q8.gguf --prompt 'You may' --max-tokens 8", NULL, &base), 0);
    assert_int_equal(vkl_test_cli("lm generate --model tiny-q8.gguf --lora ad --prompt 'You may' --max-tokens 8", NULL,
                                  &out), 0);
    assert_int_equal(vkl_test_cli("lm generate --model tiny-q8.gguf --lora ad:0 --prompt 'You may' --max-tokens 8", NULL,
                                  &zero), 0);
    assert_string_not_equal(out, base);
    assert_string_equal(zero, base);
    /* the GGUF adapter written beside the PEFT one gives the same text */
    char *viagguf = NULL;
    assert_int_equal(vkl_test_cli("lm generate --model tiny-q8.gguf --lora ad/adapter_model.gguf --prompt 'You may' "
                                  "--max-tokens 8", NULL, &viagguf), 0);
    assert_string_equal(viagguf, out);
    free(viagguf);
    free(out);
    free(base);
    free(zero);
}

/* ---- a base whose matrices are all Q4_K: random weights with rows of whole
 * 256-blocks, tiny-llama's tokenizer */

static void put_q4k(vkl_gguf_writer *w, vkl_test_rng *r, const char *name, uint64_t in, uint64_t out, float scale)
{
    uint64_t n = in * out;
    float *x = malloc(sizeof(float) * n);
    vkl_test_fill(r, x, n, -scale, scale);
    int type = out > 1 ? VKL_GQ_Q4_K : VKL_GQ_F32;
    uint64_t bytes = n / (uint64_t)vkl_gguf_type_block(type) * (uint64_t)vkl_gguf_type_bytes(type);
    void *b = malloc(bytes);
    vkl_err e;
    assert_int_equal(vkl_gguf_quantize(type, x, n, b, &e), 0);
    if (out == 1)
        for (uint64_t i = 0; i < n; i++) ((float *)b)[i] = 1.0f; /* norm weights */
    assert_int_equal(vkl_gguf_w_tensor(w, name, type, out > 1 ? 2 : 1, (uint64_t[]){in, out}, b, bytes, &e), 0);
    free(b);
    free(x);
}

static void write_q4k_model(const char *path)
{
    enum { H = 256, I = 512, L = 2 };
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
    int V = vkl_sp_size(sp);
    const char **pieces = malloc(sizeof *pieces * (size_t)V);
    float *scores = malloc(sizeof *scores * (size_t)V);
    int32_t *types = malloc(sizeof *types * (size_t)V);
    for (int i = 0; i < V; i++) {
        pieces[i] = vkl_sp_piece(sp, i);
        scores[i] = vkl_sp_score(sp, i);
        types[i] = vkl_sp_type_of(sp, i);
    }
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "llama", &e), 0);
    const char *keys[] = {"llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                          "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length",
                          "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"};
    uint32_t vals[] = {H, L, I, 4, 2, 128, 1, 2};
    for (int i = 0; i < 8; i++) assert_int_equal(vkl_gguf_w_u32(w, keys[i], vals[i], &e), 0);
    assert_int_equal(vkl_gguf_w_str(w, "tokenizer.ggml.model", "llama", &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.tokens", VKL_GGUF_STRING, (uint64_t)V, pieces, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.scores", VKL_GGUF_F32, (uint64_t)V, scores, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "tokenizer.ggml.token_type", VKL_GGUF_I32, (uint64_t)V, types, &e), 0);
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 44);
    put_q4k(w, &r, "token_embd.weight", H, (uint64_t)V, 1.0f);
    char n[64];
    for (int l = 0; l < L; l++) {
        struct { const char *s; uint64_t in, out; } mats[] = {
            {"attn_q", H, 256}, {"attn_k", H, 128}, {"attn_v", H, 128}, {"attn_output", 256, H},
            {"ffn_gate", H, I}, {"ffn_up", H, I}, {"ffn_down", I, H}, {"attn_norm", H, 1}, {"ffn_norm", H, 1}};
        for (int k = 0; k < 9; k++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, mats[k].s);
            put_q4k(w, &r, n, mats[k].in, mats[k].out, 0.1f);
        }
    }
    put_q4k(w, &r, "output_norm.weight", H, 1, 1.0f);
    put_q4k(w, &r, "output.weight", H, (uint64_t)V, 0.1f);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    free(pieces);
    free(scores);
    free(types);
    vkl_sp_free(sp);
}

/* training on a base whose every matrix is Q4_K lowers the loss */
static void train_on_q4_k(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/tokenizer.model");
    char path[512], *out = NULL;
    snprintf(path, sizeof path, "%s/q4k.gguf", vkl_test_dir);
    write_q4k_model(path);
    snprintf(path, sizeof path, "%s/data4.txt", vkl_test_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 40; i++) fputs("You may convey verbatim copies of the Program's source code as you receive it.\n", f);
    fclose(f);
    assert_int_equal(vkl_test_cli("lm train --model q4k.gguf --data data4.txt -o ad4 --max-steps 20 --lr 1e-2 "
                                  "--seq-len 32 --batch 2 --quiet", NULL, &out), 0);
    free(out);
    char *log = vkl_test_slurp(vkl_test_dir, "ad4/train_log.csv");
    assert_non_null(log);
    double first = -1, last = -1;
    for (char *line = strchr(log, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
        int step;
        double epoch, loss;
        if (sscanf(line + 1, "%d,%lf,%lf", &step, &epoch, &loss) == 3) {
            if (first < 0) first = loss;
            last = loss;
        }
    }
    free(log);
    printf("  LoRA on an all-Q4_K GGUF base (random weights, 256-wide): loss %.3f -> %.3f in 20 steps\n", first, last);
    assert_true(first > 0 && last < 0.8 * first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(train_on_gguf),
        cmocka_unit_test(train_on_q4_k),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
