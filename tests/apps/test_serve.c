/* vklora serve end to end through a real HTTP client (libcurl) on a loopback
 * port with the tiny reference model: txt2img and img2img give the pixels and
 * the parameters text of `vklora generate` with the same settings; adapters
 * named in the prompt give the pixels of `generate --lora` (first hooked in,
 * then re-weighted, then removed); the lists, options and the page.
 * (test_serve_jobs.c: the queue, interrupts, hang-ups and SIGTERM.) */
#include "serve_fixture.h"


/* The settings of the plain txt2img case, as CLI options and as JSON. */
#define PLAIN_CLI "--prompt 'a red cube' --negative blue --steps 3 --cfg 5 --sampler 'Euler a' --seed 11 " \
                  "--width 64 --height 32"
#define PLAIN_JSON_FIELDS "\"negative_prompt\": \"blue\", \"steps\": 3, \"cfg_scale\": 5, " \
                          "\"sampler_name\": \"Euler a\", \"seed\": 11, \"width\": 64, \"height\": 32"

static int exists(const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", vkl_test_dir, name);
    return access(path, F_OK) == 0;
}

static void generate_cli(const char *args)
{
    char cmd[4096], *out = NULL;
    snprintf(cmd, sizeof cmd, "generate --model '%s' --quiet %s", model(), args);
    int rc = vkl_test_cli(cmd, NULL, &out);
    if (rc) print_error("%s\n", out);
    assert_int_equal(rc, 0);
    free(out);
}

static void test_txt2img_equals_generate(void **state)
{
    (void)state;
    need_model();
    if (!exists("cli.png")) generate_cli(PLAIN_CLI " -o cli.png");
    cJSON *o = post("/sdapi/v1/txt2img", "{\"prompt\": \"a red cube\", " PLAIN_JSON_FIELDS "}");
    vkl_image a, b;
    char *pa, *pb;
    answer_image(o, 0, &a, &pa);
    file_image("cli.png", &b, &pb);
    assert_true(same_pixels(&a, &b));
    assert_string_equal(pa, pb);
    /* info: A1111's JSON string with the seed and the infotext */
    cJSON *info = cJSON_Parse(cJSON_GetObjectItem(o, "info")->valuestring);
    assert_non_null(info);
    assert_int_equal((int)cJSON_GetObjectItem(info, "seed")->valuedouble, 11);
    assert_string_equal(cJSON_GetArrayItem(cJSON_GetObjectItem(info, "infotexts"), 0)->valuestring, pa);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "parameters"), "sampler_name")->valuestring,
                        "Euler a");
    cJSON_Delete(info);
    free(pa);
    free(pb);
    vkl_image_free(&a);
    vkl_image_free(&b);
    cJSON_Delete(o);
}

static void test_img2img_equals_generate(void **state)
{
    (void)state;
    need_model();
    /* an init image of another size and aspect (cropped and resized), with colour in it */
    vkl_image src;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_alloc(&src, 40, 24, 3, VKL_PIX_U8, &e), 0);
    for (int i = 0; i < 40 * 24 * 3; i++) vkl_image_u8(&src)[i] = (uint8_t)((i * 37) % 251);
    char path[1024];
    snprintf(path, sizeof path, "%s/init.png", vkl_test_dir);
    assert_int_equal(vkl_png_write(path, &src, NULL, 0, &e), 0);
    vkl_image_free(&src);
    generate_cli("--prompt 'a cube' --steps 4 --strength 0.5 --seed 6 --width 64 --height 64 --init-image init.png "
                 "-o cli_i2i.png");
    uint8_t *bytes = NULL;
    size_t n = 0;
    assert_int_equal(vkl_read_file_bytes(path, 1 << 24, &bytes, &n, &e), 0);
    char *b64 = fx_base64_encode(bytes, n);
    free(bytes);
    char *body = malloc(strlen(b64) + 512);
    /* resize_mode 1 (crop and resize) is what generate does with an init image */
    sprintf(body, "{\"init_images\": [\"%s\"], \"prompt\": \"a cube\", \"steps\": 4, \"denoising_strength\": 0.5, "
                  "\"seed\": 6, \"width\": 64, \"height\": 64, \"resize_mode\": 1}", b64);
    cJSON *o = post("/sdapi/v1/img2img", body);
    vkl_image a, b;
    char *pa, *pb;
    answer_image(o, 0, &a, &pa);
    file_image("cli_i2i.png", &b, &pb);
    assert_true(same_pixels(&a, &b));
    assert_string_equal(pa, pb);
    free(pa), free(pb), free(b64), free(body);
    vkl_image_free(&a);
    vkl_image_free(&b);
    cJSON_Delete(o);
}

