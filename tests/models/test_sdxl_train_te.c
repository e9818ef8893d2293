/* SDXL training with both text encoders in the graph (--train-te): adapters
 * on q/k/v/out_proj and fc1/fc2 of text_encoder (the layers before the
 * penultimate one the UNet reads) and of every text_encoder_2 layer (the
 * pooled embedding reads its last). With the encoders' adapters at zero the
 * step reproduces the reference kit's loss and UNet adapter gradients from
 * token ids alone (refkit/sdxl/vectors/train_lora.safetensors: input_ids,
 * input_ids_2), so the context and the pooled embedding built in the graph
 * are the kit's; the encoders' gradients are nonzero and, with random
 * adapters, match a central difference of the loss along them. */
#include "lora_fixture.h"
#include "sdxl_kit_fixture.h"

typedef struct {
    sdxl_kit k;
    int nte[2];
} fixture;

/* which encoder (0, 1) a module trains in, or -1 */
static int te_target(const vkl_sd_config *cfg, const char *name)
{
    int k = !strncmp(name, "text_encoder.", 13) ? 0 : !strncmp(name, "text_encoder_2.", 15) ? 1 : -1;
    if (k < 0 || !(strstr(name, "_proj") || strstr(name, ".mlp.fc1") || strstr(name, ".mlp.fc2"))) return -1;
    if (strstr(name, "text_projection")) return -1;
    const char *l = strstr(name, ".layers.");
    int layer = l ? atoi(l + 8) : -1;
    return layer >= 0 && (k == 1 || layer < cfg->te[0].layers - 1) ? k : -1;
}

static void setup(fixture *f, int random_up)
{
    memset(f, 0, sizeof *f);
    vkl_lora_targets tg;
    sdxl_kit_open(&f->k, &tg);
    const vkl_sd_config *cfg = f->k.cfg;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 31);
    for (int i = 0; i < tg.n; i++) {
        const vkl_lora_target *t = &tg.v[i];
        int k = te_target(cfg, t->name);
        if (k < 0 || t->ndim != 2) continue;
        vkl_test_add_random_lora(&f->k.lora, t, &r, random_up ? 0.1f : 0);
        f->nte[k]++;
    }
    vkl_lora_targets_free(&tg);
    assert_int_equal(f->nte[0], 6 * (cfg->te[0].layers - 1));
    assert_int_equal(f->nte[1], 6 * cfg->te[1].layers);
    sdxl_kit_build(&f->k, 1);
}

static vkl_sd_train_step *new_step(fixture *f)
{
    vkl_err e = {{0}};
    vkl_sd_train_opts o = {1, NULL, NULL, 1.0f, &f->k.te, 0, 0, NULL, NULL, NULL, 0, &f->k.te2};
    vkl_sd_train_step *s = NULL;
    if (vkl_sd_train_step_new_ex(f->k.c, &f->k.unet, &shape, &o, &s, &e)) fail_msg("%s", e.msg);
    return s;
}

static float run_loss(fixture *f, vkl_sd_train_step *s)
{
    return sdxl_kit_loss(&f->k, s);
}

/* -1: a UNet parameter; 0 / 1: the first / second encoder's */
static int encoder_of(const vkl_sd_train_step *s, int i)
{
    const char *n = vkl_sd_train_step_param_name(s, i);
    return !strncmp(n, "text_encoder_2.", 15) ? 1 : !strncmp(n, "text_encoder.", 13) ? 0 : -1;
}

static float *download(fixture *f, vkl_tensor *t)
{
    return vkl_test_download(f->k.c, t);
}

