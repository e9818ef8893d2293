/* vklora train --train-te on the tiny SDXL model: the adapter holds kohya's
 * lora_te1_ modules (q/k/v/out_proj, fc1, fc2 of the first encoder's layers
 * before the penultimate one SDXL reads) and lora_te2_ modules (every layer
 * of the second, whose last layer feeds the pooled embedding), every key
 * resolves against the model, each encoder up matrix (zero at the start)
 * moved, and the metadata records the text encoder's rate. The same rule on
 * SD 1.x: with --clip-skip 2 the encoder's last layer, which the UNet never
 * reads, gets no adapters (it would train nothing). */
#include "vkl_test.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/sdxl/tiny-sdxl"
#define IMAGES "data/wesnoth-portraits/test16-128px"

static void both_encoders_train(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    vkl_test_copy_images(IMAGES);
    char args[2048], *out = NULL;
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 4 --lr 1e-3 --te-lr 5e-4 "
             "--train-te --max-steps 1 --batch 2 --seed 9 --quiet -o te.safetensors",
             vkl_test_shared_path(MODEL));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char path[512];
    snprintf(path, sizeof path, "%s/te.safetensors", vkl_test_dir);
    vkl_err e = {{0}};
    vkl_st_file *f;
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    assert_string_equal(vkl_st_meta_get(f, "ss_network_train_unet_only"), "False");
    assert_string_equal(vkl_st_meta_get(f, "ss_text_encoder_lr"), "0.0005");
    assert_string_equal(vkl_st_meta_get(f, "ss_base_model_version"), "sdxl_base_v1-0");
    int up[2] = {0, 0};
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        int k = !strncmp(t->name, "lora_te1_text_model_encoder_layers_", 35) ? 0
                : !strncmp(t->name, "lora_te2_text_model_encoder_layers_", 35) ? 1 : -1;
        assert_true(k >= 0 || !strncmp(t->name, "lora_unet_", 10));
        if (k < 0 || !strstr(t->name, ".lora_up.weight")) continue;
        up[k]++;
        float *v = malloc(sizeof(float) * t->nelem);
        assert_int_equal(vkl_st_read(f, t, VKL_F32, v, &e), 0);
        double mx = 0;
        for (uint64_t j = 0; j < t->nelem; j++) mx = fmax(mx, fabs(v[j]));
        if (!(mx > 0)) fail_msg("%s did not change", t->name);
        free(v);
    }
    vkl_st_close(f);
    /* the tiny encoders have 3 layers: 2 of the first train, 3 of the second */
    assert_int_equal(up[0], 6 * 2);
    assert_int_equal(up[1], 6 * 3);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_open(vkl_test_shared_path(MODEL), &tg, &e), 0);
    vkl_lora l;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(path, &lo, &l, &e)) fail_msg("%s", e.msg);
    assert_int_equal(l.n_unmatched, 0);
    assert_int_equal(l.n, 136 + 6 * 2 + 6 * 3);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&tg);
}

static void clip_skip_leaves_out_unread_layers(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    vkl_test_copy_images(IMAGES);
    char args[2048], *out = NULL;
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --rank 4 --alpha 4 --lr 1e-3 --train-te "
             "--clip-skip 2 --max-steps 1 --batch 1 --seed 9 --quiet -o skip.safetensors",
             vkl_test_shared_path("refkit/sd/tiny-sd"));
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc) print_error("%s\n", out);
    free(out);
    assert_int_equal(rc, 0);
    char path[512];
    snprintf(path, sizeof path, "%s/skip.safetensors", vkl_test_dir);
    vkl_err e = {{0}};
    vkl_st_file *f;
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    int per_layer[3] = {0, 0, 0};
    for (int i = 0; i < vkl_st_count(f); i++) {
        const char *n = vkl_st_at(f, i)->name;
        if (!strncmp(n, "lora_te_text_model_encoder_layers_", 34) && strstr(n, ".lora_up.weight")) {
            int layer = atoi(n + 34);
            assert_true(layer >= 0 && layer < 3);
            per_layer[layer]++;
        }
    }
    vkl_st_close(f);
    /* the tiny encoder has 3 layers; clip skip 2 reads the output of the second */
    assert_int_equal(per_layer[0], 6);
    assert_int_equal(per_layer[1], 6);
    assert_int_equal(per_layer[2], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(both_encoders_train),
        cmocka_unit_test(clip_skip_leaves_out_unread_layers),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
