/* vklora serve against hostile and malformed requests: each answered with a
 * 4xx JSON {"error", "detail"} whose detail names the problem, the server
 * still serving after every one (and generating at the end); the API key
 * (401 without it, refused hosts without one); bodies over --max-body (413),
 * with and without a length. */
#include "serve_fixture.h"

#define KEY "s3cret-key"

static int setup(void **state)
{
    vkl_test_group_setup(state);
    if (!vkl_test_shared_exists("refkit/sd/tiny-sd")) return 0;
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/loras' && cp '%s' '%s/loras/style.safetensors'", vkl_test_dir, lora_file(),
             vkl_test_dir);
    if (system(cmd)) return -1;
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --lora-dir=loras --api-key " KEY " --max-body=65536 --max-steps=50 "
             "--max-size 256 --max-batch=4", model());
    return fx_server_start(&srv, vkl_test_dir, args) ? -1 : 0;
}

typedef struct bad_case {
    const char *method, *path, *body;
    int status;          /* the 4xx expected */
    const char *names;   /* what the detail must mention */
} bad_case;

static char *big_json(size_t n)
{
    char *b = malloc(n + 32);
    strcpy(b, "{\"prompt\": \"");
    size_t k = strlen(b);
    memset(b + k, 'a', n);
    strcpy(b + k + n, "\"}");
    return b;
}