/* <lora:style:W> per request = generate --lora FILE:W, through the three
 * ways the server changes adapters: hooked in, re-weighted, removed. */
static void test_adapters_equal_lora_option(void **state)
{
    (void)state;
    need_model();
    char args[2048];
    snprintf(args, sizeof args, PLAIN_CLI " --lora '%s':0.8 -o l08.png", lora_file());
    generate_cli(args);
    snprintf(args, sizeof args, PLAIN_CLI " --lora '%s':0.3 -o l03.png", lora_file());
    generate_cli(args);
    if (!exists("cli.png")) generate_cli(PLAIN_CLI " -o cli.png");
    const char *req[] = {"{\"prompt\": \"a red cube <lora:style:0.8>\", " PLAIN_JSON_FIELDS "}",
                         "{\"prompt\": \"a red cube <lora:style:0.3>\", " PLAIN_JSON_FIELDS "}",
                         "{\"prompt\": \"a red cube\", " PLAIN_JSON_FIELDS "}"};
    const char *want[] = {"l08.png", "l03.png", "cli.png"};
    vkl_image got[3];
    for (int i = 0; i < 3; i++) {
        cJSON *o = post("/sdapi/v1/txt2img", req[i]);
        vkl_image w;
        answer_image(o, 0, &got[i], NULL);
        file_image(want[i], &w, NULL);
        if (!same_pixels(&got[i], &w)) print_error("request %d differs from %s\n", i, want[i]);
        assert_true(same_pixels(&got[i], &w));
        vkl_image_free(&w);
        cJSON_Delete(o);
    }
    /* the adapter changes the image at all (else the comparison proves nothing) */
    assert_false(same_pixels(&got[0], &got[2]));
    assert_false(same_pixels(&got[0], &got[1]));
    for (int i = 0; i < 3; i++) vkl_image_free(&got[i]);
    /* the list names it with its training metadata */
    cJSON *l = NULL;
    http_resp r = fx_http(&srv, "GET", "/sdapi/v1/loras", NULL, NULL, 0);
    l = ok_json(&r);
    assert_int_equal(cJSON_GetArraySize(l), 1);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 0), "name")->valuestring, "style");
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(cJSON_GetArrayItem(l, 0), "metadata")));
    cJSON_Delete(l);
}

/* Adapters in subfolders of --lora-dir are found by file name, as A1111
 * finds them in models/Lora; hidden folders are not; a name two subfolders
 * hold is refused naming both files. */
