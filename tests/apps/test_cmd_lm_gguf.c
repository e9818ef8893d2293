/* `vklora lm convert` and `vklora lm generate --model FILE.gguf` end to end:
 * tiny-llama converted to Q8_0 prints the text of transformers' 20 greedy
 * tokens for the refkit prompt (reference ids decoded), with f32 and f16
 * weights; the tokenizer comes from the file; `vklora info` describes the
 * file. `vklora convert` takes the
 * refkit LoRA to GGUF and back with the same text (training on GGUF bases:
 * test_cmd_lm_gguf_train.c). Bad options, an existing
 * output, a truncated file and a non-LLaMA file fail with clear messages. */
#include "vkl_test.h"

#include "io/gguf.h"
#include "tokenizer/sp_bpe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GEN_REL "refkit/lm/vectors/generation.safetensors"
#define PROMPT "You may convey verbatim copies of the Program"

static void expect_in(const char *out, const char *frag)
{
    if (!out || !strstr(out, frag)) {
        print_error("output \"%s\" lacks \"%s\"\n", out ? out : "(none)", frag);
        fail();
    }
}

/* the text transformers' greedy tokens continue the prompt with */
static char *reference_continuation(void)
{
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
    int64_t n = 0, np = 0;
    int32_t *all = vkl_test_ref_i32(GEN_REL, "output_ids", &n), *prompt = vkl_test_ref_i32(GEN_REL, "prompt_ids", &np);
    char *full = vkl_sp_decode(sp, all, (int)n), *head = vkl_sp_decode(sp, prompt, (int)np);
    char *cont = strdup(full + strlen(head));
    free(full);
    free(head);
    free(all);
    free(prompt);
    vkl_sp_free(sp);
    return cont;
}

static void convert_then_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(GEN_REL);
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "lm convert --model '%s' -o tiny-q8.gguf --quant q8_0",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    expect_in(out, "20 Q8_0"); /* the 64-wide rows; the 172-wide down_proj rows fall back to F16 */
    expect_in(out, "3 F16");
    free(out);
    char *want = reference_continuation();
    /* dequantised at load (f32, f16) and, by default, the blocks kept on the device */
    const char *weights[] = {"--weights f32", "--weights f16", ""};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "--quiet lm generate --model tiny-q8.gguf --prompt '" PROMPT "' --max-tokens 20 %s",
                 weights[i]);
        assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
        if (strncmp(out, want, strlen(want)) || strcmp(out + strlen(want), "\n")) {
            print_error("'%s' printed \"%s\", transformers' tokens read \"%s\"\n", weights[i], out, want);
            fail();
        }
        free(out);
    }
    free(want);
    /* vklora info describes the file */
    assert_int_equal(vkl_test_cli("info tiny-q8.gguf", NULL, &out), 0);
    expect_in(out, "GGUF v3 (alignment 32), llama model, 30 tensors");
    expect_in(out, "Q8_0    20 tensors");
    expect_in(out, "tokenizer.ggml.tokens = [1000 x string]");
    expect_in(out, "llama.attention.head_count_kv = 2");
    free(out);
    assert_int_equal(vkl_test_cli("info --json tiny-q8.gguf", NULL, &out), 0);
    expect_in(out, "\"Q8_0\":\t20");
    expect_in(out, "\"llama.block_count\":\t3");
    free(out);
    /* an existing output needs --force */
    snprintf(args, sizeof args, "lm convert --model '%s' -o tiny-q8.gguf", vkl_test_shared_path("refkit/lm/tiny-llama"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    expect_in(out, "exists; pass --force");
    free(out);
    /* a GGUF file re-converted: same tokens after Q8_0 -> F16 */
    assert_int_equal(vkl_test_cli("lm convert --model tiny-q8.gguf -o tiny-f16.gguf --quant F16", NULL, &out), 0);
    free(out);
    vkl_gguf_file *f = NULL;
    vkl_err e;
    char path[512];
    snprintf(path, sizeof path, "%s/tiny-f16.gguf", vkl_test_dir);
    assert_int_equal(vkl_gguf_open(path, &f, &e), 0);
    assert_int_equal(vkl_gguf_find(f, "blk.0.attn_q.weight")->type, VKL_GQ_F16);
    vkl_gguf_close(f);
}

/* `vklora convert` between PEFT and GGUF adapters: the refkit LoRA there and
 * back prints the same text as the original; DoRA is refused */
static void convert_adapters(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora/adapter_model.safetensors");
    char args[2048], *out = NULL, *want = NULL, *got = NULL;
    const char *model = vkl_test_shared_path("refkit/lm/tiny-llama");
    snprintf(args, sizeof args, "convert '%s' -o lora.gguf --to gguf --model '%s'",
             vkl_test_shared_path("refkit/lm/tiny-llama-lora/adapter_model.safetensors"), model);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    expect_in(out, "21 modules");
    free(out);
    assert_int_equal(vkl_test_cli("convert lora.gguf -o back.safetensors --to peft --model tiny-q8.gguf", NULL, &out), 0);
    free(out);
    const char *loras[] = {vkl_test_shared_path("refkit/lm/tiny-llama-lora"), "lora.gguf", "back.safetensors"};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "--quiet lm generate --model '%s' --lora '%s' --prompt 'You may' --max-tokens 12", model,
                 loras[i]);
        assert_int_equal(vkl_test_cli(args, NULL, i ? &got : &want), 0);
        if (i) {
            assert_string_equal(got, want);
            free(got);
        }
    }
    free(want);
    snprintf(args, sizeof args, "convert '%s' -o dora.gguf --to gguf --model '%s'",
             vkl_test_shared_path("refkit/lm/tiny-llama-dora/adapter_model.safetensors"), model);
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    expect_in(out, "only plain LoRA modules");
    free(out);
    assert_int_equal(vkl_test_cli("convert lora.gguf -o x.safetensors --to peft", NULL, &out), 2);
    expect_in(out, "need --model");
    free(out);
}

