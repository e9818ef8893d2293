/* DyLoRA end to end with the built binary. LLaMA: `lm train --network dylora`
 * writes a PEFT adapter at the full rank with kohya's DyLoRA metadata; `merge
 * --lora DIR --rank-at-inference R` writes a PEFT folder at r = R holding the
 * first R rank rows with lora_alpha kept; `lm generate --rank-at-inference R`
 * generates the same tokens as the cut folder. SD: `train --network dylora
 * --network-dim D --dylora-unit U` writes a kohya file with the metadata;
 * `generate --rank-at-inference R` draws the same pixels as the file `merge`
 * cut. A resumed DyLoRA run equals the uninterrupted one. Wrong ranks and
 * options are refused by name, leaving no output. */
#include "vkl_test.h"
#include "io/image.h"
#include "lora/lora_file.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LM "refkit/lm/tiny-llama"
#define SD "refkit/sd/tiny-sd"
#define SENTENCE "You may convey verbatim copies of the Program's source code as you receive it. "

static int run(const char *args, int want, const char *says)
{
    char *out = NULL;
    int rc = vkl_test_cli(args, NULL, &out);
    if (rc != want || (says && (!out || !strstr(out, says))))
        fail_msg("vklora %s: exit %d (want %d), output:\n%s\n(want it to say '%s')", args, rc, want, out ? out : "",
                 says ? says : "");
    free(out);
    return rc;
}

static void load(const char *rel, vkl_lora *l)
{
    char p[600];
    snprintf(p, sizeof p, "%s/%s", vkl_test_dir, rel);
    vkl_err e = {{0}};
    if (vkl_lora_load(p, NULL, l, &e)) fail_msg("%s", e.msg);
}

static int present(const char *rel)
{
    char p[600];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", vkl_test_dir, rel);
    return !stat(p, &st);
}

/* The cut adapter's factors are the first r rank rows of the full one's. */
static void expect_prefix(const vkl_lora *full, const vkl_lora *cut, int r)
{
    assert_int_equal(full->n, cut->n);
    for (int i = 0; i < cut->n; i++) {
        const vkl_lora_module *c = &cut->m[i], *f = vkl_lora_find(full, vkl_lora_module_label(c));
        assert_non_null(f);
        assert_int_equal(c->rank, r);
        assert_true(f->rank > r);
        assert_float_equal(c->alpha, f->alpha, 0);
        const vkl_lora_tensor *fd = &f->t[VKL_LORA_DOWN], *cd = &c->t[VKL_LORA_DOWN], *fu = &f->t[VKL_LORA_UP],
                              *cu = &c->t[VKL_LORA_UP];
        int64_t rest = (int64_t)vkl_lora_tensor_nelem(fd) / f->rank, out = fu->shape[0];
        assert_memory_equal(cd->data, fd->data, sizeof(float) * (size_t)(r * rest));
        for (int64_t o = 0; o < out; o++)
            assert_memory_equal(cu->data + o * r, fu->data + o * f->rank, sizeof(float) * (size_t)r);
    }
}

static char *ids_of(const char *args)
{
    char *out = NULL;
    assert_int_equal(vkl_test_cli(args, NULL, &out), 0);
    char *j = out ? strstr(out, "\"ids\":") : NULL;
    if (!j) fail_msg("vklora %s: no ids in\n%s", args, out ? out : "");
    char *end = strchr(j, ']');
    char *ids = strndup(j, (size_t)(end - j + 1));
    free(out);
    return ids;
}

