/* Adapter files against the reference kit: the same random LoRA in kohya
 * (fp32, fp16), diffusers and PEFT layouts on the tiny SD model, every target
 * of lora_targets.json, the LLaMA PEFT adapters of refkit/lm, and doctored
 * files for the errors. */
#include "vkl_test.h"
#include "io/text.h"

#include "lora/lora_delta.h"
#include "lora/lora_file.h"
#include "sd/sd_source.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define LORA_DIR "refkit/sd/vectors/lora/"

static void sd_targets(vkl_lora_targets *t)
{
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    vkl_sd_source *s;
    vkl_err e;
    if (vkl_sd_source_open(vkl_test_shared_path("refkit/sd/tiny-sd"), NULL, &s, &e)) fail_msg("%s", e.msg);
    if (vkl_lora_targets_from_sd(vkl_sd_source_config(s), t, &e)) fail_msg("%s", e.msg);
    vkl_sd_source_close(s);
}

static void load(const char *rel, const vkl_lora_targets *t, vkl_lora *l)
{
    VKL_REQUIRE_SHARED(rel);
    vkl_lora_opts o = {.targets = t};
    vkl_err e;
    if (vkl_lora_load(vkl_test_shared_path(rel), &o, l, &e)) fail_msg("%s: %s", rel, e.msg);
}

static double *delta(const vkl_lora_module *m)
{
    double *d = malloc(vkl_lora_wnelem(m) * sizeof *d);
    vkl_err e;
    if (vkl_lora_delta(m, NULL, d, &e)) fail_msg("%s", e.msg);
    return d;
}

/* Every layout of the kit's LoRA gives the same modules and delta W:
 * kohya's 0.5 * up @ down against the others' up with 0.5 folded in. */
static void test_sd_formats_agree(void **state)
{
    (void)state;
    vkl_lora_targets t;
    sd_targets(&t);
    static const char *files[] = {"lora_kohya.safetensors", "lora_kohya_fp16.safetensors",
                                  "lora_diffusers.safetensors", "lora_peft.safetensors"};
    static const vkl_lora_format fmts[] = {VKL_LORA_FMT_KOHYA, VKL_LORA_FMT_KOHYA, VKL_LORA_FMT_DIFFUSERS,
                                           VKL_LORA_FMT_PEFT};
    vkl_lora l[4];
    char rel[256];
    for (int i = 0; i < 4; i++) {
        snprintf(rel, sizeof rel, LORA_DIR "%s", files[i]);
        load(rel, &t, &l[i]);
        assert_int_equal(l[i].n, 159);
        assert_int_equal(l[i].n_unmatched, 0);
        assert_int_equal(l[i].format, fmts[i]);
    }
    assert_string_equal(vkl_lora_meta_get(&l[0], "ss_network_dim"), "4");
    double worst = 0;
    for (int k = 0; k < l[0].n; k++) {
        const vkl_lora_module *a = &l[0].m[k];
        assert_float_equal(a->scale, 0.5, 0);
        double *da = delta(a);
        uint64_t n = vkl_lora_wnelem(a);
        double amax = 0;
        for (uint64_t x = 0; x < n; x++) amax = fmax(amax, fabs(da[x]));
        for (int i = 1; i < 4; i++) {
            const vkl_lora_module *b = vkl_lora_find(&l[i], a->name);
            if (!b) fail_msg("%s lacks %s", files[i], a->name);
            assert_string_equal(b->kname, a->kname);
            assert_int_equal(b->wndim, a->wndim);
            assert_memory_equal(b->wshape, a->wshape, sizeof a->wshape);
            assert_float_equal(b->scale, i == 1 ? 0.5 : 1.0, 0);
            double *db = delta(b);
            for (uint64_t x = 0; x < n; x++) worst = fmax(worst, fabs(da[x] - db[x]) / amax);
            free(db);
        }
        free(da);
    }
    printf("max relative delta W difference between the four files: %.3g\n", worst);
    assert_true(worst <= 1e-6);
    for (int i = 0; i < 4; i++) vkl_lora_free(&l[i]);
    vkl_lora_targets_free(&t);
}

