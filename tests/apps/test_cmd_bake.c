/* `vklora merge --model BASE --lora A:W -o OUT`: the reference LoRA baked into
 * the tiny model, single file (original layout) and diffusers folder; the
 * result is read back with the library and must give the reference outputs of
 * the model with the LoRA at 1.0 (refkit/sd/vectors/lora_expected.safetensors:
 * UNet eps at t=500, text-encoder states) within 1e-4 x max. The output keeps
 * every tensor of the input (names, order, shapes, dtypes; untouched tensors
 * byte for byte), including a VAE mid-attention weight baked from a LoHa built
 * here in its [C,C,1,1] form. The diffusers files of the kit are f16, so the
 * folder is compared as baked with --dtype f32. Bad input: an adapter for another model, the
 * model itself as output, an existing folder: a clear error and no output. */
#include "vkl_test.h"

#include "io/safetensors.h"
#include "lora/lora_delta.h"
#include "lora/lora_file.h"
#include "sd/clip_text.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define EXP "refkit/sd/vectors/lora_expected.safetensors"
#define KOHYA "refkit/sd/vectors/lora/lora_kohya.safetensors"
#define LDM "refkit/sd/tiny-sd-ldm.safetensors"
#define TINY "refkit/sd/tiny-sd"
#define VAE_Q "vae.decoder.mid_block.attentions.0.to_q"
#define VAE_Q_LDM "first_stage_model.decoder.mid.attn_1.q.weight"

static int run(const char *args, char **out) { return vkl_test_run_cli(NULL, NULL, args, out); }

static void run_ok(const char *args)
{
    char *o;
    int rc = run(args, &o);
    if (rc) fail_msg("vklora %s: exit %d\n%s", args, rc, o);
    free(o);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *x;
    while ((x = readdir(d))) n += strcmp(x->d_name, ".") && strcmp(x->d_name, "..");
    closedir(d);
    return n;
}

/* ---- a LoHa on the VAE's mid-block attention (kept as a 1x1 conv in the original layout) ---- */
static void write_vae_loha(const char *path, const vkl_lora_targets *tg)
{
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 3);
    vkl_lora l;
    memset(&l, 0, sizeof l);
    vkl_err e;
    vkl_lora_module *m = vkl_lora_add_module(&l, &e);
    char k[256];
    assert_int_equal(vkl_lora_kohya_name(VAE_Q, 0, k, sizeof k), 0);
    m->name = strdup(VAE_Q);
    m->kname = strdup(k);
    int ti = vkl_lora_targets_find(tg, VAE_Q);
    assert_true(ti >= 0);
    int64_t C = tg->v[ti].shape[0];
    int64_t sa[2] = {C, 2}, sb[2] = {2, C};
    vkl_lora_role roles[4] = {VKL_LORA_HADA_W1A, VKL_LORA_HADA_W1B, VKL_LORA_HADA_W2A, VKL_LORA_HADA_W2B};
    for (int i = 0; i < 4; i++) {
        float *x = vkl_lora_tensor_alloc(&m->t[roles[i]], 2, i % 2 ? sb : sa, &e);
        vkl_test_fill(&r, x, (size_t)(2 * C), -0.5f, 0.5f);
    }
    if (vkl_lora_module_finish(m, &tg->v[ti], &e) || vkl_lora_save_kohya(&l, path, &e)) fail_msg("%s", e.msg);
    vkl_lora_free(&l);
}

/* ---- the model read back ---- */
static vkl_tensor *up(vkl_ctx *c, const char *name, vkl_dtype dt, int nd, const int64_t *s)
{
    int64_t n;
    void *x = dt == VKL_I32 ? (void *)vkl_test_ref_i32(EXP, name, &n) : (void *)vkl_test_ref_f32(EXP, name, &n);
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, dt, nd, s, &e);
    assert_int_equal(vkl_tensor_upload(c, t, x, dt, &e), 0);
    free(x);
    return t;
}