static void test_malformed_requests(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    char deep[4096];
    memset(deep, '[', 2000);
    deep[2000] = 0;
    const char *T = "/sdapi/v1/txt2img", *I = "/sdapi/v1/img2img", *O = "/sdapi/v1/options";
    const bad_case cases[] = {
        {"POST", T, "{", 400, "not valid JSON"},
        {"POST", T, "", 400, "no body"},
        {"POST", T, "{} trailing", 400, "not valid JSON"},
        {"POST", T, deep, 400, "not valid JSON"},
        {"POST", T, "[1, 2]", 422, "JSON object"},
        {"POST", T, "\"a string\"", 422, "JSON object"},
        {"POST", T, "{\"steps\": \"20\"}", 422, "'steps'"},
        {"POST", T, "{\"steps\": 20.5}", 422, "'steps'"},
        {"POST", T, "{\"steps\": 0}", 422, "'steps'"},
        {"POST", T, "{\"steps\": 100000}", 422, "'steps'"},
        {"POST", T, "{\"width\": 100000}", 422, "'width'"},
        {"POST", T, "{\"width\": -64}", 422, "'width'"},
        {"POST", T, "{\"width\": 40, \"height\": 32}", 422, "multiples of"},
        {"POST", T, "{\"height\": 1e300}", 422, "'height'"},
        {"POST", T, "{\"cfg_scale\": \"x\"}", 422, "'cfg_scale'"},
        {"POST", T, "{\"cfg_scale\": 1000}", 422, "'cfg_scale'"},
        {"POST", T, "{\"seed\": \"abc\"}", 422, "'seed'"},
        {"POST", T, "{\"seed\": -5}", 422, "'seed'"},
        {"POST", T, "{\"batch_size\": 1000}", 422, "'batch_size'"},
        {"POST", T, "{\"batch_size\": 4, \"n_iter\": 4}", 422, "'n_iter'"},
        {"POST", T, "{\"n_iter\": 0}", 422, "'n_iter'"},
        {"POST", T, "{\"sampler_name\": \"No Such Sampler\"}", 422, "No Such Sampler"},
        {"POST", T, "{\"sampler_name\": 3}", 422, "'sampler_name'"},
        {"POST", T, "{\"scheduler\": \"sometimes\"}", 422, "sometimes"},
        {"POST", T, "{\"prompt\": 123}", 422, "'prompt'"},
        {"POST", T, "{\"prompt\": [\"a\"]}", 422, "'prompt'"},
        {"POST", T, "{\"prompt\": \"x <lora:../loras/style:1>\"}", 422, "without folders"},
        {"POST", T, "{\"prompt\": \"x <lora:/etc/passwd:1>\"}", 422, "without folders"},
        {"POST", T, "{\"prompt\": \"x <lora:.hidden:1>\"}", 422, "may not start with '.'"},
        {"POST", T, "{\"prompt\": \"x <lora:missing:1>\"}", 422, "missing"},
        {"POST", T, "{\"prompt\": \"x <lora:style:abc>\"}", 422, "abc"},
        {"POST", T, "{\"prompt\": \"x <lora:style:nan>\"}", 422, "nan"},
        {"POST", T, "{\"prompt\": \"x <lora:style:1\"}", 422, "unclosed"},
        {"POST", T, "{\"enable_hr\": true}", 422, "'enable_hr'"},
        {"POST", T, "{\"styles\": [\"anime\"]}", 422, "'styles'"},
        {"POST", T, "{\"subseed_strength\": 0.5}", 422, "'subseed_strength'"},
        {"POST", T, "{\"send_images\": \"yes\"}", 422, "'send_images'"},
        {"POST", T, "{\"override_settings\": \"x\"}", 422, "'override_settings'"},
        {"POST", T, "{\"override_settings\": {\"sd_model_checkpoint\": \"other\"}}", 422, "sd_model_checkpoint"},
        {"POST", T, "{\"override_settings\": {\"sd_vae\": \"x\"}}", 422, "sd_vae"},
        {"POST", I, "{\"prompt\": \"x\"}", 422, "'init_images'"},
        {"POST", I, "{\"init_images\": \"abc\"}", 422, "'init_images'"},
        {"POST", I, "{\"init_images\": []}", 422, "'init_images'"},
        {"POST", I, "{\"init_images\": [42]}", 422, "'init_images[0]'"},
        {"POST", I, "{\"init_images\": [\"!!!notbase64\"]}", 422, "base64"},
        {"POST", I, "{\"init_images\": [\"aGVsbG8gd29ybGQ=\"]}", 422, "init_images[0]"},
        {"POST", I, "{\"init_images\": [\"data:image/png,abc\"]}", 422, "base64"},
        {"POST", I, "{\"init_images\": [\"iVBORw0KGgo=\"], \"denoising_strength\": 0.5}", 422, "init_images[0]"},
        {"POST", I, "{\"init_images\": [\"iVBORw0KGgo=\"], \"denoising_strength\": 2}", 422, "'denoising_strength'"},
        {"POST", I, "{\"init_images\": [\"iVBORw0KGgo=\"], \"resize_mode\": 2}", 422, "'resize_mode'"},
        {"POST", I, "{\"init_images\": [\"iVBORw0KGgo=\"], \"mask\": \"abc\"}", 422, "'mask'"},
        {"POST", O, "{\"sd_model_checkpoint\": \"other.safetensors\"}", 422, "other.safetensors"},
        {"POST", O, "{\"no_such_option\": 1}", 422, "no_such_option"},
        {"POST", O, "{\"CLIP_stop_at_last_layers\": 99}", 422, "CLIP_stop_at_last_layers"},
        {"POST", O, "{\"samples_format\": \"jpg\"}", 422, "jpg"},
        {"POST", O, "nonsense", 400, "not valid JSON"},
        {"GET", "/sdapi/v1/nope", NULL, 404, "/sdapi/v1/nope"},
        {"GET", "/../../etc/passwd", NULL, 404, "not a path"},
        {"GET", T, NULL, 405, "POST"},
        {"DELETE", O, NULL, 405, "GET, POST"},
        {"PUT", "/sdapi/v1/interrupt", "{}", 405, "POST"},
    };
    int n = (int)(sizeof cases / sizeof *cases);
    for (int i = 0; i < n; i++) {
        const bad_case *c = &cases[i];
        http_resp r = fx_http(&srv, c->method, c->path, c->body, KEY, 0);
        cJSON *o = cJSON_Parse(r.body);
        const cJSON *err = o ? cJSON_GetObjectItem(o, "error") : NULL, *det = o ? cJSON_GetObjectItem(o, "detail") : NULL;
        int ok = r.status == c->status && cJSON_IsString(err) && cJSON_IsString(det) &&
                 strstr(det->valuestring, c->names);
        if (!ok)
            print_error("case %d: %s %s %.80s: HTTP %ld (want %d, detail naming \"%s\"): %s\n", i, c->method, c->path,
                        c->body ? c->body : "", r.status, c->status, c->names, r.body);
        assert_true(ok);
        cJSON_Delete(o);
        free(r.body);
        /* still serving */
        r = fx_http(&srv, "GET", "/sdapi/v1/progress", NULL, KEY, 0);
        assert_int_equal(r.status, 200);
        free(r.body);
    }
    fprintf(stderr, "%d malformed requests answered 4xx\n", n);
    assert_true(n >= 30);
}

