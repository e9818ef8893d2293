/* `vklora info` end to end: the built binary (VKLORA_BINARY) on the reference
 * kit's files, whose expected facts come from the kit itself (manifest.json,
 * lora_targets.json, adapter_config.json), and on broken input. */
#include "vkl_test.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

typedef struct {
    char *out; /* stdout and stderr together */
    int status;
} run_result;

static const char *binary(void)
{
    const char *b = getenv("VKLORA_BINARY");
    if (!b || !*b) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run through ctest)\n");
        skip();
    }
    return b;
}

static run_result run(const char *args)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", binary(), args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t k;
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
    if (!strstr(r->out, frag)) {
        print_error("output lacks \"%s\":\n%s\n", frag, r->out);
        fail();
    }
}

static cJSON *load_json(const char *rel)
{
    FILE *fp = fopen(vkl_test_shared_path(rel), "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *b = malloc((size_t)n);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    cJSON *j = cJSON_ParseWithLength(b, (size_t)n);
    free(b);
    assert_non_null(j);
    return j;
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) fail_msg("JSON lacks \"%s\"", k);
    return v;
}

/* f32 bytes and tensor count of one file according to the kit's manifest. */
static void manifest_sums(const cJSON *manifest, const char *rel, double *f32_bytes, int *count)
{
    const cJSON *t = get(get(get(manifest, "files"), rel), "tensors");
    *f32_bytes = 0;
    *count = 0;
    for (const cJSON *e = t->child; e; e = e->next) {
        double n = 1;
        for (const cJSON *d = get(e, "shape")->child; d; d = d->next) n *= d->valuedouble;
        if (!strcmp(get(e, "dtype")->valuestring, "float32")) *f32_bytes += 4 * n;
        (*count)++;
    }
}

static void kohya_lora_text(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/lora/lora_kohya.safetensors");
    char args[2048];
    snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors"));
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    expect_in(&r, "tensors: 477\n");
    expect_in(&r, "kind: LoRA adapter (kohya)\n");
    expect_in(&r, "  rank: 4\n");
    expect_in(&r, "  alpha: 2\n");
    expect_in(&r, "  target modules: 159 (unet 141, text encoder 18)\n");
    expect_in(&r, "  ss_network_dim = 4\n");
    expect_in(&r, "  ss_network_args = {\"conv_dim\": \"4\", \"conv_alpha\": \"2\"}\n");
    free(r.out);
}

