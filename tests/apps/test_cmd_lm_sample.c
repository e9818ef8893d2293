/* `vklora lm generate`'s generation options end to end on tiny-llama:
 * --json at temperature 0 gives transformers' greedy ids and text; a sampled
 * run repeats with its --seed and changes with another; --stop cuts the
 * streamed and the JSON text before the stop string; the speeds are
 * reported; a model folder with a byte-level BPE tokenizer.json encodes the
 * prompt with it (and keeps its config's bfloat16 weights); --chat and
 * --prompts; `bench lm` runs on a tiny shape; bad option values are refused
 * by name. */
#include "vkl_test.h"
#include "tokenizer/sp_bpe.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define PROMPT "You may convey verbatim copies of the Program"

typedef struct {
    char *out;
    int status;
} run_result;

static run_result run(const char *args, int with_stderr)
{
    const char *b = getenv("VKLORA_BINARY");
    if (!b || !*b) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run through ctest)\n");
        skip();
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s %s", b, args, with_stderr ? "2>&1" : "2>/dev/null");
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0, k;
    char *out = malloc(cap);
    while ((k = fread(out + n, 1, cap - n - 1, p)) > 0) {
        n += k;
        if (cap - n < 4096) out = realloc(out, cap *= 2);
    }
    out[n] = 0;
    int st = pclose(p);
    return (run_result){out, WIFEXITED(st) ? WEXITSTATUS(st) : -1};
}

static cJSON *run_json(const char *model, const char *opts)
{
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt '" PROMPT "' --max-tokens 20 --json %s", model, opts);
    run_result r = run(args, 0);
    if (r.status) fail_msg("exit %d: %s", r.status, r.out);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON: %s", r.out);
    free(r.out);
    return j;
}

static void expect_ids(const cJSON *arr, const int32_t *want, int64_t n)
{
    assert_true(cJSON_IsArray(arr));
    assert_int_equal(cJSON_GetArraySize(arr), n);
    int i = 0;
    for (const cJSON *v = arr->child; v; v = v->next, i++) assert_int_equal((int)v->valuedouble, want[i]);
}

static void greedy_json_and_stop(void **state)
{
    (void)state;
    const char *rel = "refkit/lm/vectors/generation.safetensors";
    VKL_REQUIRE_SHARED(rel);
    const char *model = vkl_test_shared_path("refkit/lm/tiny-llama");
    int64_t np = 0, nn = 0;
    int32_t *prompt = vkl_test_ref_i32(rel, "prompt_ids", &np), *want = vkl_test_ref_i32(rel, "new_ids", &nn);
    cJSON *j = run_json(model, "--temperature 0");
    expect_ids(cJSON_GetObjectItem(j, "prompt_ids"), prompt, np);
    expect_ids(cJSON_GetObjectItem(j, "ids"), want, nn);
    assert_string_equal(cJSON_GetObjectItem(j, "finish")->valuestring, "length");
    assert_string_equal(cJSON_GetObjectItem(j, "weights")->valuestring, "f32"); /* the file's torch_dtype */
    /* the text is the reference ids' continuation as SentencePiece decodes it */
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
    int32_t all[300];
    memcpy(all, prompt, sizeof(int32_t) * (size_t)np);
    memcpy(all + np, want, sizeof(int32_t) * (size_t)nn);
    char *full = vkl_sp_decode(sp, all, (int)(np + nn)), *head = vkl_sp_decode(sp, prompt, (int)np);
    const char *text = cJSON_GetObjectItem(j, "text")->valuestring;
    assert_string_equal(text, full + strlen(head));
    /* a stop string from the middle of that text: printed up to it, no further */
    size_t tl = strlen(text);
    assert_true(tl > 12);
    char stop[8];
    memcpy(stop, text + tl / 2, 4);
    stop[4] = 0;
    size_t at = (size_t)(strstr(text, stop) - text);
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt '" PROMPT "' --max-tokens 20 --stop '%s' --stop zzzz",
             model, stop);
    run_result r = run(args, 0);
    assert_int_equal(r.status, 0);
    assert_int_equal(strlen(r.out), at + 1);
    assert_memory_equal(r.out, text, at);
    assert_int_equal(r.out[at], '\n');
    free(r.out);
    char opt[64];
    snprintf(opt, sizeof opt, "--stop '%s'", stop);
    cJSON *js = run_json(model, opt);
    assert_string_equal(cJSON_GetObjectItem(js, "finish")->valuestring, "stop");
    assert_int_equal(strlen(cJSON_GetObjectItem(js, "text")->valuestring), at);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(js, "ids")) < nn);
    /* speeds on stderr */
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --max-tokens 3", model);
    r = run(args, 1);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "prefill"));
    assert_non_null(strstr(r.out, "tokens/s"));
    free(r.out);
    cJSON_Delete(js);
    cJSON_Delete(j);
    free(full);
    free(head);
    vkl_sp_free(sp);
    free(prompt);
    free(want);
}

