/* SDXL caption states on disk (train/sdxl_train_cond.h, the disk cache):
 * the first pass encodes and writes each image's entry, whose values are the
 * reference kit's (refkit/sdxl/vectors/train_lora.safetensors, 1e-4 of
 * scale) and bit-identical to encoding without any cache; a second pass reads
 * every entry and encodes nothing; a changed caption, another clip skip or
 * other encoder weights make entries stale; a damaged entry (a flipped data
 * byte, a truncated file, a wrong shape) is warned about, encoded again and
 * rewritten. */
#include "vkl_test.h"
#include "io/safetensors.h"
#include "train/sdxl_train_cond.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sdxl/vectors/train_lora.safetensors"
#define PER (77 * 80)
#define P 32

static const char *A = "a photograph of an astronaut riding a horse";
static const char *B = "A cat, sitting on a mat; (oil painting) by Greg Rutkowski & Alphonse Mucha";

static vkl_sd_model *load(const char *rel, const char *yaml, vkl_ctx *c)
{
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    char y[512], tok[512];
    if (yaml) snprintf(y, sizeof y, "%s", vkl_test_shared_path(yaml));
    snprintf(tok, sizeof tok, "%s", vkl_test_shared_path("refkit/sdxl/tiny-sdxl/tokenizer"));
    mo.yaml = yaml ? y : NULL;
    mo.tokenizer = yaml ? tok : NULL; /* a single file carries no vocabulary */
    vkl_sd_model *m = NULL;
    vkl_err e = {{0}};
    if (vkl_sd_model_load(c, vkl_test_shared_path(rel), &mo, &m, &e)) fail_msg("%s", e.msg);
    return m;
}

/* One pass of a run: a fresh memory cache and disk state over the images. */
static vkl_sdxl_text_disk pass(vkl_sd_model *m, char **images, char **caps, int n, int skip, int *encoded)
{
    vkl_sdxl_text_disk d;
    vkl_err e = {{0}};
    if (vkl_sdxl_text_disk_init(&d, m, skip, &e)) fail_msg("%s", e.msg);
    vkl_sdxl_text_cache *cache = vkl_sdxl_text_cache_new(1 << 24);
    if (vkl_sdxl_text_disk_prepare(&d, m, cache, images, caps, n, 2, &e)) fail_msg("%s", e.msg);
    int hits;
    vkl_sdxl_text_cache_stats(cache, encoded, &hits);
    vkl_sdxl_text_cache_free(cache);
    return d;
}

static void expect(vkl_sdxl_text_disk d, int encoded, int read, int written, int stale, int corrupt, int got_encoded,
                   const char *what)
{
    if (d.read != read || d.written != written || d.stale != stale || d.corrupt != corrupt || got_encoded != encoded)
        fail_msg("%s: read %d written %d stale %d unreadable %d encoded %d; want %d %d %d %d %d", what, d.read,
                 d.written, d.stale, d.corrupt, got_encoded, read, written, stale, corrupt, encoded);
}

/* The entry of image i read through a cache that keeps nothing, so from disk. */
static void read_back(vkl_sd_model *m, vkl_sdxl_text_disk *d, char *image, char *cap, float *ctx, float *pooled)
{
    vkl_sdxl_text_cache *none = vkl_sdxl_text_cache_new(0);
    vkl_sdxl_text_cache_set_disk(none, d);
    vkl_err e = {{0}};
    if (vkl_sdxl_encode_captions(m, none, &cap, &image, 1, 0, ctx, pooled, &e)) fail_msg("%s", e.msg);
    int encoded, hits;
    vkl_sdxl_text_cache_stats(none, &encoded, &hits);
    assert_int_equal(encoded, 0);
    vkl_sdxl_text_cache_free(none);
}

static void run(const char *cmd)
{
    char full[1024];
    snprintf(full, sizeof full, "cd '%s' && %s", vkl_test_dir, cmd);
    assert_int_equal(system(full), 0);
}

