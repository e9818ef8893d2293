/* `vklora lm merge` (the built binary): adapters baked into a model folder
 * that loads as a plain model, checked against transformers' logits after
 * merge_and_unload (refkit lora_logits.safetensors) for LoRA and DoRA; the
 * tokenizer comes along; --dtype sets the stored dtype and torch_dtype; an
 * existing folder needs --force. */
#include "../models/llama_check.h"

#include <sys/stat.h>

#define MODEL "refkit/lm/tiny-llama"

static char *dir_;

/* lm merge: the merged folder's logits are transformers' after
 * merge_and_unload (refkit lora_logits.safetensors), LoRA and DoRA; the
 * tokenizer comes along; an existing folder needs --force */
static void merge_cli(void **state)
{
    (void)state;
    const char *rel = LM_DIR "/vectors/lora_logits.safetensors";
    VKL_REQUIRE_SHARED(rel);
    vkl_ctx *c = vkl_test_ctx(NULL);
    const char *which[][2] = {{"tiny-llama-lora", "lora_merged_logits_"}, {"tiny-llama-dora", "dora_merged_logits_"}};
    for (int k = 0; k < 2; k++) {
        char args[8192], *log = NULL, ad[256], out[32], dir[4096];
        snprintf(ad, sizeof ad, LM_DIR "/%s", which[k][0]);
        snprintf(out, sizeof out, "merged%d", k);
        snprintf(args, sizeof args, "lm merge --model '%s' --lora '%s' -o %s", vkl_test_shared_path(MODEL),
                 vkl_test_shared_path(ad), out);
        int st = vkl_test_run_cli(dir_, NULL, args, &log);
        if (st) fail_msg("status %d: %s", st, log);
        free(log);
        snprintf(dir, sizeof dir, "%s/%s", dir_, out);
        vkl_err e = {{0}};
        vkl_llama *m = NULL;
        if (vkl_llama_load(c, dir, VKL_F32, &m, &e)) fail_msg("%s", e.msg);
        for (int L = 7; L <= 33; L += 26) {
            char key[64];
            int64_t n = 0;
            snprintf(key, sizeof key, "input_ids_%d", L);
            int32_t *ids = lm_ref_ids(rel, key, &n);
            vkl_tensor *tid = lm_ids(c, ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
            vkl_graph *g = vkl_graph_new(c);
            vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1};
            vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
            vkl_graph_keep(g, logits);
            lm_plan(g);
            lm_run(g);
            float *got = lm_download(c, logits);
            snprintf(key, sizeof key, "%s%d", which[k][1], L);
            float *want = vkl_test_ref_f32(rel, key, &n);
            lm_expect(key, got, want, (size_t)n, 1e-4);
            free(got);
            free(want);
            free(ids);
            vkl_graph_free(g);
            vkl_tensor_free(mask);
            vkl_tensor_free(tid);
        }
        vkl_llama_free(m);
        char p[4200];
        struct stat sst;
        snprintf(p, sizeof p, "%s/tokenizer.model", dir);
        assert_int_equal(stat(p, &sst), 0);
        /* again: refused without --force, replaced with it */
        assert_int_equal(vkl_test_run_cli(dir_, NULL, args, &log), 1);
        assert_non_null(strstr(log, "--force"));
        free(log);
        strcat(args, " --force");
        st = vkl_test_run_cli(dir_, NULL, args, &log);
        if (st) fail_msg("status %d: %s", st, log);
        free(log);
    }
    char args[8192], *log = NULL, ad[256];
    snprintf(ad, sizeof ad, "%s", vkl_test_shared_path(LM_DIR "/tiny-llama-lora"));
    snprintf(args, sizeof args, "lm merge --model '%s' --lora '%s' -o m16 --dtype f16", vkl_test_shared_path(MODEL), ad);
    assert_int_equal(vkl_test_run_cli(dir_, NULL, args, &log), 0);
    free(log);
    char *cfg = vkl_test_slurp(dir_, "m16/config.json");
    assert_non_null(strstr(cfg, "\"float16\""));
    free(cfg);
    vkl_test_ctx_done(c);
}

static int setup(void **state)
{
    (void)state;
    dir_ = strdup(vkl_test_tmpdir());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(dir_);
    free(dir_);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(merge_cli)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
