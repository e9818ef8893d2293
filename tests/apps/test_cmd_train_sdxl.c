/* vklora train on the tiny SDXL model (refkit/sdxl) and a shared image set:
 * the adapter is a kohya sdxl_train_network LoRA (exactly the kit's kohya
 * keys and shapes for the default attention network, SGM block names, ss_*
 * metadata with ss_base_model_version sdxl_base_v1-0), every key resolves
 * against the model, and vklora generate on SDXL loads it and its output
 * changes; --network full --train-te trains the UNet and both encoders. */
#include "vkl_test.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "lora/lora_file.h"

#include <stdlib.h>
#include <string.h>

#define KIT "refkit/sdxl/"
#define IMAGES "data/wesnoth-portraits/test16-128px"

static char common[1024];

static void set_common(void)
{
    snprintf(common, sizeof common,
             "--images images --resolution 64 --rank 4 --alpha 2 --lr 1e-3 --max-steps 2 --batch 2 --seed 3 --flip "
             "--quiet");
}

static int train(const char *model, const char *extra, const char *env)
{
    char args[4096], *out = NULL;
    snprintf(args, sizeof args, "train --model '%s' %s %s", vkl_test_shared_path(model), common, extra);
    int rc = vkl_test_cli(args, env, &out);
    if (rc && rc != 130) print_error("%s\n", out);
    free(out);
    return rc;
}

/* The kit's initial training LoRA: what kohya's sdxl_train_network makes
 * for the attention projections. */
static void same_keys_as_kit(vkl_st_file *f)
{
    vkl_st_file *kit;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(vkl_test_shared_path(KIT "vectors/lora/train_lora_init.safetensors"), &kit, &e), 0);
    assert_int_equal(vkl_st_count(f), vkl_st_count(kit));
    for (int i = 0; i < vkl_st_count(kit); i++) {
        const vkl_st_tensor *k = vkl_st_at(kit, i), *t = vkl_st_find(f, k->name);
        if (!t) fail_msg("%s is missing", k->name);
        assert_int_equal(t->ndim, k->ndim);
        for (int d = 0; d < k->ndim; d++) assert_int_equal(t->shape[d], k->shape[d]);
    }
    vkl_st_close(kit);
}

static void check_png_differs(const char *a_name, const char *b_name)
{
    char a_path[512], b_path[512];
    snprintf(a_path, sizeof a_path, "%s/%s", vkl_test_dir, a_name);
    snprintf(b_path, sizeof b_path, "%s/%s", vkl_test_dir, b_name);
    vkl_image a, b;
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_read_file(a_path, 3, VKL_PIX_U8, &a, NULL, &e), 0);
    assert_int_equal(vkl_image_read_file(b_path, 3, VKL_PIX_U8, &b, NULL, &e), 0);
    assert_int_equal(a.width, b.width);
    int differ = 0;
    for (int i = 0; i < a.width * a.height * 3; i++) differ += vkl_image_u8(&a)[i] != vkl_image_u8(&b)[i];
    print_message("the trained LoRA changes %d of %d bytes of the image\n", differ, a.width * a.height * 3);
    assert_true(differ > a.width * a.height / 10);
    vkl_image_free(&a);
    vkl_image_free(&b);
}

static void adapter_loads_in_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(KIT "tiny-sdxl");
    set_common();
    vkl_test_copy_images(IMAGES);
    assert_int_equal(train(KIT "tiny-sdxl", "-o a.safetensors", NULL), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/a.safetensors", vkl_test_dir);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(path, &f, &e), 0);
    same_keys_as_kit(f);
    assert_string_equal(vkl_st_meta_get(f, "ss_base_model_version"), "sdxl_base_v1-0");
    assert_string_equal(vkl_st_meta_get(f, "ss_sd_model_name"), "tiny-sdxl");
    assert_string_equal(vkl_st_meta_get(f, "ss_resolution"), "(64, 64)");
    assert_string_equal(vkl_st_meta_get(f, "ss_v2"), "False");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_module"), "networks.lora");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_dim"), "4");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_train_unet_only"), "True");
    assert_string_equal(vkl_st_meta_get(f, "ss_steps"), "2");
    assert_string_equal(vkl_st_meta_get(f, "ss_max_train_steps"), "2");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.architecture"), "stable-diffusion-xl-v1-base/lora");
    assert_string_equal(vkl_st_meta_get(f, "modelspec.implementation"), "https://github.com/Stability-AI/generative-models");
    vkl_st_close(f);
    /* every key resolves against the SDXL model */
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_open(vkl_test_shared_path(KIT "tiny-sdxl"), &tg, &e), 0);
    vkl_lora l;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(path, &lo, &l, &e)) fail_msg("%s", e.msg);
    assert_int_equal(l.n, 136);
    assert_int_equal(l.n_unmatched, 0);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&tg);
    /* generate on SDXL with and without it (a LoRA that learned for two
     * steps at lr 1e-3 moves the tiny model's output visibly) */
    char args[2048];
    const char *gen = "--prompt 'wesnoth portrait style' --steps 2 --width 64 --height 64 --seed 1 --quiet";
    snprintf(args, sizeof args, "generate --model '%s' %s -o g0.png", vkl_test_shared_path(KIT "tiny-sdxl"), gen);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    snprintf(args, sizeof args, "generate --model '%s' %s --lora a.safetensors:1 -o g1.png",
             vkl_test_shared_path(KIT "tiny-sdxl"), gen);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    check_png_differs("g0.png", "g1.png");
}