static void kohya_lora_json(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/lora/lora_targets.json");
    VKL_REQUIRE_SHARED("refkit/sd/manifest.json");
    char args[2048];
    snprintf(args, sizeof args, "info --json '%s'",
             vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors"));
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON:\n%s", r.out);

    cJSON *targets = load_json("refkit/sd/vectors/lora/lora_targets.json");
    int unet = 0, te = 0;
    for (const cJSON *t = targets->child; t; t = t->next) {
        if (!strcmp(get(t, "root")->valuestring, "unet")) unet++;
        else te++;
        assert_int_equal(get(t, "rank")->valueint, 4);
    }
    cJSON *manifest = load_json("refkit/sd/manifest.json");
    double f32_bytes;
    int count;
    manifest_sums(manifest, "vectors/lora/lora_kohya.safetensors", &f32_bytes, &count);

    assert_string_equal(get(j, "kind")->valuestring, "lora");
    assert_int_equal(get(j, "tensors")->valueint, count);
    assert_true(get(get(j, "bytes_by_dtype"), "f32")->valuedouble == f32_bytes);
    assert_true(get(j, "bytes")->valuedouble == f32_bytes);
    assert_string_equal(get(get(j, "metadata"), "ss_network_alpha")->valuestring, "2.0");
    const cJSON *l = get(j, "lora");
    assert_string_equal(get(l, "format")->valuestring, "kohya");
    assert_int_equal(get(l, "target_modules")->valueint, cJSON_GetArraySize(targets));
    assert_int_equal(get(l, "unet_modules")->valueint, unet);
    assert_int_equal(get(l, "text_encoder_modules")->valueint, te);
    assert_int_equal(cJSON_GetArraySize(get(l, "ranks")), 1);
    assert_int_equal(get(l, "ranks")->child->valueint, 4);
    assert_int_equal(cJSON_GetArraySize(get(l, "alphas")), 1);
    assert_true(get(l, "alphas")->child->valuedouble == get(targets->child, "alpha")->valuedouble);
    assert_true(cJSON_IsFalse(get(l, "dora")));
    cJSON_Delete(j);
    cJSON_Delete(targets);
    cJSON_Delete(manifest);
    free(r.out);
}

static void other_lora_formats(void **state)
{
    (void)state;
    static const struct {
        const char *rel, *kind_line, *rank_line;
    } cases[] = {
        {"refkit/sd/vectors/lora/lora_peft.safetensors", "kind: LoRA adapter (PEFT)\n", "  rank: 4\n"},
        {"refkit/sd/vectors/lora/lora_diffusers.safetensors", "kind: LoRA adapter (diffusers)\n", "  rank: 4\n"},
        {"refkit/sd/vectors/lora/lora_kohya_fp16.safetensors", "kind: LoRA adapter (kohya)\n", "  rank: 4\n"},
        {"refkit/lm/tiny-llama-lora-qv-r4/adapter_model.safetensors", "kind: LoRA adapter (PEFT)\n", "  rank: 4\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        VKL_REQUIRE_SHARED(cases[i].rel);
        char args[2048];
        snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path(cases[i].rel));
        run_result r = run(args);
        assert_int_equal(r.status, 0);
        expect_in(&r, cases[i].kind_line);
        expect_in(&r, cases[i].rank_line);
        free(r.out);
    }
}

/* PEFT keeps alpha in adapter_config.json; DoRA adds magnitude vectors. */
static void peft_dora_with_config(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-dora/adapter_config.json");
    cJSON *cfg = load_json("refkit/lm/tiny-llama-dora/adapter_config.json");
    char args[2048];
    snprintf(args, sizeof args, "info --json '%s'",
             vkl_test_shared_path("refkit/lm/tiny-llama-dora/adapter_model.safetensors"));
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON:\n%s", r.out);
    const cJSON *l = get(j, "lora");
    assert_string_equal(get(l, "format")->valuestring, "PEFT");
    assert_int_equal(get(l, "ranks")->child->valueint, get(cfg, "r")->valueint);
    assert_true(get(l, "alphas")->child->valuedouble == get(cfg, "lora_alpha")->valuedouble);
    assert_string_equal(get(l, "alpha_source")->valuestring, "adapter_config.json");
    assert_true(cJSON_IsTrue(get(l, "dora")));
    /* 3 layers x 7 target module kinds listed in the config */
    assert_int_equal(get(l, "target_modules")->valueint, 3 * cJSON_GetArraySize(get(cfg, "target_modules")));
    cJSON_Delete(j);
    cJSON_Delete(cfg);
    free(r.out);
}

static void checkpoints_and_components(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm.safetensors");
    cJSON *manifest = load_json("refkit/sd/manifest.json");
    double bytes;
    int unet, vae, te;
    manifest_sums(manifest, "tiny-sd/unet/diffusion_pytorch_model.safetensors", &bytes, &unet);
    manifest_sums(manifest, "tiny-sd/vae/diffusion_pytorch_model.safetensors", &bytes, &vae);
    manifest_sums(manifest, "tiny-sd/text_encoder/model.safetensors", &bytes, &te);
    char args[2048];
    snprintf(args, sizeof args, "info --json '%s'", vkl_test_shared_path("refkit/sd/tiny-sd-ldm.safetensors"));
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    if (!j) fail_msg("not JSON:\n%s", r.out);
    assert_string_equal(get(j, "kind")->valuestring, "sd-checkpoint");
    const cJSON *k = get(j, "checkpoint");
    assert_string_equal(get(k, "family")->valuestring, "SD 1.x");
    assert_int_equal(get(k, "unet_tensors")->valueint, unet);
    assert_int_equal(get(k, "vae_tensors")->valueint, vae);
    assert_int_equal(get(k, "text_encoder_tensors")->valueint, te);
    cJSON_Delete(j);
    free(r.out);

    static const struct {
        const char *rel, *line;
    } comps[] = {
        {"refkit/sd/tiny-sd/unet/diffusion_pytorch_model.safetensors", "kind: diffusers component: UNet\n"},
        {"refkit/sd/tiny-sd/vae/diffusion_pytorch_model.safetensors", "kind: diffusers component: VAE\n"},
        {"refkit/sd/tiny-sd/text_encoder/model.safetensors", "kind: diffusers component: CLIP text encoder\n"},
        {"refkit/sd/vectors/unet.safetensors", "kind: unknown\n"},
    };
    for (size_t i = 0; i < sizeof comps / sizeof *comps; i++) {
        snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path(comps[i].rel));
        r = run(args);
        assert_int_equal(r.status, 0);
        expect_in(&r, comps[i].line);
        free(r.out);
    }
    /* several files at once in JSON: an array */
    snprintf(args, sizeof args, "info --json '%s' '%s'", vkl_test_shared_path(comps[0].rel),
             vkl_test_shared_path(comps[1].rel));
    r = run(args);
    assert_int_equal(r.status, 0);
    j = cJSON_Parse(r.out);
    assert_true(cJSON_IsArray(j));
    assert_int_equal(cJSON_GetArraySize(j), 2);
    assert_string_equal(get(cJSON_GetArrayItem(j, 1), "kind")->valuestring, "diffusers-vae");
    cJSON_Delete(j);
    free(r.out);
    cJSON_Delete(manifest);
}