static void seeded(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    const char *model = vkl_test_shared_path("refkit/lm/tiny-llama");
    const char *opts = "--temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.01 --repeat-penalty 1.2 --seed 5";
    cJSON *a = run_json(model, opts), *b = run_json(model, opts);
    cJSON *c = run_json(model, "--temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.01 --repeat-penalty 1.2 --seed 6");
    char *ia = cJSON_PrintUnformatted(cJSON_GetObjectItem(a, "ids")), *ib = cJSON_PrintUnformatted(cJSON_GetObjectItem(b, "ids")),
         *ic = cJSON_PrintUnformatted(cJSON_GetObjectItem(c, "ids"));
    assert_string_equal(ia, ib);
    assert_string_equal(cJSON_GetObjectItem(a, "text")->valuestring, cJSON_GetObjectItem(b, "text")->valuestring);
    assert_string_equal(cJSON_GetObjectItem(a, "seed")->valuestring, "5");
    assert_true(strcmp(ia, ic) != 0);
    free(ia);
    free(ib);
    free(ic);
    cJSON_Delete(a);
    cJSON_Delete(b);
    cJSON_Delete(c);
}

static void tokenizer_json_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    char tmp[256], dir[512];
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(dir, sizeof dir, "%s/bpe-model", tmp);
    /* the config says bfloat16: the weights stay 16-bit on the device */
    vkl_test_bpe_model_folder(dir, "bfloat16");
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt 'hello hello' --max-tokens 2 --json", dir);
    run_result r = run(args, 0);
    if (r.status) fail_msg("exit %d: %s", r.status, r.out);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    expect_ids(cJSON_GetObjectItem(j, "prompt_ids"), (int32_t[]){300, 259, 32, 259}, 4);
    assert_string_equal(cJSON_GetObjectItem(j, "weights")->valuestring, "bf16");
    cJSON_Delete(j);
    free(r.out);
    vkl_test_rmtree(tmp);
}

/* --chat-template mistral: BOS then "[INST] question [/INST]" as SentencePiece encodes it */
static void chat_prompt(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    const char *model = vkl_test_shared_path("refkit/lm/tiny-llama");
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path("refkit/lm/tiny-llama/tokenizer.model"), &sp, &e), 0);
    int32_t *want = NULL, ids[64];
    int n = 0;
    assert_int_equal(vkl_sp_encode(sp, "[INST] Who may copy? [/INST]", &want, &n, &e), 0);
    ids[0] = 1;
    memcpy(ids + 1, want, sizeof(int32_t) * (size_t)n);
    char args[4096];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt 'Who may copy?' --chat-template mistral --max-tokens 2 --json",
             model);
    run_result r = run(args, 0);
    if (r.status) fail_msg("exit %d: %s", r.status, r.out);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    expect_ids(cJSON_GetObjectItem(j, "prompt_ids"), ids, n + 1);
    cJSON_Delete(j);
    free(r.out);
    /* the folder has no template of its own */
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi --chat --max-tokens 2", model);
    r = run(args, 1);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "--chat-template"));
    free(r.out);
    free(want);
    vkl_sp_free(sp);
}

static char *ids_of(const char *json_line)
{
    cJSON *j = cJSON_Parse(json_line);
    if (!j) fail_msg("not JSON: %s", json_line);
    char *s = cJSON_PrintUnformatted(cJSON_GetObjectItem(j, "ids"));
    cJSON_Delete(j);
    return s;
}