static void check(vkl_ctx *c, vkl_tensor *t, const char *name, const char *label)
{
    int64_t n;
    float *want = vkl_test_ref_f32(EXP, name, &n);
    float *got = malloc(sizeof(float) * (size_t)n);
    vkl_err e = {{0}};
    assert_int_equal(vkl_tensor_download(c, t, got, VKL_F32, &e), 0);
    char what[512];
    snprintf(what, sizeof what, "%s: %s", label, name);
    vkl_test_assert_scaled(what, got, want, (size_t)n, 1e-4);
    free(want);
    free(got);
}

/* UNet eps at t=500 and text states of a baked model against the LoRA reference at 1.0. */
static void check_outputs(vkl_ctx *c, const char *model, const char *label)
{
    vkl_err e = {{0}};
    vkl_sd_source *src;
    if (vkl_sd_source_open(model, NULL, &src, &e)) fail_msg("%s", e.msg);
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_weights *w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "", VKL_F32, w, &e), 0);
    vkl_unet unet = {&cfg->unet, w, NULL, 0};
    vkl_clip_text te = {&cfg->te[0], w, "text_encoder.", NULL};
    int64_t ss[4] = {2, 4, 16, 16}, cs[3] = {2, 77, 32}, is[2] = {6, 77};
    vkl_tensor *sample = up(c, "sample", VKL_F32, 4, ss), *ctx = up(c, "encoder_hidden_states", VKL_F32, 3, cs);
    vkl_tensor *ids = up(c, "te_input_ids", VKL_I32, 2, is);
    float tv[2] = {500, 500};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){2}, &e);
    assert_int_equal(vkl_tensor_upload(c, t, tv, VKL_F32, &e), 0);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *eps = vkl_unet_forward(g, &unet, sample, t, ctx, NULL);
    vkl_tensor *hs = vkl_clip_text_forward(g, &te, ids, 0, 1, NULL);
    vkl_graph_keep(g, eps);
    vkl_graph_keep(g, hs);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) fail_msg("%s", e.msg);
    check(c, eps, "eps_m1.0_t500", label);
    check(c, hs, "te_last_hidden_state_m1.0", label);
    vkl_graph_free(g);
    vkl_tensor_free(sample);
    vkl_tensor_free(ctx);
    vkl_tensor_free(ids);
    vkl_tensor_free(t);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
}

/* Same names in the same order, shapes and dtypes (dt: every float tensor's
 * dtype in b, or VKL_DTYPE_COUNT for a's); returns how many differ in data. */
