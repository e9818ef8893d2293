/* DyLoRA files (lora/lora_dylora.h): cutting to rank r keeps the first r
 * rank rows with alpha, so delta W is alpha / r * sum_{k<r} up[:,k] down[k]
 * (computed here from the factors, for a linear and a 3x3 convolution
 * module, and through a PEFT file for the PEFT rule lora_alpha / r and
 * rsLoRA's lora_alpha / sqrt(r)); the unit comes from kohya's metadata; wrong
 * ranks and kinds without rank rows are refused by name. The training draw:
 * ranks are multiples of the unit, uniform over the blocks, one per step for
 * every module, and the forward scale is alpha / b on the first b rows. */
#include "vkl_test.h"
#include "lora/lora_delta.h"
#include "lora/lora_dylora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define D 8
#define LIN "model.layers.0.self_attn.q_proj"
#define CONV "unet.down_blocks.0.resnets.0.conv1"

static vkl_test_rng rng;

static vkl_lora_module *add(vkl_lora *l, const char *name, float alpha, int64_t out, int64_t in, int k)
{
    vkl_err e = {{0}};
    vkl_lora_module *m = vkl_lora_add_module(l, &e);
    assert_non_null(m);
    char kn[256];
    assert_int_equal(vkl_lora_kohya_name(name, 0, kn, sizeof kn), 0);
    m->name = strdup(name);
    m->kname = strdup(kn);
    m->alpha = alpha;
    m->has_alpha = 1;
    int64_t ds[4] = {D, in, k, k}, us[4] = {out, D, 1, 1};
    float *a = vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], k > 1 ? 4 : 2, ds, &e);
    float *b = vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], k > 1 ? 4 : 2, us, &e);
    assert_non_null(a);
    assert_non_null(b);
    vkl_test_fill(&rng, a, (size_t)vkl_lora_tensor_nelem(&m->t[VKL_LORA_DOWN]), -1, 1);
    vkl_test_fill(&rng, b, (size_t)vkl_lora_tensor_nelem(&m->t[VKL_LORA_UP]), -1, 1);
    assert_int_equal(vkl_lora_module_finish(m, NULL, &e), 0);
    return m;
}

/* A linear [6 x 5] and a 3x3 convolution [4 x 2 x 3 x 3] module of rank D. */
static void build(vkl_lora *l, int unit)
{
    memset(l, 0, sizeof *l);
    vkl_test_rng_seed(&rng, 31);
    add(l, LIN, 4.0f, 6, 5, 1);
    add(l, CONV, 3.0f, 4, 2, 3);
    vkl_err e = {{0}};
    if (unit) assert_int_equal(vkl_dylora_mark(l, unit, D, 4.0f, &e), 0);
}

/* scale * sum_{k<r} up[o,k] down[k,i] from the uncut factors of `full`. */
static void expect_first_rows(const vkl_lora_module *full, const vkl_lora_module *cut, int r, double scale)
{
    vkl_err e = {{0}};
    int64_t out = full->t[VKL_LORA_UP].shape[0], rest = vkl_lora_tensor_nelem(&full->t[VKL_LORA_DOWN]) / D;
    double *got = malloc(sizeof(double) * (size_t)(out * rest));
    assert_int_equal(vkl_lora_delta(cut, NULL, got, &e), 0);
    double worst = 0;
    for (int64_t o = 0; o < out; o++)
        for (int64_t i = 0; i < rest; i++) {
            double want = 0;
            for (int k = 0; k < r; k++)
                want += (double)full->t[VKL_LORA_UP].data[o * D + k] * full->t[VKL_LORA_DOWN].data[k * rest + i];
            worst = fmax(worst, fabs(got[o * rest + i] - scale * want));
        }
    free(got);
    if (!(worst < 1e-9)) fail_msg("%s cut to %d: max |delta - first rows| %g", full->name, r, worst);
    assert_int_equal(cut->rank, r);
    assert_int_equal(cut->t[VKL_LORA_DOWN].shape[0], r);
    assert_int_equal(cut->t[VKL_LORA_UP].shape[1], r);
}