static void lm_train_cut_and_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM);
    char p[600], args[4096];
    snprintf(p, sizeof p, "%s/story.txt", vkl_test_dir);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int i = 0; i < 30; i++) fputs(SENTENCE, f);
    fclose(f);
    const char *model = vkl_test_shared_path(LM);
    snprintf(args, sizeof args,
             "lm train --model '%s' --data story.txt -o dy --network dylora --rank 8 --alpha 8 --dylora-unit 2 "
             "--seq-len 32 --batch 2 --steps 8 --lr 2e-2 --seed 3 --quiet", model);
    run(args, 0, NULL);
    vkl_lora full;
    load("dy/adapter_model.safetensors", &full);
    assert_string_equal(vkl_lora_meta_get(&full, "ss_network_module"), "networks.dylora");
    assert_string_equal(vkl_lora_meta_get(&full, "ss_network_args"), "{\"unit\": \"2\"}");
    assert_int_equal(full.m[0].rank, 8);
    /* the cut folder */
    run("merge --lora dy --rank-at-inference 4 -o dy4", 0, NULL);
    vkl_lora cut;
    load("dy4/adapter_model.safetensors", &cut);
    expect_prefix(&full, &cut, 4);
    char *cfg = vkl_test_slurp(vkl_test_dir, "dy4/adapter_config.json");
    cJSON *j = cJSON_Parse(cfg);
    assert_int_equal(cJSON_GetObjectItem(j, "r")->valueint, 4);
    assert_float_equal(cJSON_GetObjectItem(j, "lora_alpha")->valuedouble, 8.0, 0);
    cJSON_Delete(j);
    free(cfg);
    /* applying with --rank-at-inference is applying the cut folder */
    char a1[2048], a2[2048], a3[2048];
    snprintf(a1, sizeof a1, "lm generate --model '%s' --prompt 'You may' --max-tokens 12 --json --lora dy "
                            "--rank-at-inference 4", model);
    snprintf(a2, sizeof a2, "lm generate --model '%s' --prompt 'You may' --max-tokens 12 --json --lora dy4", model);
    snprintf(a3, sizeof a3, "lm generate --model '%s' --prompt 'You may' --max-tokens 12 --json --lora dy", model);
    char *i1 = ids_of(a1), *i2 = ids_of(a2), *i3 = ids_of(a3);
    print_message("rank 4 of the DyLoRA file: %s; the cut folder: %s; rank 8: %s\n", i1, i2, i3);
    assert_string_equal(i1, i2);
    free(i1);
    free(i2);
    free(i3);
    /* refusals */
    run("merge --lora dy --rank-at-inference 3 -o bad", 1, "not a multiple of the adapter's DyLoRA unit 2");
    run("merge --lora dy --rank-at-inference 10 -o bad", 1, "above the rank 8");
    assert_false(present("bad"));
    snprintf(args, sizeof args, "%s --rank-at-inference 6", a3);
    run(args, 0, NULL); /* 6 is a multiple of 2 */
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt x --rank-at-inference 2", model);
    run(args, 2, "none is given");
    snprintf(args, sizeof args, "lm train --model '%s' --data story.txt -o x --network dylora --rank 6 --dylora-unit 4",
             model);
    run(args, 2, "not a multiple of --dylora-unit 4");
    snprintf(args, sizeof args, "lm train --model '%s' --data story.txt -o x --dylora-unit 2", model);
    run(args, 2, "--dylora-unit applies to --network dylora");
    assert_false(present("x"));
    vkl_lora_free(&full);
    vkl_lora_free(&cut);
}

static char *loss_log(const char *dir)
{
    char rel[300];
    snprintf(rel, sizeof rel, "%s/train_log.csv", dir);
    char *log = vkl_test_slurp(vkl_test_dir, rel);
    if (!log) fail_msg("no %s", rel);
    vkl_test_csv_first_columns(log, 3); /* step, epoch, loss */
    return log;
}

/* A DyLoRA run resumed from its state at step 3 is the uninterrupted run:
 * the same losses and the same adapter, bit for bit (the rank draws replay). */
static void lm_resume_is_exact(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM);
    char common[2048], args[4096];
    snprintf(common, sizeof common,
             "lm train --model '%s' --data story.txt --network dylora --rank 4 --alpha 4 --dylora-unit 1 --seq-len 32 "
             "--batch 2 --lr 2e-2 --seed 9 --save-every 3 --quiet", vkl_test_shared_path(LM));
    snprintf(args, sizeof args, "%s --steps 6 -o ra", common);
    run(args, 0, NULL);
    snprintf(args, sizeof args, "%s --steps 3 -o rb", common);
    run(args, 0, NULL);
    snprintf(args, sizeof args, "%s --steps 6 -o rb --resume", common);
    run(args, 0, NULL);
    char *la = loss_log("ra"), *lb = loss_log("rb");
    assert_string_equal(la, lb);
    free(la);
    free(lb);
    vkl_lora a, b;
    load("ra/adapter_model.safetensors", &a);
    load("rb/adapter_model.safetensors", &b);
    assert_int_equal(a.n, b.n);
    for (int i = 0; i < a.n; i++) {
        const vkl_lora_module *mb = vkl_lora_find(&b, a.m[i].name);
        assert_non_null(mb);
        for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++)
            assert_memory_equal(a.m[i].t[r].data, mb->t[r].data, sizeof(float) * vkl_lora_tensor_nelem(&a.m[i].t[r]));
    }
    vkl_lora_free(&a);
    vkl_lora_free(&b);
}

