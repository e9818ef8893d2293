/* Checkpoint layouts against the tiny reference model: the original single
 * file (fp32 and fp16) and the diffusers folder must give the same internal
 * weights, and damaged files must be refused with the offending names. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>

#include "sd/sd_source.h"

#define LDM "refkit/sd/tiny-sd-ldm.safetensors"
#define LDM16 "refkit/sd/tiny-sd-ldm-fp16.safetensors"
#define YAML "refkit/sd/tiny-sd-ldm.yaml"
#define FOLDER "refkit/sd/tiny-sd"

static vkl_sd_source *open_ok(const char *rel, const vkl_sd_source_opts *o)
{
    vkl_sd_source *s = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_source_open(vkl_test_shared_path(rel), o, &s, &e)) fail_msg("%s", e.msg);
    return s;
}

/* Every internal weight of a equals the one of b: same shape, bit-equal f32. */
static void assert_same_weights(const vkl_sd_source *a, const vkl_sd_source *b)
{
    assert_int_equal(vkl_sd_source_count(a), vkl_sd_source_count(b));
    vkl_err e = {{0}};
    for (int i = 0; i < vkl_sd_source_count(a); i++) {
        const vkl_sd_entry *x = vkl_sd_source_at(a, i);
        const vkl_sd_entry *y = vkl_sd_source_find(b, x->name);
        if (!y) fail_msg("%s missing in the other source", x->name);
        assert_int_equal(x->ndim, y->ndim);
        for (int d = 0; d < x->ndim; d++) assert_int_equal(x->shape[d], y->shape[d]);
        uint64_t n = vkl_sd_entry_nelem(x);
        float *p = malloc(n * sizeof *p), *q = malloc(n * sizeof *q);
        assert_non_null(p);
        assert_non_null(q);
        if (vkl_sd_source_read_f32(a, x, p, n, &e) || vkl_sd_source_read_f32(b, y, q, n, &e))
            fail_msg("%s", e.msg);
        if (memcmp(p, q, n * sizeof *p)) fail_msg("%s differs", x->name);
        free(p);
        free(q);
    }
}

static void single_file_equals_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LDM);
    VKL_REQUIRE_SHARED(FOLDER);
    vkl_sd_source *ldm = open_ok(LDM, NULL);
    vkl_sd_source *dif = open_ok(FOLDER, NULL);
    assert_int_equal(vkl_sd_source_layout(ldm), VKL_SD_LAYOUT_LDM);
    assert_int_equal(vkl_sd_source_layout(dif), VKL_SD_LAYOUT_DIFFUSERS);
    assert_non_null(vkl_sd_source_yaml(ldm)); /* the sidecar was found */
    /* 790 tensors in each: 494 UNet + 244 VAE + 52 text encoder, none left over. */
    assert_int_equal(vkl_sd_source_count(ldm), 790);
    assert_int_equal(vkl_sd_source_count(dif), 790);
    assert_same_weights(ldm, dif);
    assert_same_weights(dif, ldm);

    /* The 8 VAE mid-attention projections are 1x1 convs in the single file. */
    int reshaped = 0;
    for (int i = 0; i < vkl_sd_source_count(ldm); i++) {
        const vkl_sd_entry *x = vkl_sd_source_at(ldm, i);
        if (x->xform == VKL_SD_X_RESHAPE) {
            reshaped++;
            assert_non_null(strstr(x->name, "mid_block.attentions.0."));
            assert_int_equal(vkl_sd_source_tensor(ldm, x)->ndim, 4);
            assert_int_equal(x->ndim, 2);
        } else {
            assert_int_equal(x->xform, VKL_SD_X_NONE);
        }
    }
    assert_int_equal(reshaped, 8);
    const vkl_sd_entry *q = vkl_sd_source_find(ldm, "vae.decoder.mid_block.attentions.0.to_q.weight");
    assert_non_null(q);
    assert_string_equal(vkl_sd_source_tensor(ldm, q)->name,
                        "first_stage_model.decoder.mid.attn_1.q.weight");
    const vkl_sd_entry *u = vkl_sd_source_find(
        ldm, "unet.up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight");
    assert_non_null(u);
    assert_string_equal(vkl_sd_source_tensor(ldm, u)->name,
                        "model.diffusion_model.output_blocks.5.1.transformer_blocks.0.attn2.to_k.weight");
    const vkl_sd_entry *up = vkl_sd_source_find(ldm, "unet.up_blocks.0.upsamplers.0.conv.weight");
    assert_non_null(up);
    assert_string_equal(vkl_sd_source_tensor(ldm, up)->name,
                        "model.diffusion_model.output_blocks.2.1.conv.weight");
    vkl_sd_source_close(ldm);
    vkl_sd_source_close(dif);
}

