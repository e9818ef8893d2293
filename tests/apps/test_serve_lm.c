/* vklora serve's OpenAI-style text API through libcurl: /v1/completions
 * continues "Once upon a time" with stories260K exactly as llama2.c's run.c
 * (the refkit's reference text); with tiny-llama and a LoRA loaded at start,
 * a request's "lora" scales give the text of `vklora lm generate --lora
 * DIR:W`, and an empty list the text without it; chat and streaming answer
 * in OpenAI's shapes; bad requests are 4xx naming the field. Sampled
 * requests (temperature, top_k, top_p, min_p, repeat_penalty, seed) give
 * the text of `lm generate` with the same options, and a seed the server
 * chose repeats the text when sent back; chat messages go through the chat
 * template as `lm generate --chat-template` renders them; a model folder
 * with a byte-level BPE tokenizer.json answers as `lm generate` does. */
#include "serve_fixture.h"

static int setup(void **state)
{
    vkl_test_group_setup(state);
    return 0;
}

static int teardown(void **state)
{
    if (srv.pid) fx_server_stop(&srv);
    vkl_test_group_teardown(state);
    return 0;
}

static void start(const char *args)
{
    char a[4096];
    snprintf(a, sizeof a, "--model '%s' %s", model(), args);
    assert_int_equal(fx_server_start(&srv, vkl_test_dir, a), 0);
}

static void stop(void)
{
    assert_int_equal(fx_server_stop(&srv), 0);
    fx_assert_clean_log(&srv);
}

/* The text of choices[0] of a completion. */
static char *completion_text(const char *path, const char *body)
{
    cJSON *o = post(path, body);
    const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
    assert_non_null(c);
    const cJSON *t = cJSON_GetObjectItem(c, "text");
    if (!t) t = cJSON_GetObjectItem(cJSON_GetObjectItem(c, "message"), "content");
    assert_true(cJSON_IsString(t));
    char *s = strdup(t->valuestring);
    cJSON_Delete(o);
    return s;
}

static void test_stories_as_run_c(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("refkit/lm/stories260K/hf/model.safetensors");
    char args[2048];
    snprintf(args, sizeof args, "--lm-model '%s' --lm-tokenizer '%s'", vkl_test_shared_path("refkit/lm/stories260K/hf"),
             vkl_test_shared_path("refkit/lm/stories260K/tok512.bin"));
    start(args);
    char *got = completion_text("/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 60}");
    char *want = vkl_test_slurp(vkl_test_shared(), "refkit/lm/stories260K/runc_greedy_prompt.txt");
    assert_non_null(want);
    /* run.c prints the prompt, the continuation and a newline */
    size_t n = strlen(want);
    if (n && want[n - 1] == '\n') want[n - 1] = 0;
    assert_string_equal(got, want + strlen("Once upon a time"));
    free(got);
    /* streamed: events as the tokens come, whose texts join into the same
     * story, then the finish reason, then [DONE] */
    http_resp sr = fx_http(&srv, "POST", "/v1/completions",
                           "{\"prompt\": \"Once upon a time\", \"max_tokens\": 60, \"stream\": true}", NULL, 0);
    assert_int_equal(sr.status, 200);
    char joined[4096] = "";
    int events = 0, finished = 0;
    for (char *ev = strstr(sr.body, "data: "); ev; ev = strstr(ev + 1, "\n\ndata: ")) {
        ev = strstr(ev, "data: ") + 6;
        if (!strncmp(ev, "[DONE]", 6)) break;
        char *end = strstr(ev, "\n\n");
        assert_non_null(end);
        char *j = strndup(ev, (size_t)(end - ev));
        cJSON *o = cJSON_Parse(j);
        assert_non_null(o);
        const cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
        strncat(joined, cJSON_GetObjectItem(c, "text")->valuestring, sizeof joined - strlen(joined) - 1);
        finished |= cJSON_IsString(cJSON_GetObjectItem(c, "finish_reason"));
        events++;
        cJSON_Delete(o);
        free(j);
    }
    assert_non_null(strstr(sr.body, "data: [DONE]\n\n"));
    assert_true(events > 10 && finished);
    assert_string_equal(joined, want + strlen("Once upon a time"));
    free(sr.body);
    free(want);
    /* the models list; a stop string cuts the text before it */
    http_resp r = fx_http(&srv, "GET", "/v1/models", NULL, NULL, 0);
    cJSON *o = ok_json(&r);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "data"), 0), "object")->valuestring,
                        "model");
    cJSON_Delete(o);
    got = completion_text("/v1/completions", "{\"prompt\": \"Once upon a time\", \"max_tokens\": 60, \"stop\": [\"Lily\"]}");
    assert_string_equal(got, ", there was a little girl named ");
    free(got);
    /* streaming: server-sent events ending in [DONE] */
    r = fx_http(&srv, "POST", "/v1/chat/completions",
                "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"max_tokens\": 5, \"stream\": true}", NULL, 0);
    assert_int_equal(r.status, 200);
    assert_true(!strncmp(r.body, "data: {", 7));
    assert_non_null(strstr(r.body, "\"chat.completion.chunk\""));
    assert_non_null(strstr(r.body, "\n\ndata: [DONE]\n\n"));
    free(r.body);
    /* bad requests name the field */
    const char *bad[][3] = {
        {"/v1/completions", "{}", "'prompt'"},
        {"/v1/completions", "{\"prompt\": 5}", "'prompt'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"max_tokens\": 0}", "'max_tokens'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"lora\": [{\"id\": 3}]}", "'lora[0]'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"lora\": \"a\"}", "'lora'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"stop\": 7}", "'stop'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"n\": 2}", "'n'"},
        {"/v1/chat/completions", "{\"messages\": []}", "'messages'"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": 1}]}", "'messages'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        r = fx_http(&srv, "POST", bad[i][0], bad[i][1], NULL, 0);
        if (r.status != 422 || !strstr(r.body, bad[i][2])) print_error("%s %s: %ld %s\n", bad[i][0], bad[i][1], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, bad[i][2]));
        free(r.body);
    }
    stop();
}

