/* AdaLoRA (PEFT AdaLoraConfig) pieces against values computed here from the
 * definitions, independently of the library's code:
 *   - the adapted layer y = x W^T + (x (A*E)^T B^T) * alpha / (init_r + 1e-5)
 *     (and scaling = init_r when lora_alpha is 0), and the gradient of E
 *     through the fused LoRA matmul in closed form;
 *   - the orthogonal regulariser mean(||A A^T - I||_F, ||B^T B - I||_F) and
 *     its gradients in closed form (2 M A / ||M||, 2 B M / ||M||, over the
 *     count), with a central finite difference of the host formula as a
 *     cross-check of the closed form itself;
 *   (the schedule and the rank allocator: test_lora_adalora.c);
 *   - the PEFT file: keys, shapes cut to the kept ranks, config fields;
 *     reading it back as LoRA modules (down = A*E); a file still holding
 *     every rank with a rank_pattern; a UNet module (PEFT's own path in
 *     rank_pattern, unet. in the internal name); bad files refused;
 *   - tiny-llama's logits with the trained-form modules (device A, E, B)
 *     equal those with the saved file loaded as an ordinary LoRA set;
 *   - the trainer: E = 0 at the start leaves A and B exactly the weighted
 *     regulariser's gradient; the allocator's masks land in the device's E. */
#include "llama_check.h"
#include "llama/llama_adalora.h"
#include "llama/llama_train.h"
#include "lora/lora_adalora.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

#define MODEL LM_DIR "/tiny-llama"

static vkl_tensor *up(vkl_ctx *c, int nd, const int64_t *shape, const float *x)
{
    return vkl_test_upload(c, VKL_F32, nd, shape, x);
}

/* d = scaling / (ranknum + 1e-5), PEFT's float32 arithmetic, written out here */
static double peft_scale(double alpha, int init_r)
{
    float ranknum = (float)init_r + 1e-5f;
    return (alpha > 0 ? alpha : (double)init_r) / (double)ranknum;
}

static void layer_case(float alpha)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    enum { B = 2, L = 3, IN = 13, OUT = 7, R = 5 };
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 11);
    float x[B * L * IN], w[OUT * IN], a[R * IN], ev[R], b[OUT * R], dy[B * L * OUT];
    vkl_test_fill(&rng, x, B * L * IN, -1, 1);
    vkl_test_fill(&rng, w, OUT * IN, -0.5f, 0.5f);
    vkl_test_fill(&rng, a, R * IN, -0.5f, 0.5f);
    vkl_test_fill(&rng, ev, R, -1, 1);
    vkl_test_fill(&rng, b, OUT * R, -0.5f, 0.5f);
    vkl_test_fill(&rng, dy, B * L * OUT, -1, 1);
    vkl_adalora_config cfg;
    vkl_adalora_config_default(&cfg);
    cfg.init_r = R;
    cfg.lora_alpha = alpha;
    cfg.total_step = 10;
    vkl_llama_adalora_mod mod = {.module = "m", .in = IN, .out = OUT};
    mod.a = up(c, 2, (int64_t[]){R, IN}, a);
    mod.e = up(c, 1, (int64_t[]){R}, ev);
    mod.b = up(c, 2, (int64_t[]){OUT, R}, b);
    vkl_llama_adalora d = {.ctx = c, .cfg = cfg, .scale = vkl_adalora_scale(&cfg), .v = &mod, .n = 1};
    vkl_tensor *xt = up(c, 3, (int64_t[]){B, L, IN}, x), *wt = up(c, 2, (int64_t[]){OUT, IN}, w);
    vkl_tensor *dyt = up(c, 3, (int64_t[]){B, L, OUT}, dy);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *y = vkl_llama_adalora_linear(g, &d, &mod, xt, wt, NULL);
    /* loss = sum(y * dy): its gradient wrt y is dy */
    vkl_tensor *loss = vkl_sum_rows(g, vkl_reshape(g, vkl_mul(g, y, dyt), 2, (int64_t[]){1, B * L * OUT}));
    vkl_tensor *grad[1];
    vkl_err e = {{0}};
    if (vkl_graph_backward(g, loss, NULL, &mod.e, 1, grad, &e)) {
        print_error("backward: %s\n", e.msg);
        fail();
    }
    vkl_graph_keep(g, y);
    vkl_graph_keep(g, grad[0]);
    lm_plan(g);
    lm_run(g);
    float *got = lm_download(c, y), *ge = lm_download(c, grad[0]);
    double s = peft_scale(alpha, R);
    float want[B * L * OUT], want_ge[R];
    double acc_e[R] = {0};
    for (int t = 0; t < B * L; t++)
        for (int o = 0; o < OUT; o++) {
            double v = 0, dlt = 0;
            for (int i = 0; i < IN; i++) v += (double)x[t * IN + i] * w[o * IN + i];
            for (int k = 0; k < R; k++) {
                double ax = 0;
                for (int i = 0; i < IN; i++) ax += (double)a[k * IN + i] * ev[k] * x[t * IN + i];
                dlt += b[o * R + k] * ax;
                /* d loss / d E_k = s * sum_t,o dy * B[o,k] * (A_k . x_t) */
                double ak = 0;
                for (int i = 0; i < IN; i++) ak += (double)a[k * IN + i] * x[t * IN + i];
                acc_e[k] += s * dy[t * OUT + o] * b[o * R + k] * ak;
            }
            want[t * OUT + o] = (float)(v + dlt * s);
        }
    for (int k = 0; k < R; k++) want_ge[k] = (float)acc_e[k];
    printf("  alpha %g: scale %.9g (PEFT %.9g)\n", alpha, d.scale, s);
    assert_true(fabs(d.scale - s) <= 1e-7 * s);
    lm_expect("AdaLoRA layer vs B (A*E) x * s", got, want, B * L * OUT, 2e-5);
    lm_expect("dloss/dE vs closed form", ge, want_ge, R, 1e-4);
    free(got);
    free(ge);
    vkl_graph_free(g);
    vkl_tensor_free(xt);
    vkl_tensor_free(wt);
    vkl_tensor_free(dyt);
    vkl_tensor_free(mod.a);
    vkl_tensor_free(mod.e);
    vkl_tensor_free(mod.b);
    vkl_test_ctx_done(c);
}