static void sd_train_cut_and_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(SD);
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    vkl_test_copy_images("data/wesnoth-portraits/test16-128px");
    const char *model = vkl_test_shared_path(SD);
    char args[4096];
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --network dylora --network-dim 4 --dylora-unit 2 "
             "--alpha 4 --lr 1e-2 --max-steps 3 --batch 2 --seed 5 --quiet -o sd.safetensors", model);
    run(args, 0, NULL);
    vkl_lora full;
    load("sd.safetensors", &full);
    assert_string_equal(vkl_lora_meta_get(&full, "ss_network_module"), "networks.dylora");
    assert_string_equal(vkl_lora_meta_get(&full, "ss_network_args"), "{\"unit\": \"2\"}");
    run("merge --lora sd.safetensors --rank-at-inference 2 -o sd2.safetensors", 0, NULL);
    vkl_lora cut;
    load("sd2.safetensors", &cut);
    expect_prefix(&full, &cut, 2);
    char g[2048];
    snprintf(g, sizeof g, "generate --model '%s' --prompt portrait --steps 2 --seed 4 --width 64 --height 64 --quiet",
             model);
    snprintf(args, sizeof args, "%s --lora sd.safetensors --rank-at-inference 2 -o a.png", g);
    run(args, 0, NULL);
    snprintf(args, sizeof args, "%s --lora sd2.safetensors -o b.png", g);
    run(args, 0, NULL);
    vkl_image a, b;
    vkl_err e = {{0}};
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/a.png", vkl_test_dir);
    snprintf(pb, sizeof pb, "%s/b.png", vkl_test_dir);
    assert_int_equal(vkl_image_read_file(pa, 3, VKL_PIX_U8, &a, NULL, &e), 0);
    assert_int_equal(vkl_image_read_file(pb, 3, VKL_PIX_U8, &b, NULL, &e), 0);
    assert_int_equal(a.width, b.width);
    assert_memory_equal(vkl_image_u8(&a), vkl_image_u8(&b), (size_t)a.width * a.height * 3);
    vkl_image_free(&a);
    vkl_image_free(&b);
    /* a run interrupted at step 2 and resumed logs the uninterrupted run's losses */
    char common[2048];
    snprintf(common, sizeof common,
             "train --model '%s' --images images --resolution 64 --network dylora --network-dim 4 --dylora-unit 1 "
             "--alpha 4 --lr 1e-2 --max-steps 4 --batch 2 --seed 6 --quiet", model);
    snprintf(args, sizeof args, "%s -o sa.safetensors", common);
    run(args, 0, NULL);
    snprintf(args, sizeof args, "%s -o sb.safetensors", common);
    char *out = NULL;
    assert_int_equal(vkl_test_cli(args, "VKLORA_TRAIN_INTERRUPT_AT=2", &out), 130);
    free(out);
    snprintf(args, sizeof args, "%s -o sb.safetensors --resume sb.state", common);
    run(args, 0, NULL);
    char *la = vkl_test_slurp(vkl_test_dir, "sa.csv"), *lb = vkl_test_slurp(vkl_test_dir, "sb.csv");
    assert_non_null(la);
    assert_non_null(lb);
    vkl_test_csv_first_columns(la, 3);
    vkl_test_csv_first_columns(lb, 3);
    assert_string_equal(la, lb);
    free(la);
    free(lb);
    snprintf(args, sizeof args, "%s --lora sd.safetensors --rank-at-inference 3 -o c.png", g);
    run(args, 1, "not a multiple of the adapter's DyLoRA unit 2");
    snprintf(args, sizeof args,
             "train --model '%s' --images images --resolution 64 --network dylora --network-dim 6 --dylora-unit 4 "
             "--max-steps 1 -o bad.safetensors", model);
    run(args, 1, "not a multiple of --dylora-unit 4");
    assert_false(present("bad.safetensors"));
    vkl_lora_free(&full);
    vkl_lora_free(&cut);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lm_train_cut_and_generate),
        cmocka_unit_test(lm_resume_is_exact),
        cmocka_unit_test(sd_train_cut_and_generate),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
