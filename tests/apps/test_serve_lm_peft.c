/* vklora serve's text API with DoRA and IA3 adapters (and AdaLoRA, which
 * is read as LoRA) through libcurl: with tiny-llama, the PEFT-made DoRA
 * adapter of the refkit and an IA3 adapter trained here by `vklora lm train
 * --network ia3`, a request's "lora" scales give the text of `vklora lm
 * generate --lora DIR:W` for each alone at 1 and 0.5, for DoRA and IA3
 * together, and for the scales given at start; a DoRA adapter asked for
 * with a LoRA one is refused with 422 naming both, and a server whose
 * start-up scales combine them does not start. */
#include "serve_fixture.h"

#define LM "refkit/lm/tiny-llama"
#define PROMPT "You may convey"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "

static char ia3_[4096], adalora_[4096];

/* `vklora lm train --network NET` for a few steps on a repeated sentence into dir/NET. */
static void train(const char *net, const char *extra, char *out, size_t cap)
{
    char p[4096], args[8192], *log = NULL;
    snprintf(p, sizeof p, "%s/story.txt", vkl_test_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int i = 0; i < 40; i++) fputs(SENTENCE, f);
    fclose(f);
    snprintf(out, cap, "%s/%s", vkl_test_dir, net);
    snprintf(args, sizeof args,
             "lm train --model '%s' -o '%s' --network %s --data story.txt --seq-len 32 --batch 4 --seed 7 --quiet %s",
             vkl_test_shared_path(LM), out, net, extra);
    int st = vkl_test_run_cli(vkl_test_dir, NULL, args, &log);
    if (st) fail_msg("lm train --network %s: status %d: %s", net, st, log);
    free(log);
}

/* `vklora lm generate` of PROMPT for 8 tokens with the given --lora options. */
static char *lm_generate(const char *loras)
{
    char args[16384];
    snprintf(args, sizeof args, "--model '%s' --prompt '" PROMPT "' --max-tokens 8 %s", vkl_test_shared_path(LM), loras);
    return fx_lm_generate(args);
}

/* The text of a greedy completion of PROMPT with "lora": LORA (NULL: none given). */
static char *served(const char *lora)
{
    char body[1024];
    snprintf(body, sizeof body, "{\"prompt\": \"" PROMPT "\", \"max_tokens\": 8%s%s}", lora ? ", \"lora\": " : "",
             lora ? lora : "");
    cJSON *o = post("/v1/completions", body);
    const cJSON *t = cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "text");
    assert_true(cJSON_IsString(t));
    char *s = strdup(t->valuestring);
    cJSON_Delete(o);
    return s;
}

static void expect_same(const char *what, const char *lora, const char *gen_loras)
{
    char *got = served(lora), *want = lm_generate(gen_loras);
    fprintf(stderr, "  %-22s serve [%s] lm generate [%s]\n", what, got, want);
    assert_string_equal(got, want);
    free(got), free(want);
}

static void test_dora_ia3_equal_lm_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED(LM "/model.safetensors");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-dora/adapter_model.safetensors");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora/adapter_model.safetensors");
    char dora[1024], lora[1024], args[16384], g[16384];
    snprintf(dora, sizeof dora, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-dora"));
    snprintf(lora, sizeof lora, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-lora"));
    train("ia3", "--steps 3 --lr 0.3", ia3_, sizeof ia3_);
    train("adalora", "--steps 3 --lr 0.3", adalora_, sizeof adalora_);
    /* ids 0 DoRA, 1 IA3 (both on when a request names none), 2 LoRA, 3 AdaLoRA (off) */
    snprintf(args, sizeof args, "--model '%s' --lm-model '%s' --lm-lora '%s' --lm-lora '%s' --lm-lora '%s':0 --lm-lora '%s':0",
             model(), vkl_test_shared_path(LM), dora, ia3_, lora, adalora_);
    assert_int_equal(fx_server_start(&srv, vkl_test_dir, args), 0);

    char *base = served("[]"), *d = served("[{\"id\": 0, \"scale\": 1}]"), *i3 = served("[{\"id\": 1}]"),
         *ad = served("[{\"id\": 3}]");
    fprintf(stderr, "  base [%s] dora [%s] ia3 [%s] adalora [%s]\n", base, d, i3, ad);
    assert_true(strcmp(base, d) != 0); /* each adapter changes the text at all */
    assert_true(strcmp(base, i3) != 0);
    assert_true(strcmp(base, ad) != 0);
    free(base), free(d), free(i3), free(ad);
    expect_same("none", "[]", "");
    snprintf(g, sizeof g, "--lora '%s'", dora);
    expect_same("DoRA", "[{\"id\": 0, \"scale\": 1}]", g);
    snprintf(g, sizeof g, "--lora '%s':0.5", dora);
    expect_same("DoRA 0.5", "[{\"id\": 0, \"scale\": 0.5}]", g);
    snprintf(g, sizeof g, "--lora '%s'", ia3_);
    expect_same("IA3", "[{\"id\": 1, \"scale\": 1}]", g);
    snprintf(g, sizeof g, "--lora '%s':0.5", ia3_);
    expect_same("IA3 0.5", "[{\"id\": 1, \"scale\": 0.5}]", g);
    snprintf(g, sizeof g, "--lora '%s':0.5 --lora '%s'", dora, ia3_);
    expect_same("DoRA 0.5 + IA3", "[{\"id\": 0, \"scale\": 0.5}, {\"id\": 1}]", g);
    snprintf(g, sizeof g, "--lora '%s' --lora '%s'", dora, ia3_);
    expect_same("start-up scales", NULL, g);
    snprintf(g, sizeof g, "--lora '%s' --lora '%s':0.5", adalora_, ia3_);
    expect_same("AdaLoRA + IA3 0.5", "[{\"id\": 3}, {\"id\": 1, \"scale\": 0.5}]", g);

    /* DoRA with LoRA or AdaLoRA: refused by name, and the server still answers */
    const char *bad[] = {"[{\"id\": 0}, {\"id\": 2}]", "[{\"id\": 3, \"scale\": 0.5}, {\"id\": 1}, {\"id\": 0}]"};
    for (int i = 0; i < 2; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\": \"x\", \"max_tokens\": 2, \"lora\": %s}", bad[i]);
        http_resp r = fx_http(&srv, "POST", "/v1/completions", body, NULL, 0);
        fprintf(stderr, "  %s: %ld %s\n", bad[i], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, "'lora': adapter 0 ("));
        assert_non_null(strstr(r.body, "is DoRA"));
        assert_non_null(strstr(r.body, i ? "adalora" : "tiny-llama-lora"));
        free(r.body);
    }
    char *after = served("[{\"id\": 1}]");
    free(after);
    assert_int_equal(fx_server_stop(&srv), 0);
    fx_assert_clean_log(&srv);

    /* start-up scales that combine DoRA with LoRA: no server */
    snprintf(args, sizeof args, "--model '%s' --lm-model '%s' --lm-lora '%s' --lm-lora '%s'", model(),
             vkl_test_shared_path(LM), lora, dora);
    assert_int_not_equal(fx_server_start(&srv, vkl_test_dir, args), 0);
    char *log = vkl_test_slurp(vkl_test_dir, strrchr(srv.log, '/') + 1);
    assert_non_null(log);
    fprintf(stderr, "  refused start: %s", log);
    assert_non_null(strstr(log, "--lm-lora: at the scales a request without \"lora\" gets, adapter 1 ("));
    assert_non_null(strstr(log, "is DoRA"));
    free(log);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dora_ia3_equal_lm_generate),
    };
    int rc = cmocka_run_group_tests(tests, vkl_test_group_setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