static void test_body_limit(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    /* with a Content-Length: refused before the body is read */
    char *b = big_json(100000);
    http_resp r = fx_http(&srv, "POST", "/sdapi/v1/txt2img", b, KEY, 0);
    assert_int_equal(r.status, 413);
    assert_non_null(strstr(r.body, "--max-body"));
    free(r.body);
    /* chunked, no length: read and dropped, then refused */
    CURL *c = curl_easy_init();
    char url[256];
    snprintf(url, sizeof url, "%s/sdapi/v1/txt2img", srv.url);
    struct curl_slist *h = curl_slist_append(NULL, "Transfer-Encoding: chunked");
    h = curl_slist_append(h, "Authorization: Bearer " KEY);
    http_resp r2 = {0};
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, b);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fx_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r2);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 60000L);
    curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r2.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    assert_int_equal(r2.status, 413);
    free(r2.body);
    free(b);
}

static void test_api_key(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    const char *keys[] = {NULL, "wrong", "s3cret-ke", "s3cret-keyy"};
    for (int i = 0; i < 4; i++) {
        http_resp r = fx_http(&srv, "GET", "/sdapi/v1/options", NULL, keys[i], 0);
        assert_int_equal(r.status, 401);
        assert_non_null(strstr(r.body, "Bearer"));
        free(r.body);
    }
    /* a generation request without the key never reaches the queue */
    http_resp r = fx_http(&srv, "POST", "/sdapi/v1/txt2img", "{\"steps\": 1}", NULL, 0);
    assert_int_equal(r.status, 401);
    free(r.body);
    r = fx_http(&srv, "GET", "/sdapi/v1/options", NULL, KEY, 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* the page itself opens without it (a browser cannot send the header) */
    r = fx_http(&srv, "GET", "/", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    /* an address other machines reach needs a key; nothing is loaded */
    char *out = NULL;
    assert_int_equal(vkl_test_cli("serve --host 0.0.0.0 --port 0", "VKLORA_API_KEY=", &out), 2);
    assert_non_null(strstr(out, "--api-key"));
    free(out);
    assert_int_equal(vkl_test_cli("serve --port 70000", NULL, &out), 2);
    assert_non_null(strstr(out, "--port"));
    free(out);
    assert_int_equal(vkl_test_cli("serve --model /nonexistent --port 0", NULL, &out), 1);
    assert_non_null(strstr(out, "/nonexistent"));
    free(out);
}

/* After all of it: a generation works, and SIGTERM stops the server with 0. */
static void test_still_generates(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    http_resp r = fx_http(&srv, "POST", "/sdapi/v1/txt2img",
                          "{\"prompt\": \"x <lora:style:0.5>\", \"steps\": 1, \"width\": 32, \"height\": 32}", KEY, 0);
    cJSON *o = ok_json(&r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images")), 1);
    cJSON_Delete(o);
    assert_int_equal(fx_server_stop(&srv), 0);
    fx_assert_clean_log(&srv);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_malformed_requests),
        cmocka_unit_test(test_body_limit),
        cmocka_unit_test(test_api_key),
        cmocka_unit_test(test_still_generates),
    };
    int rc = cmocka_run_group_tests(tests, setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