static int compare_files(const char *a, const char *b, vkl_dtype dt)
{
    vkl_st_file *x, *y;
    vkl_err e;
    if (vkl_st_open(a, &x, &e) || vkl_st_open(b, &y, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(x), vkl_st_count(y));
    int changed = 0;
    for (int i = 0; i < vkl_st_count(x); i++) {
        const vkl_st_tensor *t = vkl_st_at(x, i), *u = vkl_st_at(y, i);
        assert_string_equal(t->name, u->name);
        assert_int_equal(t->ndim, u->ndim);
        assert_memory_equal(t->shape, u->shape, sizeof(int64_t) * (size_t)t->ndim);
        int fl = t->dtype == VKL_F32 || t->dtype == VKL_F16 || t->dtype == VKL_BF16;
        assert_int_equal(u->dtype, fl && dt != VKL_DTYPE_COUNT ? dt : t->dtype);
        if (u->dtype == t->dtype) changed += memcmp(t->data, u->data, t->nbytes) != 0;
    }
    for (int i = 0; i < vkl_st_meta_count(x); i++) {
        const char *v = vkl_st_meta_get(y, vkl_st_meta_key(x, i));
        assert_non_null(v);
        assert_string_equal(v, vkl_st_meta_value(x, i));
    }
    assert_non_null(vkl_st_meta_get(y, "vklora_baked_adapters"));
    vkl_st_close(x);
    vkl_st_close(y);
    return changed;
}

static void single_file(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(EXP);
    const char *dir = vkl_test_tmpdir();
    char out[1024], args[4096];
    snprintf(out, sizeof out, "%s/baked.safetensors", dir);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s:1.0' -o '%s' --dtype f32", vkl_test_shared_path(LDM),
             vkl_test_shared_path(KOHYA), out);
    run_ok(args);
    /* the LoRA's modules changed, nothing else */
    vkl_lora_targets tg;
    vkl_lora l;
    vkl_err e;
    if (vkl_lora_targets_open(vkl_test_shared_path(LDM), &tg, &e)) fail_msg("%s", e.msg);
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(vkl_test_shared_path(KOHYA), &lo, &l, &e)) fail_msg("%s", e.msg);
    int changed = compare_files(vkl_test_shared_path(LDM), out, VKL_DTYPE_COUNT);
    printf("%d tensors changed for %d adapter modules\n", changed, l.n);
    assert_int_equal(changed, l.n);
    vkl_lora_free(&l);
    vkl_ctx *c = vkl_test_ctx(NULL);
    check_outputs(c, out, "single file baked");

    /* with a LoHa on the VAE's mid attention, as f16: the 1x1-conv form is kept, its values are W + delta */
    char loha[1024], out16[1024];
    snprintf(loha, sizeof loha, "%s/vae_loha.safetensors", dir);
    snprintf(out16, sizeof out16, "%s/baked16.safetensors", dir);
    write_vae_loha(loha, &tg);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' --lora '%s:0.5' -o '%s' --dtype f16",
             vkl_test_shared_path(LDM), vkl_test_shared_path(KOHYA), loha, out16);
    run_ok(args);
    compare_files(vkl_test_shared_path(LDM), out16, VKL_F16);
    vkl_st_file *f, *g;
    assert_int_equal(vkl_st_open(out16, &f, &e), 0);
    assert_int_equal(vkl_st_open(vkl_test_shared_path(LDM), &g, &e), 0);
    const vkl_st_tensor *q = vkl_st_find(f, VAE_Q_LDM), *q0 = vkl_st_find(g, VAE_Q_LDM);
    assert_non_null(q);
    assert_int_equal(q->ndim, 4);
    assert_int_equal(q->shape[2], 1);
    assert_int_equal(q->shape[3], 1);
    vkl_lora vl;
    lo.targets = &tg;
    if (vkl_lora_load(loha, &lo, &vl, &e)) fail_msg("%s", e.msg);
    size_t n = (size_t)q->nelem;
    float *got = malloc(sizeof(float) * n), *base = malloc(sizeof(float) * n), *want = malloc(sizeof(float) * n);
    double *d = malloc(sizeof(double) * n);
    assert_int_equal(vkl_st_read(f, q, VKL_F32, got, &e), 0);
    assert_int_equal(vkl_st_read(g, q0, VKL_F32, base, &e), 0);
    assert_int_equal(vkl_lora_delta(&vl.m[0], NULL, d, &e), 0);
    for (size_t i = 0; i < n; i++) want[i] = (float)(base[i] + 0.5 * d[i]);
    vkl_test_assert_close("VAE mid-attention q baked as f16", got, want, n, 1e-3f, 1e-3f);
    assert_true(vkl_test_max_abs_diff(base, want, n) > 1e-2f);
    free(got);
    free(base);
    free(want);
    free(d);
    vkl_lora_free(&vl);
    vkl_st_close(f);
    vkl_st_close(g);
    vkl_lora_targets_free(&tg);
    vkl_test_ctx_done(c);
    vkl_test_rmtree(dir);
}

