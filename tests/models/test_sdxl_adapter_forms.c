/* SDXL adapters in the forms people share, written here in their external
 * layouts on the tiny SDXL model (refkit/sdxl/tiny-sdxl) and read through
 * vkl_sd_adapters_apply: LyCORIS LoHa (UNet and text_encoder) and LoKr
 * (text_encoder_2) under kohya's SDXL names (lora_unet_ with the SGM block
 * numbering, lora_te1_, lora_te2_), a LyCORIS DoRA (dora_scale [out, 1]), and
 * a PEFT/diffusers file with unet. and text_encoder_2. roots (plain LoRA and
 * a DoRA magnitude). Each layer's weight, at run time (the layer applied to
 * the identity) and merged, must be W + multiplier x delta W with delta W
 * worked out here in double from the factors by the formulas of LyCORIS and
 * PEFT (DoRA: the multiplier scales W' - W, as AUTOMATIC1111's
 * finalize_updown does), within 1e-5 of scale. */
#include "vkl_test.h"
#include "io/safetensors.h"
#include "sd/sd_adapters.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/sdxl/tiny-sdxl"
#define UMULT 0.7f
#define TMULT 0.5f

static vkl_test_rng rng;

typedef enum { LOHA, LOKR, DORA, PEFT, PEFT_DORA } form;

typedef struct {
    form f;
    const char *key;      /* the module's name in its file */
    const char *internal; /* the layer inside vklora */
    int file;             /* 0 LoHa/LoKr, 1 DoRA, 2 PEFT */
    int64_t out, in;
    float *w;             /* base weight [out, in] */
    double *want;         /* expected W' */
} layer;