/* --prompts: each line's adapters, in one process, give the ids of a separate run with --lora */
static void prompts_file(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora/adapter_model.safetensors");
    const char *model = vkl_test_shared_path("refkit/lm/tiny-llama");
    char a[512], b[512], d[512], tmp[256], file[400], args[8192];
    snprintf(a, sizeof a, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-lora"));
    snprintf(b, sizeof b, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-lora-qv-r4"));
    snprintf(d, sizeof d, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-dora"));
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(file, sizeof file, "%s/prompts.jsonl", tmp);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fprintf(f, "{\"prompt\": \"" PROMPT "\"}\n\n{\"prompt\": \"" PROMPT "\", \"lora\": [\"%s\"]}\n"
               "{\"prompt\": \"" PROMPT "\", \"lora\": [\"%s:0.5\", \"%s\"]}\n",
            a, b, a);
    fclose(f);
    snprintf(args, sizeof args, "lm generate --model '%s' --prompts '%s' --max-tokens 12", model, file);
    run_result r = run(args, 0);
    if (r.status) fail_msg("exit %d: %s", r.status, r.out);
    char *lines[3], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(r.out, "\n", &save); t && n < 3; t = strtok_r(NULL, "\n", &save)) lines[n++] = t;
    assert_int_equal(n, 3);
    const char *single[3] = {"", "--lora '%s'", "--lora '%s:0.5' --lora '%s'"};
    char *got[3];
    for (int i = 0; i < 3; i++) {
        char opt[2048];
        snprintf(opt, sizeof opt, single[i], i == 2 ? b : a, a);
        snprintf(args, sizeof args, "lm generate --model '%s' --prompt '" PROMPT "' --max-tokens 12 --json %s", model, opt);
        run_result one = run(args, 0);
        if (one.status) fail_msg("exit %d: %s", one.status, one.out);
        char *want = ids_of(one.out);
        got[i] = ids_of(lines[i]);
        printf("  line %d: %s\n", i + 1, got[i]);
        assert_string_equal(got[i], want);
        free(want);
        free(one.out);
    }
    assert_true(strcmp(got[0], got[1]) || strcmp(got[1], got[2])); /* the adapters changed something */
    for (int i = 0; i < 3; i++) free(got[i]);
    free(r.out);
    /* a DoRA adapter on a line is refused, naming the line */
    f = fopen(file, "w");
    assert_non_null(f);
    fprintf(f, "{\"prompt\": \"hi\"}\n{\"prompt\": \"hi\", \"lora\": [\"%s\"]}\n", d);
    fclose(f);
    snprintf(args, sizeof args, "lm generate --model '%s' --prompts '%s' --max-tokens 2", model, file);
    r = run(args, 1);
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "line 2"));
    free(r.out);
    vkl_test_rmtree(tmp);
}

/* vklora bench lm on the tiny shape: the figures are printed (never asserted on) */
static void bench_lm(void **state)
{
    (void)state;
    run_result r = run("bench lm --shape tiny --prompt-tokens 8 --new-tokens 4", 0);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "prefill 8 tokens"));
    assert_non_null(strstr(r.out, "decode 3 tokens"));
    free(r.out);
    r = run("bench lm --shape tiny --steps 0", 0);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "planned"));
    free(r.out);
    r = run("bench lm --shape gpt5", 1);
    assert_int_equal(r.status, 2);
    assert_non_null(strstr(r.out, "gpt5"));
    free(r.out);
}

static void bad_values(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    const char *cases[][2] = {
        {"--temperature -1", "--temperature"}, {"--top-p 0", "--top-p"}, {"--top-k 2x", "--top-k"},
        {"--min-p 1.5", "--min-p"},            {"--seed abc", "--seed"}, {"--stop ''", "--stop"},
        {"--repeat-penalty 0", "--repeat-penalty"}, {"--chat-template vicuna", "vicuna"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char args[4096];
        snprintf(args, sizeof args, "lm generate --model '%s' --prompt hi %s",
                 vkl_test_shared_path("refkit/lm/tiny-llama"), cases[i][0]);
        run_result r = run(args, 1);
        assert_int_equal(r.status, 2);
        if (!strstr(r.out, cases[i][1])) fail_msg("%s: %s", cases[i][0], r.out);
        free(r.out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(greedy_json_and_stop),
        cmocka_unit_test(seeded),
        cmocka_unit_test(tokenizer_json_folder),
        cmocka_unit_test(chat_prompt),
        cmocka_unit_test(prompts_file),
        cmocka_unit_test(bench_lm),
        cmocka_unit_test(bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
