/* AdaLoRA against LoRA at the same final rank budget (`vklora lm train` on
 * tiny-llama with the text the lm train tests use, 80 steps of batch 2,
 * seed 7, lr 3e-2 for both): LoRA rank 8 on q_proj and v_proj (48 ranks) and AdaLoRA
 * from init_r 12 to target_r 8 on the same modules (lora_alpha 32, as PEFT's
 * examples; tinit 8, tfinal 16). The final total rank equals the target,
 * AdaLoRA's final parameter count is not above LoRA's, and its loss (mean of
 * the last 10 steps) falls as far as LoRA's (within 2 %); both are printed. */
#include "vkl_test.h"
#include "io/safetensors.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/lm/tiny-llama"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "
#define STEPS 80

static char *dir_ = vkl_test_dir; /* with story.txt: vkl_test_story_setup */

/* Trains into out; returns the mean loss of the last 10 steps, *first the first step's. */
static double train(const char *out, const char *extra, double *first)
{
    char args[8192], *log = NULL;
    snprintf(args, sizeof args,
             "lm train --model '%s' --data story.txt -o %s --seq-len 32 --batch 2 --seed 7 --max-steps %d --lr 3e-2 "
             "--quiet %s",
             vkl_test_shared_path(MODEL), out, STEPS, extra);
    int st = vkl_test_run_cli(dir_, NULL, args, &log);
    if (st) fail_msg("%s: status %d: %s", out, st, log);
    free(log);
    char name[256];
    snprintf(name, sizeof name, "%s/train_log.csv", out);
    char *csv = vkl_test_slurp(dir_, name), *line = strchr(csv, '\n');
    double tail = 0;
    int n = 0;
    while (line) {
        int step, epoch;
        float l;
        if (sscanf(line + 1, "%d,%d,%f", &step, &epoch, &l) != 3) break;
        if (step == 1) *first = l;
        if (step > STEPS - 10) tail += l;
        n++;
        line = strchr(line + 1, '\n');
    }
    free(csv);
    assert_int_equal(n, STEPS);
    return tail / 10;
}

/* Ranks and parameters of the adapter file: every lora_A [r, in] with its lora_B [out, r] (and lora_E [r, 1]). */
static void count(const char *out, long *ranks, long *params)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s/adapter_model.safetensors", dir_, out);
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(p, &f, &e)) fail_msg("%s", e.msg);
    *ranks = *params = 0;
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        *params += (long)t->nelem;
        if (strstr(t->name, "lora_A")) *ranks += (long)t->shape[0];
    }
    vkl_st_close(f);
}

static void test_adalora_vs_lora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    double l0, a0;
    double lora = train("lora", "--rank 8", &l0);
    double ada = train("ada", "--network adalora --init-r 12 --target-r 8 --tinit 8 --tfinal 16 --alpha 32", &a0);
    long lr, lp, ar, ap;
    count("lora", &lr, &lp);
    count("ada", &ar, &ap);
    printf("  LoRA r8:            loss %.4f -> %.4f, %ld ranks, %ld parameters\n", l0, lora, lr, lp);
    printf("  AdaLoRA 12 -> 8:    loss %.4f -> %.4f, %ld ranks, %ld parameters\n", a0, ada, ar, ap);
    assert_true(fabs(l0 - a0) < 1e-5); /* both start at the base model on the same batch */
    assert_int_equal(lr, 48);
    assert_int_equal(ar, 48); /* the final budget: target_r x modules */
    assert_true(ap <= lp);
    assert_true(ada <= lora * 1.02);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adalora_vs_lora),
    };
    return cmocka_run_group_tests(tests, vkl_test_story_setup, vkl_test_group_teardown);
}
