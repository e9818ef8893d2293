/* The options of generate, lm generate and serve, read by the strict parser
 * (apps/args.h): an unknown option, a missing value, a bad number or choice
 * and one item too many of a repeatable option are each refused with exit
 * status 2 and exactly one line naming the option and the value, before
 * anything is loaded; runs written with --opt=VALUE read every value (the
 * PNG's parameters, the reference's greedy ids). serve's valid runs with
 * these spellings: test_serve_bad's server. */
#include "vkl_test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

typedef struct refusal {
    const char *args, *says; /* says: the whole output */
} refusal;

static void check(const refusal *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *out = NULL;
        /* no $VKLORA_MODEL: generate and serve would look for it only after the options */
        int rc = vkl_test_cli(cases[i].args, "VKLORA_MODEL=", &out);
        if (rc != 2 || strcmp(out, cases[i].says)) {
            print_error("vklora %s: exit %d, said \"%s\" (want 2, \"%s\")\n", cases[i].args, rc, out, cases[i].says);
            free(out);
            fail();
        }
        free(out);
    }
}

static void generate_refusals(void **state)
{
    (void)state;
    static const refusal cases[] = {
        {"generate --prompt x --frobnicate 1", "vklora generate: unknown option '--frobnicate'\n"},
        {"generate --prompt x --steps", "vklora generate: --steps needs a value\n"},
        {"generate --prompt --steps 2", "vklora generate: --prompt needs a value\n"},
        {"generate --prompt x --steps 12x", "vklora generate: --steps '12x': expected an integer in [1, 1000]\n"},
        {"generate --prompt x --batch=0", "vklora generate: --batch '0': expected an integer in [1, 64]\n"},
        {"generate --prompt x --cfg 1e9", "vklora generate: --cfg '1e9': expected a number in [0, 100]\n"},
        {"generate --prompt x --strength nan", "vklora generate: --strength 'nan': expected a number in [0, 1]\n"},
        {"generate --prompt x --seed 1.5",
         "vklora generate: --seed '1.5': expected an integer >= 0, or -1 (a random seed)\n"},
        {"generate --prompt x --target-size 64x",
         "vklora generate: --target-size '64x': expected WxH with both in [1, 65536]\n"},
        {"generate --prompt x --vae-tiling sometimes",
         "vklora generate: --vae-tiling 'sometimes': expected one of auto|on|off\n"},
        {"generate --prompt x --base-dtype q8",
         "vklora generate: --base-dtype 'q8': expected f32, f16, bf16, nf4 or nf4dq\n"},
        {"generate --prompt x --lora ''", "vklora generate: --lora '': expected a non-empty value\n"},
        {"generate --prompt x --lora 1 --lora 2 --lora 3 --lora 4 --lora 5 --lora 6 --lora 7 --lora 8 --lora 9 "
         "--lora 10 --lora 11 --lora 12 --lora 13 --lora 14 --lora 15 --lora 16 --lora 17",
         "vklora generate: --lora '17': at most 16 may be given\n"},
        {"generate --prompt x out.png", "vklora generate: unexpected argument 'out.png'\n"},
    };
    check(cases, sizeof cases / sizeof *cases);
}

static void lm_generate_refusals(void **state)
{
    (void)state;
    static const refusal cases[] = {
        {"lm generate --prompt hi --bogus", "vklora lm generate: unknown option '--bogus'\n"},
        {"lm generate --prompt hi --max-tokens", "vklora lm generate: --max-tokens needs a value\n"},
        {"lm generate --prompt hi --max-tokens 0",
         "vklora lm generate: --max-tokens '0': expected an integer in [1, 1000000]\n"},
        {"lm generate --prompt hi --top-k 2x", "vklora lm generate: --top-k '2x': expected an integer in [0, 1073741824]\n"},
        {"lm generate --prompt hi --top-p 0", "vklora lm generate: --top-p '0': expected a number in (0, 1]\n"},
        {"lm generate --prompt hi --temperature=hot",
         "vklora lm generate: --temperature 'hot': expected a number in [0, 100]\n"},
        {"lm generate --prompt hi --seed -3", "vklora lm generate: --seed '-3': expected an integer >= 0\n"},
        {"lm generate --prompt hi --stop=", "vklora lm generate: --stop '': expected a non-empty value\n"},
        {"lm generate --prompt hi --weights q8",
         "vklora lm generate: --weights 'q8': expected f32, f16, bf16, nf4 or nf4dq\n"},
        {"lm generate --prompt hi --chat-template vicuna",
         "vklora lm generate: --chat-template 'vicuna': expected llama3, chatml or mistral\n"},
        {"lm generate --prompt hi --f16 --weights f32",
         "vklora lm generate: --f16 is the older spelling of --weights f16; give one of them\n"},
    };
    check(cases, sizeof cases / sizeof *cases);
}

