/* A GGUF LLaMA whose tokenizer is byte-level BPE (tokenizer.ggml.model gpt2,
 * gguf_fixture.h): `lm generate` runs on it end to end and prints what it
 * generated, and `lm train` on a text file tokenized by it lowers the loss. */
#include "gguf_fixture.h"

#include <string.h>

static void generate_and_train(void **state)
{
    (void)state;
    char path[512], *out = NULL;
    snprintf(path, sizeof path, "%s/bpe.gguf", vkl_test_dir);
    write_q4k_model(path, 1);
    assert_int_equal(vkl_test_cli("--quiet lm generate --model bpe.gguf --prompt 'the other theme' --max-tokens 6", NULL, &out), 0);
    assert_true(strlen(out) >= 1 && out[strlen(out) - 1] == '\n');
    free(out);
    snprintf(path, sizeof path, "%s/data.txt", vkl_test_dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 20; i++) fputs("the theme of the other thesis\n", f);
    fclose(f);
    assert_int_equal(vkl_test_cli("lm train --model bpe.gguf --data data.txt -o ad --max-steps 20 --lr 1e-2 "
                                  "--seq-len 32 --batch 2 --quiet", NULL, &out), 0);
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
    printf("  LoRA on a Q4_K base with a byte-level BPE vocabulary: loss %.3f -> %.3f in 20 steps\n", first, last);
    assert_true(first > 0 && last < 0.8 * first);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_and_train),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