static void test_lora_scales_equal_lm_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora/adapter_model.safetensors");
    const char *lm = vkl_test_shared_path("refkit/lm/tiny-llama");
    char lora[1024];
    snprintf(lora, sizeof lora, "%s", vkl_test_shared_path("refkit/lm/tiny-llama-lora"));
    char args[4096];
    snprintf(args, sizeof args, "--lm-model '%s' --lm-lora '%s'", lm, lora);
    start(args);
    snprintf(args, sizeof args, "--model '%s' --prompt 'Hello world' --max-tokens 12 --lora '%s':0.5", lm, lora);
    char *want_half = fx_lm_generate(args);
    snprintf(args, sizeof args, "--model '%s' --prompt 'Hello world' --max-tokens 12 --lora '%s'", lm, lora);
    char *want_full = fx_lm_generate(args);
    snprintf(args, sizeof args, "--model '%s' --prompt 'Hello world' --max-tokens 12", lm);
    char *want_none = fx_lm_generate(args);
    /* ids 0 at 0.5; no list: as loaded (1); an empty list: off */
    char *half = completion_text("/v1/completions",
                                 "{\"prompt\": \"Hello world\", \"max_tokens\": 12, \"lora\": [{\"id\": 0, \"scale\": 0.5}]}");
    char *full = completion_text("/v1/completions", "{\"prompt\": \"Hello world\", \"max_tokens\": 12}");
    char *none = completion_text("/v1/completions", "{\"prompt\": \"Hello world\", \"max_tokens\": 12, \"lora\": []}");
    fprintf(stderr, "none: [%s]\nhalf: [%s]\nfull: [%s]\n", none, half, full);
    assert_string_equal(half, want_half);
    assert_string_equal(full, want_full);
    assert_string_equal(none, want_none);
    assert_true(strcmp(none, full) != 0); /* the adapter changes the text at all */
    free(half), free(full), free(none), free(want_half), free(want_full), free(want_none);
    stop();
}

/* The "seed" string of a sampled answer, and its text. */
static char *sampled(const char *body, char *seed, size_t seed_cap)
{
    cJSON *o = post("/v1/completions", body);
    const cJSON *sd = cJSON_GetObjectItem(o, "seed");
    assert_true(cJSON_IsString(sd));
    snprintf(seed, seed_cap, "%s", sd->valuestring);
    char *t = strdup(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "text")->valuestring);
    cJSON_Delete(o);
    return t;
}