static void cut_keeps_first_rank_rows(void **state)
{
    (void)state;
    vkl_lora full;
    build(&full, 2);
    for (int r = 2; r <= D; r += 2) {
        vkl_lora l;
        build(&l, 2);
        vkl_err e = {{0}};
        assert_int_equal(vkl_dylora_cut(&l, r, &e), 0);
        for (int i = 0; i < l.n; i++) expect_first_rows(&full.m[i], &l.m[i], r, (double)full.m[i].alpha / r);
        char want[8];
        snprintf(want, sizeof want, "%d", r);
        assert_string_equal(vkl_lora_meta_get(&l, "ss_network_dim"), want);
        vkl_lora_free(&l);
    }
    vkl_lora_free(&full);
}

static void expect_refused(vkl_lora *l, int r, const char *what)
{
    vkl_err e = {{0}};
    assert_int_not_equal(vkl_dylora_cut(l, r, &e), 0);
    if (!strstr(e.msg, what)) fail_msg("cut to %d: '%s' does not say '%s'", r, e.msg, what);
}

static void cut_refuses_what_it_cannot_do(void **state)
{
    (void)state;
    vkl_lora l;
    build(&l, 2);
    expect_refused(&l, 3, "not a multiple of the adapter's DyLoRA unit 2");
    expect_refused(&l, 10, "above the rank 8");
    expect_refused(&l, 0, "at least 1");
    vkl_lora_free(&l);
    /* an ordinary LoRA (no DyLoRA metadata) may be cut at any rank */
    build(&l, 0);
    vkl_err e = {{0}};
    assert_int_equal(vkl_dylora_cut(&l, 3, &e), 0);
    vkl_lora_free(&l);
    /* a LoHa module has no rank rows */
    build(&l, 0);
    vkl_lora_module *m = &l.m[0];
    m->kind = VKL_LORA_KIND_LOHA;
    expect_refused(&l, 2, LIN " is loha");
    vkl_lora_free(&l);
}

static void unit_from_metadata(void **state)
{
    (void)state;
    vkl_lora l;
    build(&l, 4);
    vkl_err e = {{0}};
    int unit = 0;
    assert_int_equal(vkl_dylora_unit(&l, &unit, &e), 0);
    assert_int_equal(unit, 4);
    assert_string_equal(vkl_lora_meta_get(&l, "ss_network_module"), "networks.dylora");
    assert_int_equal(vkl_lora_meta_set(&l, "ss_network_args", "{\"unit\": \"two\"}", &e), 0);
    assert_int_not_equal(vkl_dylora_unit(&l, &unit, &e), 0);
    assert_non_null(strstr(e.msg, "unit"));
    /* another network's arguments are not DyLoRA's */
    assert_int_equal(vkl_lora_meta_set(&l, "ss_network_module", "networks.lora", &e), 0);
    assert_int_equal(vkl_dylora_unit(&l, &unit, &e), 0);
    assert_int_equal(unit, 1);
    vkl_lora_free(&l);
}

/* A PEFT file (lm train's form): cut, written and read back, it is r = R with
 * lora_alpha kept: scale lora_alpha / R (rsLoRA: / sqrt(R)). */