static void entries_on_disk(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_sd_model *m = load("refkit/sdxl/tiny-sdxl", NULL, c);
    char im[3][512];
    for (int i = 0; i < 3; i++) snprintf(im[i], sizeof im[i], "%s/img%d.png", vkl_test_dir, i);
    char *images[3] = {im[0], im[1], im[2]}, *caps[3] = {(char *)A, (char *)B, (char *)A};
    int encoded;

    /* first run: two captions encoded, three entries written */
    vkl_sdxl_text_disk d = pass(m, images, caps, 3, 0, &encoded);
    expect(d, 2, 0, 3, 0, 0, encoded, "first pass");
    run("test -s img0.vklora-text.safetensors && test -s img2.vklora-text.safetensors");

    /* what is on disk: the reference's states, bit for bit what no cache gives */
    int64_t n;
    float *ehs = vkl_test_ref_f32(VEC, "encoder_hidden_states", &n), *te = vkl_test_ref_f32(VEC, "text_embeds", &n);
    float plain[2 * PER], plain_p[2 * P], ctx[PER], pooled[P];
    vkl_err e = {{0}};
    char *two[2] = {(char *)A, (char *)B};
    if (vkl_sdxl_encode_captions(m, NULL, two, NULL, 2, 0, plain, plain_p, &e)) fail_msg("%s", e.msg);
    for (int i = 0; i < 3; i++) {
        int r = i == 1;
        read_back(m, &d, images[i], caps[i], ctx, pooled);
        vkl_test_assert_scaled("context from disk", ctx, ehs + PER * r, PER, 1e-4);
        vkl_test_assert_scaled("pooled from disk", pooled, te + P * r, P, 1e-4);
        assert_memory_equal(ctx, plain + PER * r, sizeof ctx);
        assert_memory_equal(pooled, plain_p + P * r, sizeof pooled);
    }
    free(ehs);
    free(te);

    /* second run: everything read, nothing encoded or written */
    d = pass(m, images, caps, 3, 0, &encoded);
    expect(d, 0, 3, 0, 0, 0, encoded, "second pass");

    /* image 1's caption changes: its entry is stale and rewritten */
    char *changed[3] = {(char *)A, "a different caption", (char *)A};
    d = pass(m, images, changed, 3, 0, &encoded);
    expect(d, 1, 2, 1, 1, 0, encoded, "changed caption");
    d = pass(m, images, changed, 3, 0, &encoded);
    expect(d, 0, 3, 0, 0, 0, encoded, "after the change");

    /* another clip skip: another key for every entry */
    d = pass(m, images, changed, 3, 1, &encoded);
    expect(d, 2, 0, 3, 3, 0, encoded, "clip skip 2");

    /* damage: the last data byte of img0's entry flipped, img1's cut short,
     * img2's replaced by a file of the right key but the wrong shape */
    d = pass(m, images, caps, 3, 0, &encoded);
    run("python3 -c \"import sys; p='img0.vklora-text.safetensors'; b=bytearray(open(p,'rb').read()); "
        "b[-1]^=0x40; open(p,'wb').write(b)\" && "
        "head -c 300 img2.vklora-text.safetensors > cut && mv cut img1.vklora-text.safetensors");
    d = pass(m, images, caps, 3, 0, &encoded);
    /* (img0's caption is img2's, read from its intact entry: only B is encoded) */
    expect(d, 1, 1, 2, 0, 2, encoded, "damaged entries");
    d = pass(m, images, caps, 3, 0, &encoded);
    expect(d, 0, 3, 0, 0, 0, encoded, "after the repair");
    {
        /* the key matches, the context is one row short */
        char path[600];
        snprintf(path, sizeof path, "%s/img2.vklora-text.safetensors", vkl_test_dir);
        vkl_st_file *f;
        assert_int_equal(vkl_st_open(path, &f, &e), 0);
        char key[80], digest[80];
        snprintf(key, sizeof key, "%s", vkl_st_meta_get(f, "key"));
        snprintf(digest, sizeof digest, "%s", vkl_st_meta_get(f, "digest"));
        vkl_st_close(f);
        vkl_st_writer *w = vkl_st_writer_new();
        float zeros[PER] = {0};
        assert_int_equal(vkl_st_writer_add(w, "context", VKL_F32, 2, (int64_t[]){76, 80}, zeros, &e), 0);
        assert_int_equal(vkl_st_writer_add(w, "pooled", VKL_F32, 1, (int64_t[]){P}, zeros, &e), 0);
        assert_int_equal(vkl_st_writer_meta(w, "key", key, &e), 0);
        assert_int_equal(vkl_st_writer_meta(w, "digest", digest, &e), 0);
        assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
        vkl_st_writer_free(w);
    }
    d = pass(m, images, caps, 3, 0, &encoded);
    expect(d, 0, 2, 1, 0, 1, encoded, "wrong shape");
    vkl_sd_model_free(m);

    /* other encoder weights (the fp16 single file of the same model): stale */
    m = load("refkit/sdxl/tiny-sdxl-sgm-fp16.safetensors", "refkit/sdxl/tiny-sdxl-sgm.yaml", c);
    d = pass(m, images, caps, 3, 0, &encoded);
    expect(d, 2, 0, 3, 3, 0, encoded, "another model");
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(entries_on_disk),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
