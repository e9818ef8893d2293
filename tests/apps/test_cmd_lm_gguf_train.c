/* `vklora lm train --model FILE.gguf`: a LoRA trained on the Q8_0 tiny LLaMA
 * lowers the loss and changes the file's output, and its GGUF form
 * (--format gguf) gives the same text as its PEFT form; a LoRA trained on a
 * base whose every matrix is Q4_K (random weights with rows of whole
 * 256-blocks, tiny-llama's tokenizer, written here) lowers the loss. */
#include "vkl_test.h"

#include "io/gguf.h"
#include "gguf_fixture.h"

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
    assert_int_equal(vkl_test_cli("--quiet lm generate --model tiny-q8.gguf --prompt 'You may' --max-tokens 8", NULL, &base), 0);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model tiny-q8.gguf --lora ad --prompt 'You may' --max-tokens 8", NULL,
                                  &out), 0);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model tiny-q8.gguf --lora ad:0 --prompt 'You may' --max-tokens 8", NULL,
                                  &zero), 0);
    assert_string_not_equal(out, base);
    assert_string_equal(zero, base);
    /* the GGUF adapter written beside the PEFT one gives the same text */
    char *viagguf = NULL;
    assert_int_equal(vkl_test_cli("--quiet lm generate --model tiny-q8.gguf --lora ad/adapter_model.gguf --prompt 'You may' "
                                  "--max-tokens 8", NULL, &viagguf), 0);
    assert_string_equal(viagguf, out);
    free(viagguf);
    free(out);
    free(base);
    free(zero);
}

/* training on a base whose every matrix is Q4_K lowers the loss */
static void train_on_q4_k(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/tokenizer.model");
    char path[512], *out = NULL;
    snprintf(path, sizeof path, "%s/q4k.gguf", vkl_test_dir);
    write_q4k_model(path, 0);
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