static void diffusers_folder(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(EXP);
    const char *dir = vkl_test_tmpdir();
    char out[1024], args[4096], p[1200];
    snprintf(out, sizeof out, "%s/baked", dir);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' -o '%s'", vkl_test_shared_path(TINY),
             vkl_test_shared_path(KOHYA), out);
    run_ok(args);
    const char *files[] = {"model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                           "scheduler/scheduler_config.json", "tokenizer/vocab.json"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(p, sizeof p, "%s/%s", out, files[i]);
        if (!exists(p)) fail_msg("%s was not copied", p);
    }
    char a[1200];
    snprintf(a, sizeof a, "%s/vae/diffusion_pytorch_model.safetensors", vkl_test_shared_path(TINY));
    snprintf(p, sizeof p, "%s/vae/diffusion_pytorch_model.safetensors", out);
    assert_int_equal(compare_files(a, p, VKL_DTYPE_COUNT), 0); /* the LoRA has no VAE module */
    snprintf(a, sizeof a, "%s/unet/diffusion_pytorch_model.safetensors", vkl_test_shared_path(TINY));
    snprintf(p, sizeof p, "%s/unet/diffusion_pytorch_model.safetensors", out);
    assert_true(compare_files(a, p, VKL_DTYPE_COUNT) > 0);
    /* an existing folder is kept unless --force */
    char *o;
    assert_int_equal(run(args, &o), 1);
    assert_non_null(strstr(o, "exists"));
    free(o);
    /* the diffusers files hold f16: --dtype f32 keeps the baked weights exact */
    snprintf(args + strlen(args), sizeof args - strlen(args), " --force --dtype f32");
    run_ok(args);
    vkl_ctx *c = vkl_test_ctx(NULL);
    check_outputs(c, out, "diffusers folder baked as f32");
    vkl_test_ctx_done(c);
    assert_int_equal(entries(dir), 1);
    vkl_test_rmtree(dir);
}

static void bad_input(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LDM);
    const char *dir = vkl_test_tmpdir();
    char bad[1024], out[1024], args[4096];
    /* an adapter made for a wider model */
    snprintf(bad, sizeof bad, "%s/other.safetensors", dir);
    float down[4 * 64] = {0}, upw[64 * 4] = {0};
    int64_t ds[2] = {4, 64}, us[2] = {64, 4};
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e;
    const char *k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    char key[256];
    snprintf(key, sizeof key, "%s.lora_down.weight", k);
    assert_int_equal(vkl_st_writer_add(w, key, VKL_F32, 2, ds, down, &e), 0);
    snprintf(key, sizeof key, "%s.lora_up.weight", k);
    assert_int_equal(vkl_st_writer_add(w, key, VKL_F32, 2, us, upw, &e), 0);
    assert_int_equal(vkl_st_writer_finish(w, bad, &e), 0);
    vkl_st_writer_free(w);
    snprintf(out, sizeof out, "%s/out.safetensors", dir);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' -o '%s'", vkl_test_shared_path(LDM), bad, out);
    char *o;
    assert_int_equal(run(args, &o), 1);
    printf("another model's adapter: %s", o);
    assert_non_null(strstr(o, "to_q"));
    free(o);
    assert_false(exists(out));
    /* the same for a folder output */
    snprintf(out, sizeof out, "%s/outdir", dir);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' -o '%s'", vkl_test_shared_path(TINY), bad, out);
    assert_int_equal(run(args, &o), 1);
    free(o);
    assert_int_equal(entries(dir), 1); /* only the bad adapter: no output, no temporary */
    /* the model as its own output, options of the other mode, a bad dtype */
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' -o '%s'", vkl_test_shared_path(LDM),
             vkl_test_shared_path(KOHYA), vkl_test_shared_path(LDM));
    assert_int_equal(run(args, &o), 1);
    assert_non_null(strstr(o, "replace the model"));
    free(o);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' -o %s/x.safetensors --rank 2",
             vkl_test_shared_path(LDM), vkl_test_shared_path(KOHYA), dir);
    assert_int_equal(run(args, NULL), 2);
    snprintf(args, sizeof args, "merge --model '%s' --lora '%s' -o %s/x.safetensors --dtype bf8",
             vkl_test_shared_path(LDM), vkl_test_shared_path(KOHYA), dir);
    assert_int_equal(run(args, NULL), 2);
    assert_int_equal(entries(dir), 1);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(single_file), cmocka_unit_test(diffusers_folder),
                                       cmocka_unit_test(bad_input)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