static void fp16_single_file_equals_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LDM16);
    VKL_REQUIRE_SHARED(YAML);
    vkl_sd_source_opts o = {vkl_test_shared_path(YAML), 0};
    vkl_sd_source *ldm = open_ok(LDM16, &o);
    vkl_sd_source *dif = open_ok(FOLDER, NULL);
    assert_same_weights(ldm, dif);
    vkl_sd_source_close(ldm);
    vkl_sd_source_close(dif);
}

/* Copies the tiny single file into the temp dir, leaving out `drop` and adding
 * a tensor `extra` (either may be NULL). */
static const char *write_variant(const char *fname, const char *drop, const char *extra)
{
    static char path[4096];
    vkl_err e = {{0}};
    vkl_st_file *f;
    if (vkl_st_open(vkl_test_shared_path(LDM), &f, &e)) fail_msg("%s", e.msg);
    vkl_st_writer *w = vkl_st_writer_new();
    assert_non_null(w);
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        if (drop && !strcmp(t->name, drop)) continue;
        if (vkl_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, t->data, &e))
            fail_msg("%s", e.msg);
    }
    if (extra) {
        float v[4] = {1, 2, 3, 4};
        int64_t shape[1] = {4};
        if (vkl_st_writer_add(w, extra, VKL_F32, 1, shape, v, &e)) fail_msg("%s", e.msg);
    }
    snprintf(path, sizeof path, "%s/%s", vkl_test_tmpdir(), fname);
    if (vkl_st_writer_finish(w, path, &e)) fail_msg("%s", e.msg);
    vkl_st_writer_free(w);
    vkl_st_close(f);
    return path;
}

static void removed_key_is_reported(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LDM);
    const char *gone = "model.diffusion_model.output_blocks.4.1.transformer_blocks.0.ff.net.2.weight";
    const char *path = write_variant("removed.safetensors", gone, NULL);
    vkl_sd_source_opts o = {vkl_test_shared_path(YAML), 0};
    vkl_sd_source *s = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(path, &o, &s, &e), -1);
    assert_null(s);
    assert_non_null(strstr(e.msg, "removed.safetensors"));
    assert_non_null(strstr(e.msg, "1 missing ("));
    assert_non_null(strstr(e.msg, gone));
    assert_non_null(strstr(e.msg, "0 unexpected"));
}

static void extra_key_is_reported(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LDM);
    const char *extra = "model.diffusion_model.input_blocks.1.1.mystery.weight";
    const char *path = write_variant("extra.safetensors", NULL, extra);
    vkl_sd_source_opts o = {vkl_test_shared_path(YAML), 0};
    vkl_sd_source *s = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(path, &o, &s, &e), -1);
    assert_non_null(strstr(e.msg, "0 missing"));
    assert_non_null(strstr(e.msg, "1 unexpected ("));
    assert_non_null(strstr(e.msg, extra));
    /* Known training buffers are not "unexpected". */
    path = write_variant("buffers.safetensors", NULL, "alphas_cumprod");
    assert_int_equal(vkl_sd_source_open(path, &o, &s, &e), 0);
    assert_int_equal(vkl_sd_source_count(s), 790);
    vkl_sd_source_close(s);
}

static void not_a_checkpoint(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/unet.safetensors");
    vkl_sd_source *s = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path("refkit/sd/vectors/unet.safetensors"),
                                        NULL, &s, &e), -1);
    assert_non_null(strstr(e.msg, "not a Stable Diffusion single-file checkpoint"));
    /* Without the yaml the tiny model's 8 norm groups cannot be known (the
     * original code's 32 do not divide its 16-channel VAE level): a clear
     * error, not a guess. */
    vkl_sd_source_opts o = {NULL, 1};
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(LDM), &o, &s, &e), -1);
    if (!strstr(e.msg, "vae level 0 has 16 channels, not a positive multiple of 32 norm groups"))
        fail_msg("%s", e.msg);
    assert_non_null(strstr(e.msg, "yaml"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_file_equals_folder),
        cmocka_unit_test(fp16_single_file_equals_folder),
        cmocka_unit_test(removed_key_is_reported),
        cmocka_unit_test(extra_key_is_reported),
        cmocka_unit_test(not_a_checkpoint),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    vkl_test_rmtree(vkl_test_tmpdir());
    return rc;
}