static const cJSON *get(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    if (!v) fail_msg("lora_targets.json entry lacks %s", k);
    return v;
}

static void test_sd_targets_json(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LORA_DIR "lora_targets.json");
    vkl_lora_targets t;
    sd_targets(&t);
    vkl_lora l;
    load(LORA_DIR "lora_kohya.safetensors", &t, &l);
    char *text;
    vkl_err e;
    if (vkl_read_text_file(vkl_test_shared_path(LORA_DIR "lora_targets.json"), 1 << 22, &text, NULL, &e))
        fail_msg("%s", e.msg);
    cJSON *j = cJSON_Parse(text);
    free(text);
    assert_non_null(j);
    assert_int_equal(cJSON_GetArraySize(j), 159);
    const cJSON *x;
    int convs = 0;
    cJSON_ArrayForEach(x, j)
    {
        char name[512];
        const char *root = get(x, "root")->valuestring;
        snprintf(name, sizeof name, "%s.%s", strcmp(root, "te") ? root : "text_encoder", get(x, "path")->valuestring);
        const vkl_lora_module *m = vkl_lora_find(&l, name);
        if (!m) fail_msg("module %s of lora_targets.json not loaded", name);
        assert_string_equal(m->kname, get(x, "kohya")->valuestring);
        assert_int_equal(m->kind, VKL_LORA_KIND_LORA);
        assert_int_equal(m->rank, get(x, "rank")->valueint);
        assert_float_equal(m->alpha, get(x, "alpha")->valuedouble, 0);
        assert_int_equal(m->wshape[0], get(x, "out_f")->valueint);
        assert_int_equal(m->wshape[1], get(x, "in_f")->valueint);
        assert_int_equal(m->t[VKL_LORA_DOWN].shape[1], get(x, "in_f")->valueint);
        assert_int_equal(m->t[VKL_LORA_UP].shape[0], get(x, "out_f")->valueint);
        if (!strcmp(get(x, "kind")->valuestring, "conv")) {
            convs++;
            const cJSON *k = get(x, "kernel"), *s = get(x, "stride"), *p = get(x, "padding");
            assert_int_equal(m->wndim, 4);
            assert_int_equal(m->t[VKL_LORA_DOWN].ndim, 4);
            assert_int_equal(m->wshape[2], cJSON_GetArrayItem(k, 0)->valueint);
            assert_int_equal(m->wshape[3], cJSON_GetArrayItem(k, 1)->valueint);
            assert_int_equal(m->t[VKL_LORA_DOWN].shape[2], cJSON_GetArrayItem(k, 0)->valueint);
            assert_int_equal(m->stride, cJSON_GetArrayItem(s, 0)->valueint);
            assert_int_equal(m->padding, cJSON_GetArrayItem(p, 0)->valueint);
        } else {
            assert_int_equal(m->wndim, 2);
            assert_int_equal(m->t[VKL_LORA_DOWN].ndim, 2);
        }
    }
    assert_int_equal(convs, 30);
    cJSON_Delete(j);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&t);
}

/* ---- doctored files ---- */

typedef void (*doctor_fn)(const vkl_st_tensor *t, char *name, int *ndim, int64_t *shape, int *skip);

/* Copies src (under the shared folder) to dst with each tensor passed through fix. */
static void doctor(const char *src, const char *dst, doctor_fn fix, const char *extra, int extra_rows)
{
    vkl_st_file *f;
    vkl_err e;
    if (vkl_st_open(vkl_test_shared_path(src), &f, &e)) fail_msg("%s", e.msg);
    vkl_st_writer *w = vkl_st_writer_new();
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        char name[512];
        int ndim = t->ndim, skip = 0;
        int64_t shape[8];
        snprintf(name, sizeof name, "%s", t->name);
        memcpy(shape, t->shape, sizeof shape);
        if (fix) fix(t, name, &ndim, shape, &skip);
        if (skip) continue;
        uint64_t n = 1;
        for (int k = 0; k < ndim; k++) n *= (uint64_t)shape[k];
        float *d = calloc(n > t->nelem ? n : t->nelem, sizeof *d);
        if (vkl_st_read(f, t, VKL_F32, d, &e)) fail_msg("%s", e.msg);
        if (vkl_st_writer_add(w, name, VKL_F32, ndim, shape, d, &e)) fail_msg("%s", e.msg);
        free(d);
    }
    if (extra) {
        char k[512];
        float d[4 * 2048] = {0};
        int64_t sd[2] = {4, extra_rows}, su[2] = {32, 4};
        snprintf(k, sizeof k, "%s.lora_down.weight", extra);
        if (vkl_st_writer_add(w, k, VKL_F32, 2, sd, d, &e)) fail_msg("%s", e.msg);
        snprintf(k, sizeof k, "%s.lora_up.weight", extra);
        if (vkl_st_writer_add(w, k, VKL_F32, 2, su, d, &e)) fail_msg("%s", e.msg);
    }
    if (vkl_st_writer_finish(w, dst, &e)) fail_msg("%s", e.msg);
    vkl_st_writer_free(w);
    vkl_st_close(f);
}