static void zero_te_adapters_give_the_kit_step(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, 0);
    vkl_sd_train_step *s = new_step(&f);
    float loss = run_loss(&f, s);
    int64_t n;
    float *want = vkl_test_ref_f32(VEC, "loss", &n);
    vkl_test_assert_scaled("loss, encoders in the graph", &loss, want, 1, 1e-4);
    free(want);
    double worst = 0;
    int moved[2] = {0, 0}, unet = 0;
    for (int i = 0; i < vkl_sd_train_step_param_count(s); i++) {
        int k = encoder_of(s, i);
        float *g = download(&f, vkl_sd_train_step_grad(s, i));
        int64_t ng = vkl_tensor_nelem(vkl_sd_train_step_grad(s, i));
        if (k >= 0) {
            /* an up matrix at zero: its gradient is what training moves */
            double mx = 0;
            for (int64_t j = 0; j < ng; j++) mx = fmax(mx, fabs(g[j]));
            const char *name = vkl_sd_train_step_param_name(s, i);
            if (strstr(name, ".up")) moved[k] += mx > 0;
        } else {
            const vkl_lora_module *m = vkl_lora_find(&f.k.lora, vkl_lora_set_at(f.k.set, i / 2)->module);
            char name[512];
            snprintf(name, sizeof name, "grad.%s.%s", m->source, i % 2 ? "lora_up.weight" : "lora_down.weight");
            float *w = vkl_test_ref_f32(VEC, name, &n);
            assert_int_equal(n, ng);
            double num = 0, den = 0, maxd = 0, scale = 0;
            for (int64_t j = 0; j < n; j++) {
                double d = (double)g[j] - w[j];
                num += d * d;
                den += (double)w[j] * w[j];
                maxd = fmax(maxd, fabs(d));
                scale = fmax(scale, fabs(w[j]));
            }
            double rel = sqrt(num / den);
            if (rel > 1e-4 || maxd > 1e-4 * scale) fail_msg("%s: relative L2 %.3g, max abs diff %.3g", name, rel, maxd);
            worst = fmax(worst, rel);
            unet++;
            free(w);
        }
        free(g);
    }
    print_message("%d UNet gradients, worst relative L2 error %.3g; up gradients nonzero in %d + %d encoder "
                  "modules\n", unet, worst, moved[0], moved[1]);
    assert_int_equal(unet, 2 * 136);
    assert_int_equal(moved[0], f.nte[0]);
    assert_int_equal(moved[1], f.nte[1]);
    vkl_sd_train_step_free(s);
    sdxl_kit_close(&f.k);
}

static void te_gradient_matches_difference(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    fixture f;
    setup(&f, 1);
    vkl_err e = {{0}};
    vkl_sd_train_step *s = new_step(&f);
    run_loss(&f, s);
    int np = vkl_sd_train_step_param_count(s);
    float **p0 = calloc((size_t)np, sizeof *p0), **g = calloc((size_t)np, sizeof *g);
    double norm2[2] = {0, 0};
    for (int i = 0; i < np; i++) {
        int k = encoder_of(s, i);
        if (k < 0) continue;
        p0[i] = download(&f, vkl_sd_train_step_param(s, i));
        g[i] = download(&f, vkl_sd_train_step_grad(s, i));
        for (int64_t j = 0; j < vkl_tensor_nelem(vkl_sd_train_step_param(s, i)); j++) norm2[k] += (double)g[i][j] * g[i][j];
    }
    assert_true(norm2[0] > 0 && norm2[1] > 0);
    /* the loss along the normalised encoder gradient u moves at |g| per unit step */
    double gnorm = sqrt(norm2[0] + norm2[1]), h = 0.02, lp = 0, lm = 0;
    for (int side = -1; side <= 1; side += 2) {
        for (int i = 0; i < np; i++) {
            if (!p0[i]) continue;
            int64_t n = vkl_tensor_nelem(vkl_sd_train_step_param(s, i));
            float *q = malloc(sizeof(float) * (size_t)n);
            for (int64_t j = 0; j < n; j++) q[j] = (float)(p0[i][j] + side * h * g[i][j] / gnorm);
            assert_int_equal(vkl_tensor_upload(f.k.c, vkl_sd_train_step_param(s, i), q, VKL_F32, &e), 0);
            free(q);
        }
        *(side < 0 ? &lm : &lp) = run_loss(&f, s);
    }
    double slope = (lp - lm) / (2 * h);
    print_message("encoder gradient norm %.6g (first %.4g, second %.4g), central difference along it %.6g\n", gnorm,
                  sqrt(norm2[0]), sqrt(norm2[1]), slope);
    assert_true(fabs(slope - gnorm) <= 0.03 * gnorm);
    for (int i = 0; i < np; i++) {
        free(p0[i]);
        free(g[i]);
    }
    free(p0);
    free(g);
    vkl_sd_train_step_free(s);
    sdxl_kit_close(&f.k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(zero_te_adapters_give_the_kit_step),
        cmocka_unit_test(te_gradient_matches_difference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