static void test_adapters_in_subfolders(void **state)
{
    (void)state;
    need_model();
    char cmd[4096], args[2048];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && mkdir -p loras/sd15/styles loras/.trash && cp '%s' loras/sd15/styles/deep.safetensors && "
             "cp '%s' loras/.trash/gone.safetensors",
             vkl_test_dir, lora_file(), lora_file());
    assert_int_equal(system(cmd), 0);
    if (!exists("l08.png")) {
        snprintf(args, sizeof args, PLAIN_CLI " --lora '%s':0.8 -o l08.png", lora_file());
        generate_cli(args);
    }
    cJSON *o = post("/sdapi/v1/txt2img", "{\"prompt\": \"a red cube <lora:deep:0.8>\", " PLAIN_JSON_FIELDS "}");
    vkl_image got, want;
    answer_image(o, 0, &got, NULL);
    file_image("l08.png", &want, NULL);
    assert_true(same_pixels(&got, &want));
    vkl_image_free(&got);
    vkl_image_free(&want);
    cJSON_Delete(o);
    http_resp r = fx_http(&srv, "GET", "/sdapi/v1/loras", NULL, NULL, 0);
    cJSON *l = ok_json(&r);
    assert_int_equal(cJSON_GetArraySize(l), 2); /* deep and style; not the hidden folder's */
    const cJSON *deep = cJSON_GetArrayItem(l, 0);
    assert_string_equal(cJSON_GetObjectItem(deep, "name")->valuestring, "deep");
    assert_non_null(strstr(cJSON_GetObjectItem(deep, "path")->valuestring, "loras/sd15/styles/deep.safetensors"));
    cJSON_Delete(l);
    snprintf(cmd, sizeof cmd, "cd '%s' && mkdir -p loras/other && cp '%s' loras/other/deep.safetensors", vkl_test_dir,
             lora_file());
    assert_int_equal(system(cmd), 0);
    r = fx_http(&srv, "POST", "/sdapi/v1/txt2img", "{\"prompt\": \"a <lora:deep:0.8>\", " PLAIN_JSON_FIELDS "}", NULL, 0);
    if (r.status != 422 || !strstr(r.body, "2 adapters have that name")) print_error("%ld %s\n", r.status, r.body);
    assert_int_equal(r.status, 422);
    assert_non_null(strstr(r.body, "loras/other/deep.safetensors"));
    free(r.body);
    r = fx_http(&srv, "POST", "/sdapi/v1/txt2img", "{\"prompt\": \"a <lora:gone:0.8>\", " PLAIN_JSON_FIELDS "}", NULL, 0);
    assert_int_equal(r.status, 422);
    assert_non_null(strstr(r.body, "no gone.safetensors"));
    free(r.body);
    snprintf(cmd, sizeof cmd, "cd '%s' && rm -r loras/other loras/sd15 loras/.trash", vkl_test_dir);
    assert_int_equal(system(cmd), 0);
}

static void test_lists_and_options(void **state)
{
    (void)state;
    need_model();
    http_resp r = fx_http(&srv, "GET", "/sdapi/v1/sd-models", NULL, NULL, 0);
    cJSON *o = ok_json(&r);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetArrayItem(o, 0), "model_name")->valuestring, "tiny-sd");
    cJSON_Delete(o);
    r = fx_http(&srv, "GET", "/sdapi/v1/samplers", NULL, NULL, 0);
    o = ok_json(&r);
    assert_true(cJSON_GetArraySize(o) >= 4);
    cJSON_Delete(o);
    /* options: the loaded checkpoint is accepted, clip skip is kept */
    o = post("/sdapi/v1/options", "{\"sd_model_checkpoint\": \"tiny-sd\", \"CLIP_stop_at_last_layers\": 2}");
    cJSON_Delete(o);
    r = fx_http(&srv, "GET", "/sdapi/v1/options", NULL, NULL, 0);
    o = ok_json(&r);
    assert_int_equal((int)cJSON_GetObjectItem(o, "CLIP_stop_at_last_layers")->valuedouble, 2);
    cJSON_Delete(o);
    o = post("/sdapi/v1/options", "{\"CLIP_stop_at_last_layers\": 1}");
    cJSON_Delete(o);
    r = fx_http(&srv, "GET", "/", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<html"));
    free(r.body);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_txt2img_equals_generate),
        cmocka_unit_test(test_img2img_equals_generate),
        cmocka_unit_test(test_adapters_equal_lora_option),
        cmocka_unit_test(test_adapters_in_subfolders),
        cmocka_unit_test(test_lists_and_options),
    };
    int rc = cmocka_run_group_tests(tests, fx_setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
