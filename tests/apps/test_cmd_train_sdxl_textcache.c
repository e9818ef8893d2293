/* vklora train --cache-text-embeddings-to-disk on the tiny SDXL model
 * (refkit/sdxl): the first run encodes and writes every image's caption
 * states; a run without the option and a second run that reads them all back
 * (nothing encoded) log the same losses and gradient norms and write the
 * same adapter tensors, bit for bit; a sample image drawn after the text
 * encoders left the device has them back (the same PNG as the run without
 * the cache draws); an edited caption file makes its entry stale (that
 * caption encoded again), a damaged entry is warned about and rewritten;
 * kohya's key in a --config file works; the option is refused where there is
 * nothing fixed to cache. */
#include "vkl_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/sdxl/tiny-sdxl"
#define IMAGES "data/wesnoth-portraits/test16-128px"

/* Runs train with extra options into NAME.safetensors; returns its output. */
static char *train(const char *extra, const char *name, int want_rc)
{
    char args[2048], *out = NULL;
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --lr 1e-2 --max-steps 3 --batch 2 "
             "--seed 7 %s -o %s.safetensors",
             vkl_test_shared_path(MODEL), extra, name);
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc != want_rc) {
        print_error("%s\n", out);
        fail_msg("train %s: exit %d, want %d", extra, rc, want_rc);
    }
    return out;
}

static void expect_in(const char *out, const char *what)
{
    if (!strstr(out, what)) fail_msg("'%s' not in the output:\n%s", what, out);
}

/* NAME.csv without its last column (seconds). */
static char *losses(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s.csv", vkl_test_dir, name);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *all = calloc(1, 8192), line[512];
    while (fgets(line, sizeof line, f)) {
        char *last = strrchr(line, ',');
        if (last) *last = 0;
        strcat(all, line);
        strcat(all, "\n");
    }
    fclose(f);
    return all;
}

/* The tensors of two adapters in the test folder are the same, bit for bit
 * (their metadata names the runs). */
static void same_tensors(const char *a, const char *b)
{
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/%s.safetensors", vkl_test_dir, a);
    snprintf(pb, sizeof pb, "%s/%s.safetensors", vkl_test_dir, b);
    vkl_test_same_tensors(pa, pb);
}

static void sh(const char *cmd)
{
    char full[2048];
    snprintf(full, sizeof full, "cd '%s' && %s", vkl_test_dir, cmd);
    assert_int_equal(system(full), 0);
}

static void cached_runs_match(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    vkl_test_copy_images(IMAGES);
#define SAMPLE "--sample-prompts prompts.txt --sample-every 3 --sample-steps 2"
    sh("echo 'wesnoth portrait style' > prompts.txt");
    free(train(SAMPLE, "plain", 0));
    char *out = train("--cache-text-embeddings-to-disk", "first", 0);
    expect_in(out, "text cache: 0 of 16 images' caption states read from disk, 16 encoded (16 written; 0 stale, 0 "
                   "unreadable)");
    free(out);
    sh("test $(ls images/*.vklora-text.safetensors | wc -l) = 16");
    /* the encoders left the device; the sample image after the last step
     * brings them back and is the run without the cache's, byte for byte */
    out = train("--cache-text-embeddings-to-disk " SAMPLE, "second", 0);
    expect_in(out, "16 of 16 images' caption states read from disk, 0 encoded");
    expect_in(out, "the text encoders' ");
    free(out);
    sh("cmp second.samples/step000003-0.png plain.samples/step000003-0.png");
    char *a = losses("plain"), *b = losses("first"), *c = losses("second");
    print_message("losses without the cache:\n%s", a);
    assert_string_equal(b, a);
    assert_string_equal(c, a);
    free(a);
    free(b);
    free(c);
    same_tensors("plain", "first");
    same_tensors("plain", "second");

    /* an edited caption: that entry only; a truncated entry: warned, rewritten */
    sh("echo 'a new caption' > images/drakes_burner.txt && head -c 100 images/elves_archer.vklora-text.safetensors "
       "> cut && mv cut images/elves_archer.vklora-text.safetensors");
    out = train("--cache-text-embeddings-to-disk", "edited", 0);
    expect_in(out, "14 of 16 images' caption states read from disk, 2 encoded (2 written; 1 stale, 1 unreadable)");
    expect_in(out, "elves_archer.vklora-text.safetensors is unreadable");
    free(out);

    /* kohya's name in a settings file */
    sh("printf 'cache_text_encoder_outputs_to_disk = true\\n' > kohya.toml");
    out = train("--config kohya.toml", "kohya", 0);
    expect_in(out, "16 of 16 images' caption states read from disk, 0 encoded");
    free(out);
}

static void refused(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    vkl_test_copy_images(IMAGES);
    char *out = train("--cache-text-embeddings-to-disk --shuffle-caption", "shuffled", 1);
    expect_in(out, "needs each image's caption fixed");
    free(out);
    out = train("--cache-text-embeddings-to-disk --train-te", "te", 1);
    expect_in(out, "--train-te trains them");
    free(out);
    char args[1024];
    snprintf(args, sizeof args,
             "train --model '%s' --images images --max-steps 1 --cache-text-embeddings-to-disk -o sd.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    assert_int_equal(vkl_test_cli(args, NULL, &out), 1);
    expect_in(out, "--cache-text-embeddings-to-disk is for SDXL");
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cached_runs_match),
        cmocka_unit_test(refused),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