static void expect_error(const char *path, const vkl_lora_targets *t, const char *const *frags)
{
    vkl_lora l;
    vkl_lora_opts o = {.targets = t};
    vkl_err e;
    if (vkl_lora_load(path, &o, &l, &e) == 0) fail_msg("%s loaded but should not", path);
    printf("expected error: %s\n", e.msg);
    for (; *frags; frags++)
        if (!strstr(e.msg, *frags)) fail_msg("error lacks \"%s\": %s", *frags, e.msg);
}

static void grow_up(const vkl_st_tensor *t, char *name, int *ndim, int64_t *shape, int *skip)
{
    (void)ndim, (void)skip;
    if (!strcmp(t->name, "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight"))
        shape[0] = 65, (void)name;
}

static void drop_up(const vkl_st_tensor *t, char *name, int *ndim, int64_t *shape, int *skip)
{
    (void)name, (void)ndim, (void)shape;
    *skip = !strcmp(t->name, "lora_te_text_model_encoder_layers_1_mlp_fc2.lora_up.weight");
}

static void rename_odd(const vkl_st_tensor *t, char *name, int *ndim, int64_t *shape, int *skip)
{
    (void)ndim, (void)shape, (void)skip;
    if (!strcmp(t->name, "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha"))
        snprintf(name, 512, "lora_te_text_model_encoder_layers_0_mlp_fc1.scale_factor");
}

static void test_errors(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LORA_DIR "lora_kohya.safetensors");
    vkl_lora_targets t;
    sd_targets(&t);
    const char *dir = vkl_test_tmpdir();
    char p[512];

    snprintf(p, sizeof p, "%s/xl.safetensors", dir);
    doctor(LORA_DIR "lora_kohya.safetensors", p, NULL, "lora_te2_text_model_encoder_layers_0_self_attn_q_proj", 32);
    expect_error(p, &t, (const char *[]){"1 module", "SDXL", "lora_te2_text_model_encoder_layers_0_self_attn_q_proj", NULL});
    /* the same file loads when unmatched modules are allowed, with the count kept */
    vkl_lora l;
    vkl_lora_opts o = {.targets = &t, .allow_unmatched = 1};
    vkl_err e;
    vkl_log_set_level(VKL_LOG_ERROR);
    if (vkl_lora_load(p, &o, &l, &e)) fail_msg("%s", e.msg);
    vkl_log_set_level(VKL_LOG_INFO);
    assert_int_equal(l.n, 159);
    assert_int_equal(l.n_unmatched, 1);
    vkl_lora_free(&l);

    snprintf(p, sizeof p, "%s/ctx.safetensors", dir);
    doctor(LORA_DIR "lora_kohya.safetensors", p, NULL,
           "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k_extra", 2048);
    expect_error(p, &t, (const char *[]){"1 module", NULL});

    snprintf(p, sizeof p, "%s/shape.safetensors", dir);
    doctor(LORA_DIR "lora_kohya.safetensors", p, grow_up, NULL, 0);
    expect_error(p, &t, (const char *[]){"lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k",
                                        "[65,32]", "model's unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_k",
                                        "[64,32]", NULL});

    snprintf(p, sizeof p, "%s/incomplete.safetensors", dir);
    doctor(LORA_DIR "lora_kohya.safetensors", p, drop_up, NULL, 0);
    expect_error(p, &t, (const char *[]){"lora_te_text_model_encoder_layers_1_mlp_fc2", "up missing", NULL});

    snprintf(p, sizeof p, "%s/odd.safetensors", dir);
    doctor(LORA_DIR "lora_kohya.safetensors", p, rename_odd, NULL, 0);
    expect_error(p, &t, (const char *[]){"1 key", "scale_factor", NULL});

    vkl_test_rmtree(dir);
    vkl_lora_targets_free(&t);
}