static void serve_refusals(void **state)
{
    (void)state;
    static const refusal cases[] = {
        {"serve --bogus 1", "vklora serve: unknown option '--bogus'\n"},
        {"serve --max-steps", "vklora serve: --max-steps needs a value\n"},
        {"serve --max-batch 65", "vklora serve: --max-batch '65': expected an integer in [1, 64]\n"},
        {"serve --port=-1", "vklora serve: --port '-1': expected an integer in [0, 65535]\n"},
        {"serve --max-body 1k", "vklora serve: --max-body '1k': expected an integer in [1024, 4294967296]\n"},
        {"serve --weights nf4", "vklora serve: --weights 'nf4': expected one of f16|f32\n"},
        {"serve --lm-base-dtype q8", "vklora serve: --lm-base-dtype 'q8': expected f32, f16, bf16, nf4 or nf4dq\n"},
        {"serve --lm-chat-template x", "vklora serve: --lm-chat-template 'x': expected llama3, chatml or mistral\n"},
    };
    check(cases, sizeof cases / sizeof *cases);
}

/* Every value written --opt=VALUE reaches the image: the PNG's parameters
 * name each one. */
static void generate_equals_spelling(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char args[4096], *out = NULL;
    snprintf(args, sizeof args,
             "generate --model='%s' --prompt=cat --negative-prompt=dog --steps=2 --width=64 --height=64 --seed=7 "
             "--cfg=5.5 --sampler=euler_a --clip-skip=2 -q --output=eq.png",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
    assert_int_equal(vkl_test_cli("info eq.png", NULL, &out), 0);
    const char *want[] = {"Negative prompt: dog", "Steps: 2", "Sampler: Euler a", "CFG scale: 5.5", "Seed: 7",
                          "Size: 64x64", "Clip skip: 2"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        if (!strstr(out, want[i])) fail_msg("info eq.png does not say \"%s\":\n%s", want[i], out);
    free(out);
}

/* --opt=VALUE for lm generate: transformers' greedy ids of the refkit */
static void lm_generate_equals_spelling(void **state)
{
    (void)state;
    const char *rel = "refkit/lm/vectors/generation.safetensors";
    VKL_REQUIRE_SHARED(rel);
    int64_t nn = 0;
    int32_t *want = vkl_test_ref_i32(rel, "new_ids", &nn);
    assert_true(nn >= 6);
    char args[4096], *out = NULL;
    snprintf(args, sizeof args,
             "--quiet lm generate --model='%s' --prompt='You may convey verbatim copies of the Program' "
             "--max-tokens=6 --temperature=0 --seed=1 --stop=zzzz --stop=qqqq --json",
             vkl_test_shared_path("refkit/lm/tiny-llama"));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    cJSON *j = cJSON_ParseWithOpts(out, NULL, 0);
    if (!j) fail_msg("not JSON: %s", out);
    const cJSON *ids = cJSON_GetObjectItem(j, "ids");
    assert_int_equal(cJSON_GetArraySize(ids), 6);
    int i = 0;
    for (const cJSON *v = ids->child; v; v = v->next, i++) assert_int_equal((int)v->valuedouble, want[i]);
    assert_string_equal(cJSON_GetObjectItem(j, "finish")->valuestring, "length");
    cJSON_Delete(j);
    free(out);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(generate_refusals),
        cmocka_unit_test(lm_generate_refusals),
        cmocka_unit_test(serve_refusals),
        cmocka_unit_test(generate_equals_spelling),
        cmocka_unit_test(lm_generate_equals_spelling),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