static void peft_cut(int rslora)
{
    vkl_lora l;
    memset(&l, 0, sizeof l);
    vkl_test_rng_seed(&rng, 32);
    add(&l, LIN, 16.0f, 6, 5, 1);
    add(&l, "model.layers.0.self_attn.v_proj", 16.0f, 6, 5, 1);
    l.rslora = rslora;
    vkl_err e = {{0}};
    assert_int_equal(vkl_dylora_mark(&l, 2, D, 16.0f, &e), 0);
    char dir[4096], st[4200], cfg[4200], st2[4200], cfg2[4200];
    snprintf(dir, sizeof dir, "%s/peft%d", vkl_test_tmpdir(), rslora);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    assert_int_equal(vkl_lora_save_peft(&l, st, cfg, &e), 0);
    vkl_lora full, cut, back;
    assert_int_equal(vkl_lora_load(st, NULL, &full, &e), 0);
    assert_int_equal(vkl_lora_load(st, NULL, &cut, &e), 0);
    assert_int_equal(vkl_dylora_cut(&cut, 4, &e), 0);
    snprintf(dir, sizeof dir, "%s/peft%d-cut", vkl_test_tmpdir(), rslora);
    assert_int_equal(mkdir(dir, 0755), 0);
    snprintf(st2, sizeof st2, "%s/adapter_model.safetensors", dir);
    snprintf(cfg2, sizeof cfg2, "%s/adapter_config.json", dir);
    assert_int_equal(vkl_lora_save_peft(&cut, st2, cfg2, &e), 0);
    assert_int_equal(vkl_lora_load(st2, NULL, &back, &e), 0);
    int unit;
    assert_int_equal(vkl_dylora_unit(&back, &unit, &e), 0);
    assert_int_equal(unit, 2);
    double scale = rslora ? 16.0 / 2.0 : 16.0 / 4.0;
    for (int i = 0; i < back.n; i++) {
        const vkl_lora_module *f = vkl_lora_find(&full, back.m[i].name);
        assert_non_null(f);
        assert_true(fabs(back.m[i].scale - scale) < 1e-9);
        expect_first_rows(f, &back.m[i], 4, scale);
    }
    vkl_lora_free(&l);
    vkl_lora_free(&full);
    vkl_lora_free(&cut);
    vkl_lora_free(&back);
}

static void peft_cut_keeps_lora_alpha(void **state)
{
    (void)state;
    peft_cut(0);
    peft_cut(1);
}

static void draw_is_kohyas_rank_rule(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_lora l;
    memset(&l, 0, sizeof l);
    vkl_test_rng_seed(&rng, 33);
    add(&l, LIN, 4.0f, 6, 5, 1);
    add(&l, "model.layers.0.self_attn.v_proj", 4.0f, 6, 5, 1);
    vkl_err e = {{0}};
    vkl_lora_use use = {&l, 1.0f, 1.0f};
    vkl_lora_set *set = NULL;
    assert_int_equal(vkl_lora_set_build(c, &use, 1, &set, &e), 0);
    vkl_dylora *dy = NULL;
    assert_int_not_equal(vkl_dylora_new(c, set, &l, 3, 1, &dy, &e), 0); /* 8 is not a multiple of 3 */
    assert_int_equal(vkl_dylora_new(c, set, &l, 2, 1, &dy, &e), 0);
    int hist[D + 1] = {0};
    const int N = 400;
    for (int n = 0; n < N; n++) {
        assert_int_equal(vkl_dylora_draw(dy, &e), 0);
        int b = vkl_dylora_rank_of(dy, 0);
        assert_int_equal(vkl_dylora_rank_of(dy, 1), b); /* one rank for every module */
        assert_true(b >= 2 && b <= D && b % 2 == 0);
        hist[b]++;
        if (n < 3) {
            float s[D];
            assert_int_equal(vkl_tensor_download(c, vkl_lora_set_at(set, 1)->rank_scale, s, VKL_F32, &e), 0);
            for (int r = 0; r < D; r++) assert_float_equal(s[r], r < b ? 4.0f / b : 0.0f, 1e-7);
        }
    }
    for (int b = 2; b <= D; b += 2) assert_true(hist[b] > N / 4 - 40 && hist[b] < N / 4 + 40);
    assert_int_equal(vkl_dylora_full(dy, &e), 0);
    float s[D];
    assert_int_equal(vkl_tensor_download(c, vkl_lora_set_at(set, 0)->rank_scale, s, VKL_F32, &e), 0);
    for (int r = 0; r < D; r++) assert_float_equal(s[r], 4.0f / D, 1e-7);
    vkl_dylora_free(dy);
    vkl_lora_set_free(set);
    vkl_lora_free(&l);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cut_keeps_first_rank_rows),
        cmocka_unit_test(cut_refuses_what_it_cannot_do),
        cmocka_unit_test(unit_from_metadata),
        cmocka_unit_test(peft_cut_keeps_lora_alpha),
        cmocka_unit_test(draw_is_kohyas_rank_rule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