/* Older kohya files name UNet modules by the original LDM numbering. */
static const vkl_lora_targets *g_ldm_targets; /* set by the test for the doctor callback below */
static void to_ldm(const vkl_st_tensor *t, char *name, int *ndim, int64_t *shape, int *skip)
{
    (void)ndim, (void)shape, (void)skip;
    const char *dot = strchr(t->name, '.');
    char k[512];
    snprintf(k, sizeof k, "%.*s", (int)(dot - t->name), t->name);
    int i = vkl_lora_targets_find_kohya(g_ldm_targets, k);
    if (i >= 0 && g_ldm_targets->v[i].ldm) snprintf(name, 512, "%s%s", g_ldm_targets->v[i].ldm, dot);
}

static void test_ldm_names(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LORA_DIR "lora_kohya.safetensors");
    vkl_lora_targets t;
    sd_targets(&t);
    g_ldm_targets = &t;
    assert_true(vkl_lora_targets_find_kohya(&t, "lora_unet_input_blocks_1_1_proj_in") >= 0);
    assert_string_equal(t.v[vkl_lora_targets_find_kohya(&t, "lora_unet_input_blocks_1_1_proj_in")].name,
                        "unet.down_blocks.0.attentions.0.proj_in");
    const char *dir = vkl_test_tmpdir();
    char p[512];
    snprintf(p, sizeof p, "%s/ldm.safetensors", dir);
    doctor(LORA_DIR "lora_kohya.safetensors", p, to_ldm, NULL, 0);
    vkl_lora a, b;
    vkl_lora_opts o = {.targets = &t};
    vkl_err e;
    if (vkl_lora_load(p, &o, &a, &e)) fail_msg("%s", e.msg);
    load(LORA_DIR "lora_kohya.safetensors", &t, &b);
    assert_int_equal(a.n, 159);
    int renamed = 0;
    for (int i = 0; i < a.n; i++) {
        const vkl_lora_module *y = vkl_lora_find(&b, a.m[i].name);
        assert_non_null(y);
        renamed += strcmp(a.m[i].source, y->source) != 0;
        assert_memory_equal(a.m[i].t[VKL_LORA_DOWN].data, y->t[VKL_LORA_DOWN].data,
                            vkl_lora_tensor_nelem(&y->t[VKL_LORA_DOWN]) * sizeof(float));
    }
    printf("%d of 159 modules read under LDM names\n", renamed);
    assert_int_equal(renamed, 141);
    vkl_lora_free(&a);
    vkl_lora_free(&b);
    vkl_test_rmtree(dir);
    vkl_lora_targets_free(&t);
}

/* ---- LLaMA PEFT adapters ---- */

static void llama_targets(vkl_lora_targets *t)
{
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama/model.safetensors");
    vkl_err e;
    if (vkl_lora_targets_open(vkl_test_shared_path("refkit/lm/tiny-llama/model.safetensors"), t, &e))
        fail_msg("%s", e.msg);
    assert_string_equal(t->model_kind, "LLM");
}