static void test_sampling_and_chat_equal_lm_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    const char *lm = vkl_test_shared_path("refkit/lm/tiny-llama");
    char args[4096], seed[64];
    snprintf(args, sizeof args, "--lm-model '%s' --lm-chat-template mistral", lm);
    start(args);
    const char *opts = "--temperature 0.9 --top-k 40 --top-p 0.95 --min-p 0.01 --repeat-penalty 1.2";
    snprintf(args, sizeof args, "--model '%s' --prompt 'Hello world' --max-tokens 12 %s --seed 5", lm, opts);
    char *want5 = fx_lm_generate(args);
    snprintf(args, sizeof args, "--model '%s' --prompt 'Hello world' --max-tokens 12 %s --seed 6", lm, opts);
    char *want6 = fx_lm_generate(args);
    const char *body = "{\"prompt\": \"Hello world\", \"max_tokens\": 12, \"temperature\": 0.9, \"top_k\": 40, "
                       "\"top_p\": 0.95, \"min_p\": 0.01, \"repeat_penalty\": 1.2, \"seed\": %d}";
    char b[1024];
    snprintf(b, sizeof b, body, 5);
    char *got5 = sampled(b, seed, sizeof seed);
    assert_string_equal(seed, "5");
    snprintf(b, sizeof b, body, 6);
    char *got6 = sampled(b, seed, sizeof seed);
    fprintf(stderr, "seed 5: [%s]\nseed 6: [%s]\n", got5, got6);
    assert_string_equal(got5, want5);
    assert_string_equal(got6, want6);
    assert_true(strcmp(got5, got6) != 0);
    /* no seed: the server draws one and returns it; sent back, it repeats the text */
    char *drawn = sampled("{\"prompt\": \"Hello world\", \"max_tokens\": 12, \"temperature\": 1.5}", seed, sizeof seed);
    snprintf(b, sizeof b, "{\"prompt\": \"Hello world\", \"max_tokens\": 12, \"temperature\": 1.5, \"seed\": %s}", seed);
    char again_seed[64];
    char *again = sampled(b, again_seed, sizeof again_seed);
    assert_string_equal(again, drawn);
    assert_string_equal(again_seed, seed);
    /* chat: the template's rendering, as lm generate --chat-template */
    snprintf(args, sizeof args, "--model '%s' --prompt 'Who may copy?' --chat-template mistral --max-tokens 8", lm);
    char *want_chat = fx_lm_generate(args);
    char *chat = completion_text("/v1/chat/completions",
                                 "{\"messages\": [{\"role\": \"user\", \"content\": \"Who may copy?\"}], \"max_tokens\": 8}");
    assert_string_equal(chat, want_chat);
    /* what the template cannot render, and penalties vklora does not make, are refused by name */
    const char *bad[][3] = {
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"system\", \"content\": \"x\"}]}", "user turn"},
        {"/v1/chat/completions", "{\"messages\": [{\"role\": \"tool\", \"content\": \"x\"}]}", "'messages'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"frequency_penalty\": 0.5}", "'frequency_penalty'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"temperature\": 3}", "'temperature'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"top_p\": 0}", "'top_p'"},
        {"/v1/completions", "{\"prompt\": \"x\", \"seed\": \"a\"}", "'seed'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_resp r = fx_http(&srv, "POST", bad[i][0], bad[i][1], NULL, 0);
        if (r.status != 422 || !strstr(r.body, bad[i][2])) print_error("%s %s: %ld %s\n", bad[i][0], bad[i][1], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, bad[i][2]));
        free(r.body);
    }
    free(want5), free(want6), free(got5), free(got6), free(drawn), free(again), free(want_chat), free(chat);
    stop();
}

static void test_tokenizer_json_model(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    char dir[1024], args[4096];
    snprintf(dir, sizeof dir, "%s/bpe-model", vkl_test_dir);
    vkl_test_bpe_model_folder(dir, "bfloat16");
    snprintf(args, sizeof args, "--lm-model '%s'", dir);
    start(args);
    snprintf(args, sizeof args, "--model '%s' --prompt 'hello hello' --max-tokens 10", dir);
    char *want = fx_lm_generate(args);
    char *got = completion_text("/v1/completions", "{\"prompt\": \"hello hello\", \"max_tokens\": 10}");
    assert_string_equal(got, want);
    /* streamed, the pieces join into the same text */
    http_resp sr = fx_http(&srv, "POST", "/v1/completions",
                           "{\"prompt\": \"hello hello\", \"max_tokens\": 10, \"stream\": true}", NULL, 0);
    assert_int_equal(sr.status, 200);
    char joined[4096] = "";
    for (char *ev = strstr(sr.body, "data: {"); ev; ev = strstr(ev + 1, "data: {")) {
        char *end = strstr(ev, "\n\n");
        assert_non_null(end);
        char *j = strndup(ev + 6, (size_t)(end - ev - 6));
        cJSON *o = cJSON_Parse(j);
        assert_non_null(o);
        strncat(joined, cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0), "text")->valuestring,
                sizeof joined - strlen(joined) - 1);
        cJSON_Delete(o);
        free(j);
    }
    assert_string_equal(joined, want);
    free(sr.body), free(want), free(got);
    stop();
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_as_run_c),
        cmocka_unit_test(test_lora_scales_equal_lm_generate),
        cmocka_unit_test(test_sampling_and_chat_equal_lm_generate),
        cmocka_unit_test(test_tokenizer_json_model),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    curl_global_cleanup();
    return rc;
}