static void refusals(void **state)
{
    (void)state;
    char *out = NULL;
    assert_int_equal(vkl_test_cli("lm convert --help", NULL, &out), 0);
    expect_in(out, "Q4_K");
    free(out);
    assert_int_equal(vkl_test_cli("lm convert --model x -o y.gguf --quant Q3_K", NULL, &out), 2);
    expect_in(out, "--quant 'Q3_K': expected one of");
    free(out);
    assert_int_equal(vkl_test_cli("lm convert --model x", NULL, &out), 2);
    free(out);
    /* a GGUF file of something else, and one cut short */
    char path[512];
    vkl_err e;
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "gpt2", &e), 0);
    snprintf(path, sizeof path, "%s/gpt2.gguf", vkl_test_dir);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model gpt2.gguf --prompt hi", NULL, &out), 1);
    expect_in(out, "general.architecture is 'gpt2'; only llama models are read");
    free(out);
    /* a llama file without its hyper-parameters, and one whose shapes disagree with them */
    snprintf(path, sizeof path, "%s/nometa.gguf", vkl_test_dir);
    w = vkl_gguf_writer_new();
    float z[64] = {0};
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "llama", &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "token_embd.weight", VKL_GQ_F32, 2, (uint64_t[]){8, 8}, z, 256, &e), 0);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model nometa.gguf --prompt hi", NULL, &out), 1);
    expect_in(out, "metadata key llama.embedding_length is missing");
    free(out);
    snprintf(path, sizeof path, "%s/shape.gguf", vkl_test_dir);
    w = vkl_gguf_writer_new();
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "llama", &e), 0);
    const char *keys[] = {"llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
                          "llama.attention.head_count"};
    for (int i = 0; i < 4; i++) assert_int_equal(vkl_gguf_w_u32(w, keys[i], i == 1 ? 1 : i == 3 ? 2 : 4, &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "token_embd.weight", VKL_GQ_F32, 2, (uint64_t[]){8, 8}, z, 256, &e), 0);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model shape.gguf --prompt hi", NULL, &out), 1);
    expect_in(out, "tensor token_embd.weight has ne [8, 8] (2 dims); the metadata implies [4, 8]");
    free(out);
    snprintf(path, sizeof path, "%s/cut.gguf", vkl_test_dir);
    w = vkl_gguf_writer_new();
    float x[64] = {0};
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "llama", &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "token_embd.weight", VKL_GQ_F32, 2, (uint64_t[]){8, 8}, x, 256, &e), 0);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    assert_int_equal(truncate(path, 200), 0);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model cut.gguf --prompt hi", NULL, &out), 1);
    expect_in(out, "cut.gguf: tensor 'token_embd.weight': data");
    expect_in(out, "truncated?");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(convert_then_generate),
        cmocka_unit_test(convert_adapters),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