static void test_layer(void **state)
{
    (void)state;
    layer_case(8.0f);
    layer_case(0.0f); /* scaling falls back to init_r */
}

/* ||P - I||_F with P = A A^T (rows) or B^T B (columns), and M = P - I. */
static double off_identity(const float *x, int rows, int cols, int by_rows, double *m)
{
    int r = by_rows ? rows : cols, n = by_rows ? cols : rows;
    double f = 0;
    for (int i = 0; i < r; i++)
        for (int j = 0; j < r; j++) {
            double p = 0;
            for (int k = 0; k < n; k++)
                p += by_rows ? (double)x[i * cols + k] * x[j * cols + k] : (double)x[k * cols + i] * x[k * cols + j];
            double v = p - (i == j);
            if (m) m[i * r + j] = v;
            f += v * v;
        }
    return sqrt(f);
}

static void test_orth_reg(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    enum { N = 2, R = 3, IN = 5, OUT = 4 };
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 5);
    float a[N][R * IN], b[N][OUT * R];
    vkl_llama_adalora_mod mods[N];
    vkl_tensor *wrt[2 * N];
    for (int i = 0; i < N; i++) {
        vkl_test_fill(&rng, a[i], R * IN, -0.6f, 0.6f);
        vkl_test_fill(&rng, b[i], OUT * R, -0.6f, 0.6f);
        mods[i] = (vkl_llama_adalora_mod){.module = "m", .in = IN, .out = OUT};
        wrt[2 * i] = mods[i].a = up(c, 2, (int64_t[]){R, IN}, a[i]);
        wrt[2 * i + 1] = mods[i].b = up(c, 2, (int64_t[]){OUT, R}, b[i]);
        mods[i].e = NULL;
    }
    float eye[R * R] = {0};
    for (int k = 0; k < R; k++) eye[k * R + k] = 1;
    vkl_adalora_config cfg;
    vkl_adalora_config_default(&cfg);
    cfg.init_r = R;
    vkl_llama_adalora d = {.ctx = c, .cfg = cfg, .v = mods, .n = N, .eye = up(c, 2, (int64_t[]){R, R}, eye)};
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *reg = vkl_llama_adalora_orth(g, &d), *grads[2 * N];
    vkl_err e = {{0}};
    if (vkl_graph_backward(g, reg, NULL, wrt, 2 * N, grads, &e)) {
        print_error("backward: %s\n", e.msg);
        fail();
    }
    vkl_graph_keep(g, reg);
    for (int i = 0; i < 2 * N; i++) vkl_graph_keep(g, grads[i]);
    lm_plan(g);
    lm_run(g);
    float *val = lm_download(c, reg);
    double want = 0;
    for (int i = 0; i < N; i++) want += off_identity(a[i], R, IN, 1, NULL) + off_identity(b[i], OUT, R, 0, NULL);
    want /= 2 * N;
    printf("  regulariser %.7f, closed form %.7f\n", val[0], want);
    assert_true(fabs(val[0] - want) <= 1e-5 * want);
    for (int i = 0; i < N; i++) {
        double m[R * R];
        /* d||M||/dA = 2 M A / ||M|| (M symmetric); d||M||/dB = 2 B M / ||M|| */
        double fa = off_identity(a[i], R, IN, 1, m);
        float ga[R * IN], gb[OUT * R];
        for (int k = 0; k < R; k++)
            for (int j = 0; j < IN; j++) {
                double s = 0;
                for (int q = 0; q < R; q++) s += m[k * R + q] * a[i][q * IN + j];
                ga[k * IN + j] = (float)(2 * s / fa / (2 * N));
            }
        double fb = off_identity(b[i], OUT, R, 0, m);
        for (int o = 0; o < OUT; o++)
            for (int k = 0; k < R; k++) {
                double s = 0;
                for (int q = 0; q < R; q++) s += b[i][o * R + q] * m[q * R + k];
                gb[o * R + k] = (float)(2 * s / fb / (2 * N));
            }
        /* the closed form against a central difference of the host formula at one entry each */
        const double h = 1e-3;
        float ap[R * IN], bp[OUT * R];
        memcpy(ap, a[i], sizeof ap);
        ap[4] += (float)h;
        double up_a = off_identity(ap, R, IN, 1, NULL);
        ap[4] -= (float)(2 * h);
        double fd_a = (up_a - off_identity(ap, R, IN, 1, NULL)) / (2 * h) / (2 * N);
        memcpy(bp, b[i], sizeof bp);
        bp[5] += (float)h;
        double up_b = off_identity(bp, OUT, R, 0, NULL);
        bp[5] -= (float)(2 * h);
        double fd_b = (up_b - off_identity(bp, OUT, R, 0, NULL)) / (2 * h) / (2 * N);
        printf("  module %d: closed form vs central difference dA %.6f / %.6f, dB %.6f / %.6f\n", i, ga[4], fd_a, gb[5],
               fd_b);
        assert_true(fabs(ga[4] - fd_a) <= 1e-3 * fabs(fd_a) + 1e-5 && fabs(gb[5] - fd_b) <= 1e-3 * fabs(fd_b) + 1e-5);
        float *da = lm_download(c, grads[2 * i]), *db = lm_download(c, grads[2 * i + 1]);
        lm_expect("d reg / dA vs 2 M A / ||M||", da, ga, R * IN, 2e-5);
        lm_expect("d reg / dB vs 2 B M / ||M||", db, gb, OUT * R, 2e-5);
        free(da);
        free(db);
        vkl_tensor_free(mods[i].a);
        vkl_tensor_free(mods[i].b);
    }
    free(val);
    vkl_graph_free(g);
    vkl_tensor_free(d.eye);
    vkl_test_ctx_done(c);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return buf;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* A trained-form adapter with random A, E, B on tiny-llama's q/v projections
 * and a pattern keeping 4, 0, 2 ... ranks; saved, read back as LoRA, and
 * run both ways. */
