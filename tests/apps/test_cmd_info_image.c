/* `vklora info` on images, end to end through the built binary: a PNG written
 * here with known generation parameters is described in text and JSON with
 * exactly those values; damaged images give exit status 1 and an error that
 * names the file and the damage. */
#include "vkl_test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "io/image.h"
#include "sd/gen_params.h"

typedef struct {
    char *out; /* stdout and stderr together */
    int status;
} run_result;

static run_result run(const char *args)
{
    const char *b = getenv("VKLORA_BINARY");
    if (!b || !*b) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run through ctest)\n");
        skip();
    }
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", b, args);
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
    run_result r = {out, WIFEXITED(st) ? WEXITSTATUS(st) : -1};
    return r;
}

static void expect_in(const run_result *r, const char *frag)
{
    if (!strstr(r->out, frag)) fail_msg("output lacks \"%s\":\n%s", frag, r->out);
}

static const char *jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsString(v)) fail_msg("JSON lacks string \"%s\"", k);
    return v->valuestring;
}

static int jint(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!cJSON_IsNumber(v)) fail_msg("JSON lacks number \"%s\"", k);
    return v->valueint;
}

static void png_with_parameters(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    char path[4200], args[4400];
    snprintf(path, sizeof path, "%s/gen.png", dir);
    vkl_gen_lora_hash lora = {"my_style", "5e8a2b1c9f3d"};
    vkl_gen_settings s = {.prompt = "a red fox, snow", .negative_prompt = "blurry",
                          .steps = 25, .sampler = "Euler a", .schedule_type = "Karras",
                          .cfg_scale = 6.5, .seed = 42, .width = 3, .height = 2,
                          .model = "tiny-sd", .denoising_strength = -1, .loras = &lora,
                          .nloras = 1, .version = "vklora"};
    vkl_gen_params gp;
    vkl_err e = {{0}};
    assert_int_equal(vkl_gen_params_from_settings(&s, &gp, &e), 0);
    char *text;
    assert_int_equal(vkl_gen_params_format(&gp, &text, &e), 0);
    vkl_gen_params_free(&gp);
    vkl_image im;
    assert_int_equal(vkl_image_alloc(&im, 3, 2, 4, VKL_PIX_U8, &e), 0);
    vkl_png_text t = {"parameters", text};
    assert_int_equal(vkl_png_write(path, &im, &t, 1, &e), 0);
    vkl_image_free(&im);

    snprintf(args, sizeof args, "info '%s'", path);
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    expect_in(&r, "format: PNG\n");
    expect_in(&r, "size: 3x2\n");
    expect_in(&r, "channels: 4 (RGBA)\n");
    expect_in(&r, "  prompt: a red fox, snow\n");
    expect_in(&r, "  negative prompt: blurry\n");
    expect_in(&r, "  Schedule type: Karras\n");
    expect_in(&r, "  CFG scale: 6.5\n");
    expect_in(&r, "  Lora hashes: my_style: 5e8a2b1c9f3d\n");
    free(r.out);

    snprintf(args, sizeof args, "info --json '%s'", path);
    r = run(args);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON:\n%s", r.out);
    assert_string_equal(jstr(j, "format"), "PNG");
    assert_int_equal(jint(j, "width"), 3);
    assert_int_equal(jint(j, "height"), 2);
    assert_int_equal(jint(j, "channels"), 4);
    assert_int_equal(jint(j, "bits"), 8);
    assert_string_equal(jstr(cJSON_GetObjectItem(j, "text"), "parameters"), text);
    const cJSON *p = cJSON_GetObjectItem(j, "parameters");
    assert_non_null(p);
    assert_string_equal(jstr(p, "prompt"), "a red fox, snow");
    const cJSON *kv = cJSON_GetObjectItem(p, "settings");
    assert_string_equal(jstr(kv, "Steps"), "25");
    assert_string_equal(jstr(kv, "Seed"), "42");
    assert_string_equal(jstr(kv, "Size"), "3x2");
    assert_string_equal(jstr(kv, "Model"), "tiny-sd");
    cJSON_Delete(j);
    free(r.out);

    /* the same file with one byte of its text chunk damaged */
    uint8_t *buf;
    size_t n;
    assert_int_equal(vkl_read_file_bytes(path, 1 << 20, &buf, &n, &e), 0);
    char *at = memmem(buf, n, "a red fox", 9);
    assert_non_null(at);
    *at = 'A';
    snprintf(path, sizeof path, "%s/broken.png", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
    free(buf);
    snprintf(args, sizeof args, "info '%s'", path);
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "broken.png: PNG chunk 'tEXt'");
    expect_in(&r, "bad CRC");
    free(r.out);
    vkl_test_rmtree(dir);
    free(text);
}

static void corpus_images(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("data/image-corpus/jpeg/hopper_orientation_6.jpg");
    char args[8400];
    snprintf(args, sizeof args, "info --json '%s'",
             vkl_test_shared_path("data/image-corpus/jpeg/hopper_orientation_6.jpg"));
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON:\n%s", r.out);
    assert_string_equal(jstr(j, "format"), "JPEG");
    assert_int_equal(jint(j, "orientation"), 6);
    assert_int_equal(jint(j, "width"), 128);
    assert_null(cJSON_GetObjectItem(j, "parameters"));
    cJSON_Delete(j);
    free(r.out);

    snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path("data/image-corpus/jpeg/truncated_jpeg.jpg"));
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "truncated_jpeg.jpg: JPEG ends inside scan data without an EOI marker");
    free(r.out);

    snprintf(args, sizeof args, "info '%s'",
             vkl_test_shared_path("data/image-corpus/derived/huge_65500x65500_testorig.jpg"));
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "65500x65500 is over the limit");
    free(r.out);

    /* a text bomb: the picture is described, the text reported unreadable */
    snprintf(args, sizeof args, "info '%s'",
             vkl_test_shared_path("data/image-corpus/png-misc/png_decompression_dos.png"));
    r = run(args);
    assert_int_equal(r.status, 0);
    expect_in(&r, "size: 1x1\n");
    expect_in(&r, "text chunks: unreadable:");
    free(r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(png_with_parameters),
        cmocka_unit_test(corpus_images),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