static layer layers[] = {
    {LOHA, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q",
     "unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 0, 0, 0, NULL, NULL},
    {LOHA, "lora_te1_text_model_encoder_layers_1_mlp_fc1", "text_encoder.text_model.encoder.layers.1.mlp.fc1", 0, 0,
     0, NULL, NULL},
    {LOKR, "lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
     "text_encoder_2.text_model.encoder.layers.0.self_attn.q_proj", 0, 0, 0, NULL, NULL},
    {DORA, "lora_unet_output_blocks_3_1_transformer_blocks_0_attn2_to_k",
     "unet.up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 1, 0, 0, NULL, NULL},
    {PEFT, "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_v",
     "unet.down_blocks.2.attentions.1.transformer_blocks.0.attn1.to_v", 2, 0, 0, NULL, NULL},
    {PEFT_DORA, "text_encoder_2.text_model.encoder.layers.1.mlp.fc1",
     "text_encoder_2.text_model.encoder.layers.1.mlp.fc1", 2, 0, 0, NULL, NULL},
};
#define NL ((int)(sizeof layers / sizeof *layers))

static float *rnd(size_t n, float lo, float hi)
{
    float *v = malloc(sizeof(float) * n);
    vkl_test_fill(&rng, v, n, lo, hi);
    return v;
}

/* [a, k] @ [k, b] in double */
static void matmul(const float *x, const float *y, int64_t a, int64_t k, int64_t b, double *out)
{
    for (int64_t i = 0; i < a; i++)
        for (int64_t j = 0; j < b; j++) {
            double s = 0;
            for (int64_t r = 0; r < k; r++) s += (double)x[i * k + r] * y[r * b + j];
            out[i * b + j] = s;
        }
}

/* W' = W + mult * (mag / ||V|| * V - W) per output row, V = W + delta */
static void dora(const layer *l, const double *delta, const float *mag, double mult, double *out)
{
    for (int64_t o = 0; o < l->out; o++) {
        double nrm = 0;
        for (int64_t i = 0; i < l->in; i++) {
            double v = l->w[o * l->in + i] + delta[o * l->in + i];
            nrm += v * v;
        }
        nrm = sqrt(nrm);
        for (int64_t i = 0; i < l->in; i++) {
            double w = l->w[o * l->in + i], v = w + delta[o * l->in + i];
            out[o * l->in + i] = w + mult * (mag[o] * v / nrm - w);
        }
    }
}

static void add(vkl_st_writer *w, const char *key, const char *suffix, int nd, const int64_t *shape, const float *v)
{
    char name[300];
    vkl_err e = {{0}};
    snprintf(name, sizeof name, "%s%s", key, suffix);
    if (vkl_st_writer_add(w, name, VKL_F32, nd, shape, v, &e)) fail_msg("%s", e.msg);
}

/* Factors of layer l into its file, and its expected weight. */
static void build(layer *l, vkl_st_writer *w)
{
    int64_t O = l->out, I = l->in, n = O * I;
    double mult = !strncmp(l->internal, "unet.", 5) ? UMULT : TMULT;
    double *d = malloc(sizeof(double) * (size_t)n), *p = malloc(sizeof(double) * (size_t)n);
    l->want = malloc(sizeof(double) * (size_t)n);
    const int r = 2;
    float alpha = 1.5f;
    if (l->f == LOHA) {
        /* LyCORIS LoHa: (w1a @ w1b) * (w2a @ w2b) * alpha / r */
        float *w1a = rnd((size_t)(O * r), -0.6f, 0.6f), *w1b = rnd((size_t)(r * I), -0.6f, 0.6f);
        float *w2a = rnd((size_t)(O * r), -0.6f, 0.6f), *w2b = rnd((size_t)(r * I), -0.6f, 0.6f);
        add(w, l->key, ".hada_w1_a", 2, (int64_t[]){O, r}, w1a);
        add(w, l->key, ".hada_w1_b", 2, (int64_t[]){r, I}, w1b);
        add(w, l->key, ".hada_w2_a", 2, (int64_t[]){O, r}, w2a);
        add(w, l->key, ".hada_w2_b", 2, (int64_t[]){r, I}, w2b);
        add(w, l->key, ".alpha", 0, NULL, &alpha);
        matmul(w1a, w1b, O, r, I, d);
        matmul(w2a, w2b, O, r, I, p);
        for (int64_t k = 0; k < n; k++) d[k] *= p[k] * alpha / r;
        free(w1a); free(w1b); free(w2a); free(w2b);
    } else if (l->f == LOKR) {
        /* LyCORIS LoKr: kron(w1, w2a @ w2b) * alpha / r, w1 [4, 4] */
        int64_t a = 4, b = 4, c = O / a, dd = I / b;
        assert_int_equal(c * a, O);
        assert_int_equal(dd * b, I);
        float *w1 = rnd((size_t)(a * b), -1, 1), *w2a = rnd((size_t)(c * r), -0.6f, 0.6f);
        float *w2b = rnd((size_t)(r * dd), -0.6f, 0.6f);
        add(w, l->key, ".lokr_w1", 2, (int64_t[]){a, b}, w1);
        add(w, l->key, ".lokr_w2_a", 2, (int64_t[]){c, r}, w2a);
        add(w, l->key, ".lokr_w2_b", 2, (int64_t[]){r, dd}, w2b);
        add(w, l->key, ".alpha", 0, NULL, &alpha);
        matmul(w2a, w2b, c, r, dd, p);
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++)
                for (int64_t k = 0; k < c; k++)
                    for (int64_t m = 0; m < dd; m++)
                        d[(i * c + k) * I + j * dd + m] = (double)w1[i * b + j] * p[k * dd + m] * alpha / r;
        free(w1); free(w2a); free(w2b);
    } else {
        /* kohya/LyCORIS lora_up @ lora_down * alpha / r; PEFT lora_B @ lora_A
         * (no alpha in the file: lora_alpha = r, scale 1) */
        int peft = l->f == PEFT || l->f == PEFT_DORA;
        float *down = rnd((size_t)(r * I), -0.5f, 0.5f), *up = rnd((size_t)(O * r), -0.5f, 0.5f);
        add(w, l->key, peft ? ".lora_A.weight" : ".lora_down.weight", 2, (int64_t[]){r, I}, down);
        add(w, l->key, peft ? ".lora_B.weight" : ".lora_up.weight", 2, (int64_t[]){O, r}, up);
        if (!peft) add(w, l->key, ".alpha", 0, NULL, &alpha);
        matmul(up, down, O, r, I, d);
        double s = peft ? 1.0 : alpha / r;
        for (int64_t k = 0; k < n; k++) d[k] *= s;
        free(down); free(up);
    }
    if (l->f == DORA || l->f == PEFT_DORA) {
        float *mag = rnd((size_t)O, 0.5f, 2.0f);
        if (l->f == DORA) add(w, l->key, ".dora_scale", 2, (int64_t[]){O, 1}, mag);
        else add(w, l->key, ".lora_magnitude_vector", 1, (int64_t[]){O}, mag);
        dora(l, d, mag, mult, l->want);
        free(mag);
    } else {
        for (int64_t k = 0; k < n; k++) l->want[k] = l->w[k] + mult * d[k];
    }
    free(d);
    free(p);
}

static void check(const char *what, const layer *l, const float *got)
{
    int64_t n = l->out * l->in;
    float *want = malloc(sizeof(float) * (size_t)n);
    double moved = 0, scale = 0;
    for (int64_t k = 0; k < n; k++) {
        want[k] = (float)l->want[k];
        moved = fmax(moved, fabs(l->want[k] - l->w[k]));
        scale = fmax(scale, fabs(l->w[k]));
    }
    /* the adapter must change the layer clearly, or the check proves nothing */
    assert_true(moved > 0.05 * scale);
    char label[400];
    snprintf(label, sizeof label, "%s %s", what, l->key);
    vkl_test_assert_scaled(label, got, want, (size_t)n, 1e-5);
    free(want);
}

/* The layer's weight as the graph uses it at run time: the layer applied to
 * the identity gives W'^T. */
static float *run_time_weight(vkl_sd_model *m, const vkl_sd_adapters *a, const layer *l)
{
    vkl_err e = {{0}};
    char wn[300];
    snprintf(wn, sizeof wn, "%s.weight", l->internal);
    float *eye = calloc((size_t)(l->in * l->in), sizeof(float));
    for (int64_t i = 0; i < l->in; i++) eye[i * l->in + i] = 1;
    vkl_tensor *x = vkl_test_upload(m->ctx, VKL_F32, 2, (int64_t[]){l->in, l->in}, eye);
    vkl_graph *g = vkl_graph_new(m->ctx);
    vkl_tensor *y = vkl_lora_linear(g, a->set, l->internal, x, vkl_weights_find(m->w, wn), NULL);
    assert_non_null(y);
    vkl_graph_keep(g, y);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) fail_msg("%s", e.msg);
    float *yt = vkl_test_download(m->ctx, y), *w = malloc(sizeof(float) * (size_t)(l->out * l->in));
    for (int64_t o = 0; o < l->out; o++)
        for (int64_t i = 0; i < l->in; i++) w[o * l->in + i] = yt[i * l->out + o];
    free(yt);
    free(eye);
    vkl_graph_free(g);
    vkl_tensor_free(x);
    return w;
}