static void broken_files(void **state)
{
    (void)state;
    binary();
    const char *dir = vkl_test_tmpdir();
    char path[512], args[2048];
    /* header length claims 4096 bytes, file has 20 */
    snprintf(path, sizeof path, "%s/broken.safetensors", dir);
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    static const uint8_t bad[20] = {0, 16, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':', '{', '}', '}', ' ', ' ', ' ', ' '};
    fwrite(bad, 1, sizeof bad, fp);
    fclose(fp);
    snprintf(args, sizeof args, "info '%s'", path);
    run_result r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "vklora info: "); /* the one error prefix of every command */
    expect_in(&r, path);
    expect_in(&r, "header length 4096 goes past the end of the file (20 bytes)");
    free(r.out);

    /* same bytes under a neutral name: still sniffed as safetensors */
    snprintf(path, sizeof path, "%s/noext", dir);
    fp = fopen(path, "wb");
    fwrite(bad, 1, sizeof bad, fp);
    fclose(fp);
    snprintf(args, sizeof args, "info --json '%s'", path);
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "goes past the end of the file");
    free(r.out);

    /* a tensor entry that lies about its size */
    snprintf(path, sizeof path, "%s/lying.safetensors", dir);
    fp = fopen(path, "wb");
    static const char hdr[] = "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8]}}";
    uint8_t len[8] = {sizeof hdr - 1};
    fwrite(len, 1, 8, fp);
    fwrite(hdr, 1, sizeof hdr - 1, fp);
    fwrite("01234567", 1, 8, fp);
    fclose(fp);
    snprintf(args, sizeof args, "info '%s'", path);
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "tensor 'w': shape and dtype F32 need 16 bytes");
    free(r.out);

    snprintf(path, sizeof path, "%s/notes.txt", dir);
    fp = fopen(path, "wb");
    fputs("just some text\n", fp);
    fclose(fp);
    snprintf(args, sizeof args, "info '%s'", path);
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "unrecognised file type");
    free(r.out);

    snprintf(args, sizeof args, "info '%s/missing.safetensors'", dir);
    r = run(args);
    assert_int_equal(r.status, 1);
    expect_in(&r, "cannot open");
    free(r.out);

    r = run("info");
    assert_int_equal(r.status, 2);
    expect_in(&r, "usage: vklora info");
    free(r.out);
    vkl_test_rmtree(dir);
}

/* Folders: a diffusers model (facts from its config files), a PEFT adapter
 * folder (its adapter file and config), a language-model folder. */
static void folders(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora");
    char args[4096];
    snprintf(args, sizeof args, "info --json '%s'", vkl_test_shared_path("refkit/sd/tiny-sd"));
    run_result r = run(args);
    assert_int_equal(r.status, 0);
    cJSON *j = cJSON_Parse(r.out);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "kind")->valuestring, "diffusers-model");
    assert_string_equal(cJSON_GetObjectItem(j, "family")->valuestring, "SD1");
    /* the kit's unet/config.json: sample_size 16, block_out_channels [32, 64, 64]; VAE 8x */
    assert_int_equal(cJSON_GetObjectItem(j, "native_size")->valueint, 128);
    assert_string_equal(cJSON_GetObjectItem(j, "unet_channels")->valuestring, "32,64,64");
    cJSON_Delete(j);
    free(r.out);
    snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path("refkit/lm/tiny-llama-lora"));
    r = run(args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "adapter_model.safetensors"));
    assert_non_null(strstr(r.out, "PEFT"));
    free(r.out);
    snprintf(args, sizeof args, "info '%s'", vkl_test_shared_path("refkit/lm/tiny-llama"));
    r = run(args);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "LLaMA-family model folder"));
    free(r.out);
    r = run("info /proc/self");
    assert_int_equal(r.status, 1);
    assert_non_null(strstr(r.out, "a folder vklora info does not know"));
    free(r.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kohya_lora_text),
        cmocka_unit_test(kohya_lora_json),
        cmocka_unit_test(other_lora_formats),
        cmocka_unit_test(peft_dora_with_config),
        cmocka_unit_test(checkpoints_and_components),
        cmocka_unit_test(broken_files),
        cmocka_unit_test(folders),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