static void test_llama_adapters(void **state)
{
    (void)state;
    vkl_lora_targets t;
    llama_targets(&t);
    static const struct {
        const char *dir;
        int n, r;
        double alpha, scale;
        vkl_lora_kind kind;
    } want[] = {
        {"tiny-llama-lora", 21, 8, 16, 2.0, VKL_LORA_KIND_LORA},
        {"tiny-llama-lora-rslora", 21, 8, 16, 16 / sqrt(8), VKL_LORA_KIND_LORA},
        {"tiny-llama-lora-qv-r4", 6, 4, 8, 2.0, VKL_LORA_KIND_LORA},
        {"tiny-llama-lora-cat", 21, 12, 12, 1.0, VKL_LORA_KIND_LORA},
        {"tiny-llama-dora", 21, 8, 16, 2.0, VKL_LORA_KIND_DORA},
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        char rel[256];
        snprintf(rel, sizeof rel, "refkit/lm/%s/adapter_model.safetensors", want[i].dir);
        vkl_lora l;
        load(rel, &t, &l);
        assert_int_equal(l.format, VKL_LORA_FMT_PEFT);
        assert_true(l.has_config);
        assert_int_equal(l.n, want[i].n);
        for (int k = 0; k < l.n; k++) {
            const vkl_lora_module *m = &l.m[k];
            assert_int_equal(strncmp(m->name, "model.layers.", 13), 0);
            assert_int_equal(m->rank, want[i].r);
            assert_float_equal(m->alpha, want[i].alpha, 0);
            assert_float_equal(m->scale, want[i].scale, 1e-12);
            assert_int_equal(m->kind, want[i].kind);
            if (m->kind == VKL_LORA_KIND_DORA) assert_int_equal(m->t[VKL_LORA_MAG].shape[0], m->wshape[0]);
        }
        assert_non_null(vkl_lora_find(&l, "model.layers.2.self_attn.v_proj"));
        if (want[i].n == 6) assert_null(vkl_lora_find(&l, "model.layers.0.self_attn.k_proj"));
        const vkl_lora_module *kp = vkl_lora_find(&l, "model.layers.0.mlp.down_proj");
        if (kp) assert_int_equal(kp->wshape[1], 172);
        vkl_lora_free(&l);
    }
    /* s * B A of layer 0 q_proj, as PEFT computed it */
    vkl_lora l;
    load("refkit/lm/tiny-llama-lora/adapter_model.safetensors", &t, &l);
    int64_t n;
    float *want_d = vkl_test_ref_f32("refkit/lm/vectors/lora_logits.safetensors", "layer0_q_proj_delta_weight", &n);
    const vkl_lora_module *m = vkl_lora_find(&l, "model.layers.0.self_attn.q_proj");
    assert_non_null(m);
    assert_int_equal((int64_t)vkl_lora_wnelem(m), n);
    double *d = delta(m);
    float *df = malloc((size_t)n * sizeof *df);
    for (int64_t i = 0; i < n; i++) df[i] = (float)d[i];
    vkl_test_assert_scaled("layer0 q_proj delta W", df, want_d, (size_t)n, 1e-6);
    free(d);
    free(df);
    free(want_d);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&t);
}

/* An adapter for a language model on an SD model: unmatched, guessed as such. */
static void test_llm_on_sd(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/lm/tiny-llama-lora/adapter_model.safetensors");
    vkl_lora_targets t;
    sd_targets(&t);
    expect_error(vkl_test_shared_path("refkit/lm/tiny-llama-lora/adapter_model.safetensors"), &t,
                 (const char *[]){"21 modules", "language-model", "model.layers.", NULL});
    vkl_lora_targets_free(&t);
}

/* Without targets kohya modules keep their kohya name; PEFT ones their path. */
static void test_no_targets(void **state)
{
    (void)state;
    vkl_lora a, b;
    load(LORA_DIR "lora_kohya.safetensors", NULL, &a);
    load(LORA_DIR "lora_peft.safetensors", NULL, &b);
    assert_int_equal(a.n, 159);
    assert_int_equal(b.n, 159);
    for (int i = 0; i < b.n; i++) {
        assert_non_null(b.m[i].name);
        const vkl_lora_module *k = vkl_lora_find(&a, b.m[i].kname);
        if (!k) fail_msg("no kohya module %s", b.m[i].kname);
        assert_null(k->name);
    }
    vkl_lora_free(&a);
    vkl_lora_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sd_formats_agree), cmocka_unit_test(test_sd_targets_json),
        cmocka_unit_test(test_errors),           cmocka_unit_test(test_ldm_names),
        cmocka_unit_test(test_llama_adapters),   cmocka_unit_test(test_llm_on_sd),
        cmocka_unit_test(test_no_targets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