static void forms(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL);
    vkl_test_rng_seed(&rng, 20240613);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.weight_dtype = VKL_F32;
    vkl_sd_model *m = NULL;
    if (vkl_sd_model_load(c, vkl_test_shared_path(MODEL), &mo, &m, &e)) fail_msg("%s", e.msg);
    vkl_st_writer *w[3] = {vkl_st_writer_new(), vkl_st_writer_new(), vkl_st_writer_new()};
    for (int i = 0; i < NL; i++) {
        layer *l = &layers[i];
        char wn[300];
        snprintf(wn, sizeof wn, "%s.weight", l->internal);
        vkl_tensor *t = vkl_weights_find(m->w, wn);
        if (!t) fail_msg("the model has no %s", wn);
        assert_int_equal(t->ndim, 2);
        l->out = t->shape[0];
        l->in = t->shape[1];
        l->w = vkl_test_download(c, t);
        build(l, w[l->file]);
    }
    static const char *names[3] = {"lycoris.safetensors", "dora.safetensors", "peft.safetensors"};
    char paths[3][512];
    const char *pp[3];
    float um[3] = {UMULT, UMULT, UMULT}, tm[3] = {TMULT, TMULT, TMULT};
    for (int k = 0; k < 3; k++) {
        snprintf(paths[k], sizeof paths[k], "%s/%s", vkl_test_dir, names[k]);
        pp[k] = paths[k];
        if (vkl_st_writer_finish(w[k], paths[k], &e)) fail_msg("%s", e.msg);
        vkl_st_writer_free(w[k]);
    }
    for (int merged = 0; merged < 2; merged++) {
        vkl_sd_adapters a;
        if (vkl_sd_adapters_apply(m, pp, um, tm, 3, merged, &a, &e)) fail_msg("%s", e.msg);
        for (int i = 0; i < NL; i++) {
            char wn[300];
            snprintf(wn, sizeof wn, "%s.weight", layers[i].internal);
            float *got = merged ? vkl_test_download(c, vkl_weights_find(m->w, wn)) : run_time_weight(m, &a, &layers[i]);
            check(merged ? "merged" : "run time", &layers[i], got);
            free(got);
        }
        vkl_sd_adapters_free(&a);
    }
    for (int i = 0; i < NL; i++) {
        free(layers[i].w);
        free(layers[i].want);
    }
    vkl_sd_model_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(forms),
    };
    return cmocka_run_group_tests(tests, vkl_test_group_setup, vkl_test_group_teardown);
}