static void test_file_and_logits(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    vkl_adalora_config cfg;
    vkl_adalora_config_default(&cfg);
    cfg.init_r = 4;
    cfg.target_r = 2;
    cfg.lora_alpha = 6;
    cfg.total_step = 10;
    vkl_llama_adalora *d = NULL;
    vkl_err e = {{0}};
    if (vkl_llama_adalora_init(m, &cfg, NULL, 0, 3, &d, &e)) {
        print_error("init: %s\n", e.msg);
        fail();
    }
    assert_int_equal(d->n, 2 * m->cfg.layers);
    int n = d->n, r = cfg.init_r;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 9);
    vkl_adalora_module *hm = calloc((size_t)n, sizeof *hm);
    unsigned char *keep = malloc((size_t)(n * r));
    for (int i = 0; i < n; i++) {
        vkl_llama_adalora_mod *x = &d->v[i];
        float *a = malloc(sizeof(float) * (size_t)(r * x->in)), *ev = malloc(sizeof(float) * (size_t)r),
              *b = malloc(sizeof(float) * (size_t)(x->out * r));
        vkl_test_fill(&rng, a, (size_t)(r * x->in), -0.3f, 0.3f);
        vkl_test_fill(&rng, b, (size_t)(x->out * r), -0.3f, 0.3f);
        vkl_test_fill(&rng, ev, (size_t)r, 0.5f, 1.5f);
        for (int q = 0; q < r; q++) {
            /* module 1 loses every rank; the others keep a varying subset */
            keep[i * r + q] = i == 1 ? 0 : (unsigned char)((q + i) % 3 != 0);
            if (!keep[i * r + q]) ev[q] = 0; /* what masking leaves on the device */
        }
        assert_int_equal(vkl_tensor_upload(c, x->a, a, VKL_F32, &e), 0);
        assert_int_equal(vkl_tensor_upload(c, x->e, ev, VKL_F32, &e), 0);
        assert_int_equal(vkl_tensor_upload(c, x->b, b, VKL_F32, &e), 0);
        hm[i] = (vkl_adalora_module){.name = x->module, .r = r, .in = x->in, .out = x->out, .a = a, .e = ev, .b = b,
                                     .keep = keep + i * r};
    }
    char dir[4096], st[4200], cj[4200];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    snprintf(st, sizeof st, "%s/adapter_model.safetensors", dir);
    snprintf(cj, sizeof cj, "%s/adapter_config.json", dir);
    const char *targets[] = {"q_proj", "v_proj"};
    if (vkl_adalora_save_peft(hm, n, &cfg, 1, targets, 2, "tiny", st, cj, &e)) {
        print_error("save: %s\n", e.msg);
        fail();
    }
    /* the safetensors keys and shapes PEFT's get_peft_model_state_dict gives */
    vkl_st_file *f = NULL;
    assert_int_equal(vkl_st_open(st, &f, &e), 0);
    assert_int_equal(vkl_st_count(f), 3 * n);
    for (int i = 0; i < n; i++) {
        int k = 0;
        for (int q = 0; q < r; q++) k += keep[i * r + q];
        static const char *part[3] = {"lora_A", "lora_E", "lora_B"};
        for (int p = 0; p < 3; p++) {
            char key[256];
            snprintf(key, sizeof key, "base_model.model.%s.%s", hm[i].name, part[p]);
            const vkl_st_tensor *t = vkl_st_find(f, key);
            if (!t) fail_msg("no tensor %s", key);
            int64_t s0 = p == 2 ? hm[i].out : k, s1 = p == 0 ? hm[i].in : p == 1 ? 1 : k;
            assert_int_equal(t->ndim, 2);
            assert_int_equal(t->shape[0], s0);
            assert_int_equal(t->shape[1], s1);
        }
        if (i == 0) { /* the kept rows are the right ones */
            float got[64 * 4];
            assert_int_equal(vkl_st_read_f32(f, "base_model.model.model.layers.0.self_attn.q_proj.lora_A", got,
                                             (uint64_t)(k * hm[0].in), &e), 0);
            for (int q = 0, j = 0; q < r; q++)
                if (keep[q]) assert_memory_equal(got + j++ * hm[0].in, hm[0].a + q * hm[0].in, sizeof(float) * hm[0].in);
        }
    }
    vkl_st_close(f);
    cJSON *j = cJSON_Parse(slurp(cj));
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "peft_type")->valuestring, "ADALORA");
    assert_int_equal(cJSON_GetObjectItem(j, "init_r")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItem(j, "target_r")->valueint, 2);
    assert_true(cJSON_GetObjectItem(j, "beta1")->valuedouble == 0.85);
    assert_true(cJSON_GetObjectItem(j, "lora_alpha")->valuedouble == 6);
    assert_null(cJSON_GetObjectItem(j, "ranknum"));
    const cJSON *rp = cJSON_GetObjectItem(j, "rank_pattern");
    assert_int_equal(cJSON_GetArraySize(rp), n);
    const cJSON *p0 = cJSON_GetObjectItem(rp, "model.layers.0.self_attn.q_proj.lora_E");
    assert_int_equal(cJSON_GetArraySize(p0), r);
    for (int q = 0; q < r; q++) assert_int_equal(cJSON_IsTrue(cJSON_GetArrayItem(p0, q)), keep[q]);
    cJSON_Delete(j);

    /* read back as LoRA: down = A * E on the kept rows, up = B's kept columns */
    vkl_lora l;
    if (vkl_lora_load(st, NULL, &l, &e)) {
        print_error("load: %s\n", e.msg);
        fail();
    }
    assert_int_equal(l.n, n - 1); /* the module without ranks changes nothing */
    double s = peft_scale(6, 4);
    for (int i = 0; i < l.n; i++) {
        const vkl_lora_module *mo = &l.m[i];
        int at = -1;
        for (int k = 0; k < n; k++)
            if (!strcmp(hm[k].name, mo->name)) at = k;
        assert_true(at >= 0 && at != 1);
        assert_int_equal(mo->kind, VKL_LORA_KIND_LORA);
        assert_true(fabs(mo->scale - s) <= 1e-6 * s);
        for (int q = 0, jj = 0; q < r; q++) {
            if (!keep[at * r + q]) continue;
            for (int x = 0; x < hm[at].in; x++)
                assert_float_equal(mo->t[VKL_LORA_DOWN].data[jj * hm[at].in + x],
                                   hm[at].a[q * hm[at].in + x] * hm[at].e[q], 1e-7);
            for (int o = 0; o < hm[at].out; o++)
                assert_float_equal(mo->t[VKL_LORA_UP].data[o * mo->rank + jj], hm[at].b[o * r + q], 0);
            jj++;
        }
    }

    /* logits: the device modules (masked E = 0) against the file as a LoRA set */
    enum { B = 1, L = 9 };
    int32_t ids[B * L] = {1, 45, 320, 7, 99, 512, 3, 64, 870};
    vkl_tensor *idt = lm_ids(c, ids, B, L), *mask = lm_mask(c, B, L, 0, NULL);
    vkl_graph *g1 = vkl_graph_new(c), *g2 = vkl_graph_new(c), *g0 = vkl_graph_new(c);
    vkl_llama_fwd f1 = {.adalora = d, .mask = mask, .explicit_attn = 1};
    vkl_lora_set *set = NULL;
    vkl_lora_use use = {&l, 1.0f, 1.0f};
    assert_int_equal(vkl_lora_set_build(c, &use, 1, &set, &e), 0);
    vkl_llama_fwd f2 = {.lora = set, .mask = mask, .explicit_attn = 1}, f0 = {.mask = mask, .explicit_attn = 1};
    vkl_tensor *y1 = vkl_llama_forward(g1, m, idt, &f1), *y2 = vkl_llama_forward(g2, m, idt, &f2);
    vkl_tensor *y0 = vkl_llama_forward(g0, m, idt, &f0);
    vkl_graph_keep(g1, y1);
    vkl_graph_keep(g2, y2);
    vkl_graph_keep(g0, y0);
    lm_plan(g1);
    lm_plan(g2);
    lm_plan(g0);
    lm_run(g1);
    lm_run(g2);
    lm_run(g0);
    size_t nl = (size_t)B * L * m->cfg.vocab;
    float *l1 = lm_download(c, y1), *l2 = lm_download(c, y2), *l0 = lm_download(c, y0);
    lm_expect("logits: trained form vs file as LoRA", l1, l2, nl, 1e-4);
    double moved = vkl_test_max_abs_diff(l1, l0, nl);
    printf("  logits move %.3g from the base model\n", moved);
    assert_true(moved > 1e-2);
    free(l0);
    free(l1);
    free(l2);
    vkl_graph_free(g0);
    vkl_graph_free(g1);
    vkl_graph_free(g2);
    vkl_lora_set_free(set);
    vkl_tensor_free(idt);
    vkl_tensor_free(mask);

    /* a file that still holds every rank: the rank_pattern drops the masked ones */
    vkl_adalora_module full = hm[0];
    full.keep = NULL;
    char st2[4300], cj2[4300];
    snprintf(st2, sizeof st2, "%s/full/adapter_model.safetensors", dir);
    snprintf(cj2, sizeof cj2, "%s/full/adapter_config.json", dir);
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/full", dir);
    mkdir(sub, 0755);
    assert_int_equal(vkl_adalora_save_peft(&full, 1, &cfg, 0, targets, 2, NULL, st2, cj2, &e), 0);
    char cfgtext[1024];
    snprintf(cfgtext, sizeof cfgtext,
             "{\"peft_type\": \"ADALORA\", \"init_r\": 4, \"lora_alpha\": 6, \"rank_pattern\": "
             "{\"model.layers.0.self_attn.q_proj.lora_E\": [%s, %s, %s, %s]}}",
             keep[0] ? "true" : "false", keep[1] ? "true" : "false", keep[2] ? "true" : "false",
             keep[3] ? "true" : "false");
    write_text(cj2, cfgtext);
    vkl_lora l2f;
    assert_int_equal(vkl_lora_load(st2, NULL, &l2f, &e), 0);
    assert_int_equal(l2f.n, 1);
    assert_int_equal(l2f.m[0].rank, l.m[0].rank);
    assert_memory_equal(l2f.m[0].t[VKL_LORA_DOWN].data, l.m[0].t[VKL_LORA_DOWN].data,
                        sizeof(float) * vkl_lora_tensor_nelem(&l.m[0].t[VKL_LORA_DOWN]));
    vkl_lora_free(&l2f);
    /* bad files: a pattern of the wrong length, ranks the pattern cannot explain, a missing E */
    write_text(cj2, "{\"peft_type\": \"ADALORA\", \"init_r\": 4, \"rank_pattern\": "
                    "{\"model.layers.0.self_attn.q_proj.lora_E\": [true, false]}}");
    assert_int_not_equal(vkl_lora_load(st2, NULL, &l2f, &e), 0);
    printf("  refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "rank_pattern"));
    write_text(cj2, "{\"peft_type\": \"ADALORA\", \"init_r\": 3}");
    assert_int_not_equal(vkl_lora_load(st2, NULL, &l2f, &e), 0);
    printf("  refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "init_r"));
    /* a UNet module: the internal name gets the unet. root, the rank_pattern key is PEFT's own path */
    {
        vkl_st_writer *w = vkl_st_writer_new();
        const char *unet = "base_model.model.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q";
        float av[3 * 4] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, evv[3] = {0.5f, 2, -1}, bv[2 * 3] = {1, 0, 0, 1, 1, 1};
        char key[256];
        snprintf(key, sizeof key, "%s.lora_A", unet);
        assert_int_equal(vkl_st_writer_add(w, key, VKL_F32, 2, (int64_t[]){3, 4}, av, &e), 0);
        snprintf(key, sizeof key, "%s.lora_E", unet);
        assert_int_equal(vkl_st_writer_add(w, key, VKL_F32, 2, (int64_t[]){3, 1}, evv, &e), 0);
        snprintf(key, sizeof key, "%s.lora_B", unet);
        assert_int_equal(vkl_st_writer_add(w, key, VKL_F32, 2, (int64_t[]){2, 3}, bv, &e), 0);
        assert_int_equal(vkl_st_writer_finish(w, st2, &e), 0);
        vkl_st_writer_free(w);
        write_text(cj2, "{\"peft_type\": \"ADALORA\", \"init_r\": 3, \"lora_alpha\": 3, \"rank_pattern\": "
                        "{\"down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_E\": [true, false, true]}}");
        vkl_lora lu;
        if (vkl_lora_load(st2, NULL, &lu, &e)) fail_msg("%s", e.msg);
        assert_int_equal(lu.n, 1);
        assert_string_equal(lu.m[0].name, "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q");
        assert_int_equal(lu.m[0].rank, 2);
        const float want_down[8] = {0.5f, 1, 1.5f, 2, -9, -10, -11, -12}, want_up[4] = {1, 0, 1, 1}; /* B [[1,0,0],[1,1,1]], columns 0 and 2 */
        assert_memory_equal(lu.m[0].t[VKL_LORA_DOWN].data, want_down, sizeof want_down);
        assert_memory_equal(lu.m[0].t[VKL_LORA_UP].data, want_up, sizeof want_up);
        assert_true(fabs(lu.m[0].scale - peft_scale(3, 3)) < 1e-7);
        vkl_lora_free(&lu);
    }
    /* the LoRA file of another run is not an AdaLoRA one */
    write_text(cj, "{\"peft_type\": \"ADALORA\", \"init_r\": 4}");
    vkl_lora lw;
    snprintf(st2, sizeof st2, "%s", vkl_test_shared_path(LM_DIR "/tiny-llama-lora/adapter_model.safetensors"));
    vkl_lora_opts lo = {.config_path = cj};
    assert_int_not_equal(vkl_lora_load(st2, &lo, &lw, &e), 0);
    printf("  refused: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "not an AdaLoRA tensor"));

    vkl_lora_free(&l);
    for (int i = 0; i < n; i++) {
        free((void *)hm[i].a);
        free((void *)hm[i].e);
        free((void *)hm[i].b);
    }
    free(hm);
    free(keep);
    vkl_test_rmtree(dir);
    vkl_llama_adalora_free(d);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

/* The trainer on tiny-llama: at the start E = 0, so the cross-entropy gives A
 * and B no gradient and theirs is exactly orth_reg_weight x the
 * regulariser's (closed form from the downloaded A, B); the reported loss is
 * the base model's cross-entropy; after each step the allocator's pattern is
 * what the device's E holds (masked entries 0), ending at the target. */
static void test_trainer(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    vkl_adalora_config cfg;
    vkl_adalora_config_default(&cfg);
    cfg.init_r = 4;
    cfg.target_r = 2;
    cfg.tinit = 1;
    cfg.tfinal = 1;
    cfg.total_step = 4;
    cfg.orth_reg_weight = 0.3f;
    vkl_llama_adalora *d = NULL;
    vkl_adalora_alloc *al = NULL;
    vkl_err e = {{0}};
    const char *targets[] = {"k_proj", "down_proj"};
    if (vkl_llama_adalora_init(m, &cfg, targets, 2, 5, &d, &e) || vkl_llama_adalora_alloc_new(d, &al, &e)) {
        print_error("init: %s\n", e.msg);
        fail();
    }
    assert_int_equal(d->n, 2 * m->cfg.layers);
    enum { B = 2, L = 8 };
    int32_t ids[B * L];
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 3);
    for (int i = 0; i < B * L; i++) ids[i] = vkl_test_rng_int(&rng, 3, 999);
    vkl_llama_train_opts o = {.adalora = d};
    vkl_adamw_opts_default(&o.adam);
    o.adam.lr = 1e-2f;
    o.adam.weight_decay = 0;
    vkl_llama_train *s = NULL;
    if (vkl_llama_train_new(m, NULL, NULL, B, L, &o, &s, &e)) {
        print_error("trainer: %s\n", e.msg);
        fail();
    }
    assert_int_equal(vkl_llama_train_count(s), 3 * d->n);
    assert_string_equal(vkl_llama_train_key(s, 1), "base_model.model.model.layers.0.self_attn.k_proj.lora_E");
    int r = cfg.init_r, n = d->n;
    float **a0 = calloc((size_t)n, sizeof *a0), **b0 = calloc((size_t)n, sizeof *b0);
    for (int i = 0; i < n; i++) {
        a0[i] = lm_download(c, d->v[i].a);
        b0[i] = lm_download(c, d->v[i].b);
    }
    /* the base model's loss on the same batch */
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *idt = lm_ids(c, ids, B, L), *mask = lm_mask(c, B, L, 0, NULL);
    vkl_llama_fwd f0 = {.mask = mask, .explicit_attn = 1};
    int32_t tg[B * L];
    vkl_llama_shift_labels(ids, B, L, tg);
    vkl_tensor *tgt = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){B, L}, &e);
    assert_int_equal(vkl_tensor_upload(c, tgt, tg, VKL_I32, &e), 0);
    vkl_tensor *base = vkl_cross_entropy(g, vkl_llama_forward(g, m, idt, &f0), tgt, VKL_LLAMA_IGNORE);
    vkl_graph_keep(g, base);
    lm_plan(g);
    lm_run(g);
    float *bl = lm_download(c, base);
    for (int t = 1; t <= cfg.total_step; t++) {
        float loss = 0;
        if (vkl_llama_train_step(s, ids, ids, NULL, t, 1e-2f, &loss, &e)) {
            print_error("step %d: %s\n", t, e.msg);
            fail();
        }
        if (t == 1) {
            printf("  step 1 loss %.6f, base model %.6f\n", loss, bl[0]);
            assert_true(fabs(loss - bl[0]) <= 1e-5);
            float *reg = lm_download(c, vkl_llama_train_reg(s));
            double want_reg = 0;
            for (int i = 0; i < n; i++)
                want_reg += off_identity(a0[i], r, d->v[i].in, 1, NULL) + off_identity(b0[i], d->v[i].out, r, 0, NULL);
            want_reg /= 2 * n;
            printf("  regulariser %.6f, closed form %.6f\n", reg[0], want_reg);
            assert_true(fabs(reg[0] - want_reg) <= 1e-5 * want_reg);
            free(reg);
            for (int i = 0; i < n; i++) {
                int in = d->v[i].in, out = d->v[i].out;
                double mm[16];
                double fa = off_identity(a0[i], r, in, 1, mm);
                float *ga = lm_download(c, vkl_llama_train_grad(s, 3 * i)), *gb = lm_download(c, vkl_llama_train_grad(s, 3 * i + 2));
                float *wa = malloc(sizeof(float) * (size_t)(r * in)), *wb = malloc(sizeof(float) * (size_t)(out * r));
                for (int k = 0; k < r; k++)
                    for (int j = 0; j < in; j++) {
                        double acc = 0;
                        for (int q = 0; q < r; q++) acc += mm[k * r + q] * a0[i][q * in + j];
                        wa[k * in + j] = (float)(cfg.orth_reg_weight * 2 * acc / fa / (2 * n));
                    }
                double fb = off_identity(b0[i], out, r, 0, mm);
                for (int oo = 0; oo < out; oo++)
                    for (int k = 0; k < r; k++) {
                        double acc = 0;
                        for (int q = 0; q < r; q++) acc += b0[i][oo * r + q] * mm[q * r + k];
                        wb[oo * r + k] = (float)(cfg.orth_reg_weight * 2 * acc / fb / (2 * n));
                    }
                if (i == 0) {
                    lm_expect("step 1 dA = w x d reg/dA (E = 0)", ga, wa, (size_t)(r * in), 1e-6);
                    lm_expect("step 1 dB = w x d reg/dB (E = 0)", gb, wb, (size_t)(out * r), 1e-6);
                } else {
                    assert_true(vkl_test_max_abs_diff(ga, wa, (size_t)(r * in)) <= 1e-6);
                    assert_true(vkl_test_max_abs_diff(gb, wb, (size_t)(out * r)) <= 1e-6);
                }
                free(ga);
                free(gb);
                free(wa);
                free(wb);
            }
        }
        int budget = 0;
        float norm = 0;
        int skipped = 0;
        assert_int_equal(vkl_adamw_result(vkl_llama_train_optimizer(s), &norm, &skipped, &e), 0);
        if (vkl_llama_adalora_allocate(d, al, s, t, vkl_llama_adalora_clip_factor(o.adam.max_grad_norm, norm), &budget, &e)) {
            print_error("allocate %d: %s\n", t, e.msg);
            fail();
        }
        int zeros = 0, masked = 0;
        for (int i = 0; i < n; i++) {
            float *ev = lm_download(c, d->v[i].e);
            const unsigned char *p = vkl_adalora_alloc_pattern(al, i);
            for (int q = 0; q < r; q++) {
                zeros += ev[q] == 0.0f;
                if (p && !p[q]) {
                    masked++;
                    assert_true(ev[q] == 0.0f);
                }
            }
            free(ev);
        }
        printf("  step %d: budget %d, %d ranks masked, %d E entries zero\n", t, budget, masked, zeros);
        assert_int_equal(masked, t == 1 ? 0 : r * n - budget);
    }
    assert_int_equal(vkl_adalora_alloc_total_rank(al), cfg.target_r * n);
    assert_true(fabs(vkl_llama_adalora_clip_factor(1.0f, 4.0f) - 1.0f / (4.0f + 1e-6f)) < 1e-9);
    assert_true(vkl_llama_adalora_clip_factor(1.0f, 0.5f) == 1.0f && vkl_llama_adalora_clip_factor(0, 9) == 1.0f);
    for (int i = 0; i < n; i++) {
        free(a0[i]);
        free(b0[i]);
    }
    free(a0);
    free(b0);
    free(bl);
    vkl_graph_free(g);
    vkl_tensor_free(idt);
    vkl_tensor_free(mask);
    vkl_tensor_free(tgt);
    vkl_llama_train_free(s);
    vkl_adalora_alloc_free(al);
    vkl_llama_adalora_free(d);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layer),
        cmocka_unit_test(test_orth_reg),
        cmocka_unit_test(test_file_and_logits),
        cmocka_unit_test(test_trainer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
