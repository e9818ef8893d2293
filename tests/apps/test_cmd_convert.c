/* `vklora convert` and `vklora merge` end to end: the built binary
 * (VKLORA_BINARY) on the reference kit's adapters; results are read back with
 * the library and compared with the inputs. */
#include "vkl_test.h"

#include "io/safetensors.h"
#include "lora/lora_delta.h"
#include "lora/lora_file.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#define KOHYA "refkit/sd/vectors/lora/lora_kohya.safetensors"
#define KOHYA16 "refkit/sd/vectors/lora/lora_kohya_fp16.safetensors"
#define TINY "refkit/sd/tiny-sd"
#define LM "refkit/lm/"

static int run(const char *args, char **out) { return vkl_test_run_cli(NULL, NULL, args, out); }

static void run_ok(const char *args)
{
    char *o;
    int rc = run(args, &o);
    if (rc) fail_msg("vklora %s: exit %d\n%s", args, rc, o);
    free(o);
}

/* Two files hold the same tensors (names, dtypes, shapes, bytes) and metadata. */
static void assert_same_file(const char *a, const char *b)
{
    vkl_st_file *x, *y;
    vkl_err e;
    if (vkl_st_open(a, &x, &e) || vkl_st_open(b, &y, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(x), vkl_st_count(y));
    for (int i = 0; i < vkl_st_count(x); i++) {
        const vkl_st_tensor *t = vkl_st_at(x, i), *u = vkl_st_find(y, t->name);
        if (!u) fail_msg("%s lacks %s", b, t->name);
        assert_int_equal(t->dtype, u->dtype);
        assert_int_equal(t->ndim, u->ndim);
        assert_memory_equal(t->shape, u->shape, (size_t)t->ndim * sizeof(int64_t));
        assert_int_equal(t->nbytes, u->nbytes);
        if (memcmp(t->data, u->data, t->nbytes)) fail_msg("%s: data differs", t->name);
    }
    for (int i = 0; i < vkl_st_meta_count(x); i++) {
        const char *v = vkl_st_meta_get(y, vkl_st_meta_key(x, i));
        if (!v || strcmp(v, vkl_st_meta_value(x, i))) fail_msg("metadata %s not carried over", vkl_st_meta_key(x, i));
    }
    vkl_st_close(x);
    vkl_st_close(y);
}

static void load(const char *path, const vkl_lora_targets *t, vkl_lora *l)
{
    vkl_lora_opts o = {.targets = t};
    vkl_err e;
    if (vkl_lora_load(path, &o, l, &e)) fail_msg("%s", e.msg);
}

/* max relative difference of delta W between two adapters (matched by kohya
 * name); b's deltas are scaled by wb and a's by wa, c adds wc * c's. */
static double delta_diff(const vkl_lora *got, const vkl_lora *a, double wa, const vkl_lora *c, double wc)
{
    double worst = 0;
    vkl_err e;
    for (int i = 0; i < got->n; i++) {
        const vkl_lora_module *m = &got->m[i], *x = vkl_lora_find(a, m->kname), *y = c ? vkl_lora_find(c, m->kname) : NULL;
        uint64_t n = vkl_lora_wnelem(m);
        double *d = malloc(n * sizeof *d), *dx = calloc(n, sizeof *dx), *dy = calloc(n, sizeof *dy);
        assert_int_equal(vkl_lora_delta(m, NULL, d, &e), 0);
        if (x) assert_int_equal(vkl_lora_delta(x, NULL, dx, &e), 0);
        if (y) assert_int_equal(vkl_lora_delta(y, NULL, dy, &e), 0);
        double mx = 0, md = 0;
        for (uint64_t k = 0; k < n; k++) {
            double want = wa * dx[k] + wc * dy[k];
            mx = fmax(mx, fabs(want));
            md = fmax(md, fabs(d[k] - want));
        }
        worst = fmax(worst, md / mx);
        free(d);
        free(dx);
        free(dy);
    }
    return worst;
}

static void test_kohya_peft_kohya(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(KOHYA);
    VKL_REQUIRE_SHARED(TINY);
    const char *dir = vkl_test_tmpdir();
    static const char *srcs[] = {KOHYA, KOHYA16};
    for (int s = 0; s < 2; s++) {
        char args[4096], peft[512], back[512], src[512];
        snprintf(src, sizeof src, "%s", vkl_test_shared_path(srcs[s]));
        snprintf(peft, sizeof peft, "%s/p%d/adapter_model.safetensors", dir, s);
        snprintf(back, sizeof back, "%s/back%d.safetensors", dir, s);
        snprintf(args, sizeof args, "mkdir -p %s/p%d", dir, s);
        assert_int_equal(system(args), 0);
        snprintf(args, sizeof args, "convert '%s' -o '%s' --to peft --model '%s'", src, peft, vkl_test_shared_path(TINY));
        run_ok(args);
        /* the PEFT copy has the kit's PEFT key names, alpha in its config */
        vkl_lora p, k;
        load(peft, NULL, &p);
        assert_int_equal(p.format, VKL_LORA_FMT_PEFT);
        assert_true(p.has_config);
        assert_int_equal(p.n, 159);
        assert_non_null(vkl_lora_find(&p, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q"));
        for (int i = 0; i < p.n; i++) assert_float_equal(p.m[i].scale, 0.5, 0);
        load(src, NULL, &k);
        assert_true(delta_diff(&p, &k, 1, NULL, 0) == 0);
        vkl_lora_free(&k);
        vkl_lora_free(&p);
        snprintf(args, sizeof args, "convert '%s' -o '%s' --to kohya", peft, back);
        run_ok(args);
        assert_same_file(src, back);
        /* without the model: the kohya names in diffusers' numbering map to the same modules */
        char nomodel[512];
        snprintf(args, sizeof args, "mkdir -p %s/n%d", dir, s);
        assert_int_equal(system(args), 0);
        snprintf(nomodel, sizeof nomodel, "%s/n%d/adapter_model.safetensors", dir, s);
        snprintf(args, sizeof args, "convert '%s' -o '%s' --to peft", src, nomodel);
        run_ok(args);
        assert_same_file(peft, nomodel);
    }
    vkl_test_rmtree(dir);
}

static void test_errors(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(KOHYA);
    const char *dir = vkl_test_tmpdir();
    char args[4096], *o;
    /* kohya names in the original LDM numbering need the model to become module paths */
    char ldm[512];
    snprintf(ldm, sizeof ldm, "%s/ldm.safetensors", dir);
    {
        vkl_st_writer *w = vkl_st_writer_new();
        float down[4 * 32] = {0}, up[32 * 4] = {0}, alpha = 4;
        vkl_err we = {{0}};
        assert_int_equal(vkl_st_writer_add(w, "lora_unet_input_blocks_1_1_proj_in.lora_down.weight", VKL_F32, 2,
                                           (int64_t[]){4, 32}, down, &we), 0);
        assert_int_equal(vkl_st_writer_add(w, "lora_unet_input_blocks_1_1_proj_in.lora_up.weight", VKL_F32, 2,
                                           (int64_t[]){32, 4}, up, &we), 0);
        assert_int_equal(vkl_st_writer_add(w, "lora_unet_input_blocks_1_1_proj_in.alpha", VKL_F32, 0, NULL, &alpha, &we), 0);
        assert_int_equal(vkl_st_writer_finish(w, ldm, &we), 0);
        vkl_st_writer_free(w);
    }
    snprintf(args, sizeof args, "convert '%s' -o %s/x.safetensors --to peft", ldm, dir);
    assert_int_equal(run(args, &o), 1);
    assert_non_null(strstr(o, "--model"));
    assert_non_null(strstr(o, "input_blocks_1_1_proj_in"));
    free(o);
    snprintf(args, sizeof args, "%s/x.safetensors", dir);
    FILE *f = fopen(args, "rb");
    assert_null(f); /* nothing half-written */
    snprintf(args, sizeof args, "convert '%s' -o %s/x.safetensors --to onnx", vkl_test_shared_path(KOHYA), dir);
    assert_int_equal(run(args, NULL), 2);
    /* an LLM adapter against the SD model */
    snprintf(args, sizeof args, "convert '%s' -o %s/x.safetensors --to kohya --model '%s'",
             vkl_test_shared_path(LM "tiny-llama-lora/adapter_model.safetensors"), dir, vkl_test_shared_path(TINY));
    assert_int_equal(run(args, &o), 1);
    assert_non_null(strstr(o, "language-model"));
    free(o);
    vkl_test_rmtree(dir);
}

/* LLaMA PEFT (rsLoRA) -> kohya -> PEFT: the same delta W throughout. */
static void test_llama_round_trip(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM "tiny-llama-lora-rslora/adapter_model.safetensors");
    const char *dir = vkl_test_tmpdir();
    char args[4096], k[512], p[512];
    snprintf(k, sizeof k, "%s/k.safetensors", dir);
    snprintf(p, sizeof p, "%s/p/adapter_model.safetensors", dir);
    snprintf(args, sizeof args, "mkdir -p %s/p", dir);
    assert_int_equal(system(args), 0);
    const char *src = vkl_test_shared_path(LM "tiny-llama-lora-rslora/adapter_model.safetensors");
    snprintf(args, sizeof args, "convert '%s' -o '%s' --to kohya", src, k);
    run_ok(args);
    snprintf(args, sizeof args, "convert '%s' -o '%s' --to peft --model '%s'", k, p,
             vkl_test_shared_path(LM "tiny-llama/model.safetensors"));
    run_ok(args);
    vkl_lora a, b, c;
    load(src, NULL, &a);
    load(k, NULL, &b);
    load(p, NULL, &c);
    assert_int_equal(b.n, 21);
    assert_non_null(vkl_lora_find(&c, "model.layers.1.mlp.gate_proj"));
    double d1 = delta_diff(&b, &a, 1, NULL, 0), d2 = delta_diff(&c, &a, 1, NULL, 0);
    printf("rsLoRA -> kohya: %.3g, -> PEFT: %.3g\n", d1, d2);
    assert_true(d1 < 1e-6 && d2 < 1e-6);
    vkl_lora_free(&a);
    vkl_lora_free(&b);
    vkl_lora_free(&c);
    vkl_test_rmtree(dir);
}

static void test_merge(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM "tiny-llama-lora-qv-r4/adapter_model.safetensors");
    const char *dir = vkl_test_tmpdir();
    const char *a = vkl_test_shared_path(LM "tiny-llama-lora/adapter_model.safetensors");
    const char *b = vkl_test_shared_path(LM "tiny-llama-lora-qv-r4/adapter_model.safetensors");
    char args[4096], out[512], *o;
    snprintf(out, sizeof out, "%s/m.safetensors", dir);
    snprintf(args, sizeof args, "merge --lora '%s:0.7' --lora '%s:0.3' -o '%s'", a, b, out);
    run_ok(args);
    vkl_lora la, lb, m;
    load(a, NULL, &la);
    load(b, NULL, &lb);
    load(out, NULL, &m);
    assert_int_equal(m.n, 21);
    double d = delta_diff(&m, &la, 0.7, &lb, 0.3);
    printf("merge (concatenation): %.3g\n", d);
    assert_true(d < 1e-6);
    vkl_lora_free(&m);
    snprintf(args, sizeof args, "merge --lora '%s:0.7' --lora '%s:0.3' -o '%s' --rank 4", a, b, out);
    assert_int_equal(run(args, &o), 1); /* the output exists */
    assert_non_null(strstr(o, "--force"));
    free(o);
    snprintf(args, sizeof args, "merge --lora '%s:0.7' --lora '%s:0.3' -o '%s' --rank 4 --force", a, b, out);
    assert_int_equal(run(args, &o), 0);
    /* one summary line; the modules one by one only with --verbose */
    assert_non_null(strstr(o, "rank 4: relative Frobenius error"));
    assert_non_null(strstr(o, "max at model.layers."));
    assert_null(strstr(o, "model.layers.0.self_attn.q_proj   "));
    free(o);
    load(out, NULL, &m);
    assert_int_equal(m.m[0].rank, 4);
    vkl_lora_free(&m);
    vkl_lora_free(&la);
    vkl_lora_free(&lb);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kohya_peft_kohya),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_llama_round_trip),
        cmocka_unit_test(test_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