/* Compares one part of the trained folder with the base: the same names
 * and shapes; *changed counts the tensors whose values moved, and the names
 * in `same` must not have moved. */
static void compare_part(const char *part, const char *file, const char *const *same, int nsame, int *changed)
{
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/%s/%s", vkl_test_shared_path(KIT "tiny-sdxl"), part, file);
    snprintf(b, sizeof b, "%s/full/%s/%s", vkl_test_dir, part, file);
    vkl_st_file *fa, *fb;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(a, &fa, &e), 0);
    if (vkl_st_open(b, &fb, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(fa), vkl_st_count(fb));
    *changed = 0;
    for (int i = 0; i < vkl_st_count(fa); i++) {
        const vkl_st_tensor *ta = vkl_st_at(fa, i), *tb = vkl_st_find(fb, ta->name);
        if (!tb) fail_msg("%s/%s: %s is missing", part, file, ta->name);
        assert_int_equal(ta->ndim, tb->ndim);
        int64_t n = 1;
        for (int d = 0; d < ta->ndim; d++) {
            assert_int_equal(ta->shape[d], tb->shape[d]);
            n *= ta->shape[d];
        }
        float *va = malloc(sizeof(float) * (size_t)n), *vb = malloc(sizeof(float) * (size_t)n);
        assert_int_equal(vkl_st_read_f32(fa, ta->name, va, (uint64_t)n, &e), 0);
        assert_int_equal(vkl_st_read_f32(fb, tb->name, vb, (uint64_t)n, &e), 0);
        int moved = memcmp(va, vb, sizeof(float) * (size_t)n) != 0;
        *changed += moved;
        for (int k = 0; k < nsame; k++)
            if (!strcmp(same[k], ta->name) && moved) fail_msg("%s/%s: %s does not reach the loss but changed", part, file, ta->name);
        free(va);
        free(vb);
    }
    vkl_st_close(fa);
    vkl_st_close(fb);
}

/* The index of a base encoder's last layer. */
static int last_layer(const char *part)
{
    char a[600];
    snprintf(a, sizeof a, "%s/%s/model.safetensors", vkl_test_shared_path(KIT "tiny-sdxl"), part);
    vkl_st_file *f;
    vkl_err e = {{0}};
    assert_int_equal(vkl_st_open(a, &f, &e), 0);
    int last = -1;
    for (int i = 0; i < vkl_st_count(f); i++) {
        const char *p = strstr(vkl_st_at(f, i)->name, ".encoder.layers.");
        if (p && atoi(p + 16) > last) last = atoi(p + 16);
    }
    vkl_st_close(f);
    assert_true(last > 0);
    return last;
}

/* --network full --train-te on SDXL: a diffusers folder whose UNet and both
 * encoders hold every weight of the base, the trained ones moved (the
 * first encoder's last layer and final norm, which the UNet never reads,
 * as they were), and generate loads it and draws another picture. */
static void full_network_trains_sdxl(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(KIT "tiny-sdxl");
    set_common();
    vkl_test_copy_images(IMAGES);
    assert_int_equal(train(KIT "tiny-sdxl", "--network full --train-te --lr 1e-4 -o full", NULL), 0);
    int changed;
    compare_part("unet", "diffusion_pytorch_model.safetensors", NULL, 0, &changed);
    print_message("unet: %d tensors changed\n", changed);
    assert_true(changed > 100);
    char fc1[160];
    snprintf(fc1, sizeof fc1, "text_model.encoder.layers.%d.mlp.fc1.weight", last_layer("text_encoder"));
    const char *unread[] = {fc1, "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias"};
    compare_part("text_encoder", "model.safetensors", unread, 3, &changed);
    print_message("text_encoder: %d tensors changed\n", changed);
    assert_true(changed > 10);
    compare_part("text_encoder_2", "model.safetensors", NULL, 0, &changed);
    print_message("text_encoder_2: %d tensors changed\n", changed);
    assert_true(changed > 10);
    char args[2048];
    const char *gen = "--prompt 'wesnoth portrait style' --steps 2 --width 64 --height 64 --seed 1 --quiet";
    snprintf(args, sizeof args, "generate --model '%s' %s -o g0.png", vkl_test_shared_path(KIT "tiny-sdxl"), gen);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    snprintf(args, sizeof args, "generate --model full %s -o g1.png", gen);
    assert_int_equal(vkl_test_cli(args, NULL, NULL), 0);
    check_png_differs("g0.png", "g1.png");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(adapter_loads_in_generate),
        cmocka_unit_test(full_network_trains_sdxl),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
