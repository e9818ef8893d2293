/* vkl_train_run with LoHa, LoKr and DoRA networks on the tiny model and a
 * shared image set: finite losses; the saved file is a LyCORIS/kohya adapter
 * (ss_network_module lycoris.kohya, algo in ss_network_args) that loads
 * against the model's targets with every key matched, as the trained kind;
 * the UNet with it applied the ordinary run-time way (LoHa/LoKr delta W and
 * DoRA W' made on the CPU) equals the training graph's forward with the same
 * factors; and an interrupted LoKr run resumed from its state reproduces the
 * uninterrupted run's losses. */
#include "vkl_test.h"
#include "lora/lora_apply.h"
#include "lora/lora_init.h"
#include "sd/sd_source.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"
#include "train/sd_trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define IMAGES "data/wesnoth-portraits/test16-128px"
#define MODEL "refkit/sd/tiny-sd"

static char tmp[256], images[300];

static int setup(void **state)
{
    (void)state;
    if (!vkl_test_shared_exists(IMAGES) || !vkl_test_shared_exists(MODEL)) return 0;
    snprintf(tmp, sizeof tmp, "%s", vkl_test_tmpdir());
    snprintf(images, sizeof images, "%s/images", tmp);
    char cmd[1200];
    /* a copy, so no run writes beside the shared images */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s'/*.png '%s'/*.txt '%s/'", images,
             vkl_test_shared_path(IMAGES), vkl_test_shared_path(IMAGES), images);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    if (tmp[0]) vkl_test_rmtree(tmp);
    return 0;
}

static void config(vkl_train_config *c, const char *out, vkl_lora_kind kind, int conv, int steps)
{
    vkl_train_config_default(c);
    c->model = vkl_test_shared_path(MODEL);
    c->data.images_dir = images;
    c->data.resolution = 64;
    c->data.batch_size = 1;
    c->data.seed = 5;
    c->output = out;
    c->rank = 4;
    c->alpha = 2;
    c->lr = 1e-2f;
    c->max_steps = steps;
    c->network_kind = kind;
    c->network_conv = conv;
    c->quiet = 1;
}

/* progress that asks for a stop after step *user, as a SIGINT handler would */
static void stop_after(void *user, const vkl_train_report *r)
{
    if (r->step == *(const int *)user) vkl_train_request_stop();
}

static int train_with(const vkl_train_config *c, vkl_train_progress_fn progress, void *user)
{
    vkl_ctx *ctx = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    int rc = vkl_train_run(ctx, c, progress, user, &e);
    if (rc < 0) print_error("%s\n", e.msg);
    vkl_test_ctx_done(ctx);
    return rc;
}

static int train(const vkl_train_config *c)
{
    return train_with(c, NULL, NULL);
}

/* The loss column of <stem>.csv. */
static int losses(const char *stem, double *out, int max)
{
    char path[600], line[512];
    snprintf(path, sizeof path, "%s.csv", stem);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    int n = 0;
    if (!fgets(line, sizeof line, f)) n = -1;
    while (n >= 0 && n < max && fgets(line, sizeof line, f)) {
        char *c = strchr(line, ',');
        c = c ? strchr(c + 1, ',') : NULL;
        assert_non_null(c);
        out[n++] = strtod(c + 1, NULL);
    }
    fclose(f);
    return n;
}

/* UNet output with the adapter applied the run-time way vs the training graph. */
/* Random UNet inputs for one 8x8 latent at timestep tv: latents [1,4,8,8],
 * timestep [1] and text states [1,77,D]. */
typedef struct { vkl_tensor *x, *t, *ctx; } unet_inputs;

static unet_inputs random_inputs(vkl_ctx *c, int D, uint64_t seed, float tv)
{
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, seed);
    float *x = malloc(sizeof(float) * 4 * 8 * 8), *txt = malloc(sizeof(float) * 77 * (size_t)D);
    vkl_test_fill(&rng, x, 4 * 8 * 8, -1, 1);
    vkl_test_fill(&rng, txt, 77 * (size_t)D, -1, 1);
    unet_inputs in = {vkl_test_upload(c, VKL_F32, 4, (int64_t[]){1, 4, 8, 8}, x),
                      vkl_test_upload(c, VKL_F32, 1, (int64_t[]){1}, &tv),
                      vkl_test_upload(c, VKL_F32, 3, (int64_t[]){1, 77, D}, txt)};
    free(x);
    free(txt);
    return in;
}

static void free_inputs(unet_inputs *in)
{
    vkl_tensor_free(in->x);
    vkl_tensor_free(in->t);
    vkl_tensor_free(in->ctx);
}

static void compare_forward(const char *path, vkl_lora_kind kind, int conv)
{
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(MODEL), NULL, &src, &e), 0);
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_weights *w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "unet.", VKL_F32, w, &e), 0);
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    assert_int_equal(vkl_lora_targets_from_sd(cfg, &tg, &e), 0);
    vkl_lora l;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    if (vkl_lora_load(path, &lo, &l, &e)) fail_msg("%s", e.msg);
    vkl_lora_targets_free(&tg);
    assert_int_equal(l.n_unmatched, 0);
    const char *mod = vkl_lora_meta_get(&l, "ss_network_module"), *args = vkl_lora_meta_get(&l, "ss_network_args");
    assert_non_null(mod);
    assert_string_equal(mod, "lycoris.kohya");
    assert_non_null(args);
    char algo[64];
    snprintf(algo, sizeof algo, "\"algo\": \"%s\"", kind == VKL_LORA_KIND_DORA ? (conv ? "locon" : "lora")
                                                                                : vkl_lora_kind_name(kind));
    assert_non_null(strstr(args, algo));
    if (kind == VKL_LORA_KIND_DORA) assert_non_null(strstr(args, "\"dora_wd\": \"True\""));
    int nconv = 0;
    for (int i = 0; i < l.n; i++) {
        assert_int_equal(l.m[i].kind, kind);
        nconv += l.m[i].wndim == 4 && l.m[i].wshape[2] == 3;
    }
    assert_true(conv ? nconv > 0 : nconv == 0);

    vkl_lora_use use = {&l, 1.0f, 1.0f};
    vkl_lora_set *plain = NULL, *trained = NULL;
    if (vkl_lora_set_build_ex(c, &use, 1, w, &plain, &e) || vkl_lora_set_build_train(c, &l, &trained, &e))
        fail_msg("%s", e.msg);
    unet_inputs in = random_inputs(c, cfg->unet.cross_attention_dim, 77, 500);
    vkl_tensor *tx = in.x, *tt = in.t, *tc = in.ctx;
    float *y[2], *y0 = NULL;
    for (int k = 0; k < 3; k++) {
        vkl_unet u = {&cfg->unet, w, k == 0 ? plain : k == 1 ? trained : NULL, 0};
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *out = vkl_unet_forward(g, &u, tx, tt, tc, NULL);
        vkl_graph_keep(g, out);
        vkl_test_run_graph(g);
        if (k < 2) y[k] = vkl_test_download(c, out);
        else y0 = vkl_test_download(c, out);
        vkl_graph_free(g);
    }
    double num = 0, den = 0, moved = 0;
    for (int i = 0; i < 4 * 8 * 8; i++) {
        num += ((double)y[0][i] - y[1][i]) * ((double)y[0][i] - y[1][i]);
        den += (double)y[1][i] * y[1][i];
        moved += ((double)y[1][i] - y0[i]) * ((double)y[1][i] - y0[i]);
    }
    print_message("%s: %d modules (%d conv); run-time vs training forward: relative L2 %.3g; adapter moved the "
                  "output by %.3g (relative)\n",
                  vkl_lora_kind_name(kind), l.n, nconv, sqrt(num / den), sqrt(moved / den));
    assert_true(sqrt(num / den) <= 1e-5);
    assert_true(sqrt(moved / den) > 1e-4); /* the training did change the model */
    free(y[0]);
    free(y[1]);
    free(y0);
    free_inputs(&in);
    vkl_lora_set_free(plain);
    vkl_lora_set_free(trained);
    vkl_lora_free(&l);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

static void train_kind(vkl_lora_kind kind, int conv, int checkpointing)
{
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    char out[700], stem[600];
    snprintf(stem, sizeof stem, "%.300s/%s%s", tmp, vkl_lora_kind_name(kind), conv ? "-conv" : "");
    snprintf(out, sizeof out, "%s.safetensors", stem);
    vkl_train_config c;
    config(&c, out, kind, conv, 3);
    c.checkpointing = checkpointing; /* the deltas are then rebuilt in the backward pass */
    assert_int_equal(train(&c), 0);
    double l[8];
    assert_int_equal(losses(stem, l, 8), 3);
    for (int i = 0; i < 3; i++) assert_true(isfinite(l[i]) && l[i] > 0);
    compare_forward(out, kind, conv);
}

static void loha_conv(void **state) { (void)state; train_kind(VKL_LORA_KIND_LOHA, 1, 1); }
static void lokr_conv(void **state) { (void)state; train_kind(VKL_LORA_KIND_LOKR, 1, 0); }
static void dora_linear(void **state) { (void)state; train_kind(VKL_LORA_KIND_DORA, 0, 0); }

static void lokr_resume(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    char a[700], b[700], sa[600], sb[600], st[700];
    snprintf(sa, sizeof sa, "%.300s/ra", tmp);
    snprintf(sb, sizeof sb, "%.300s/rb", tmp);
    snprintf(a, sizeof a, "%s.safetensors", sa);
    snprintf(b, sizeof b, "%s.safetensors", sb);
    snprintf(st, sizeof st, "%s.state", sb);
    vkl_train_config c;
    config(&c, a, VKL_LORA_KIND_LOKR, 1, 3);
    assert_int_equal(train(&c), 0);
    config(&c, b, VKL_LORA_KIND_LOKR, 1, 3);
    /* stopped through the public request, as vklora's Ctrl-C handler does */
    int stop_step = 1;
    int rc = train_with(&c, stop_after, &stop_step);
    assert_true(vkl_train_stop_requested());
    vkl_train_stop_clear();
    assert_false(vkl_train_stop_requested());
    assert_int_equal(rc, 1);
    c.resume = st;
    assert_int_equal(train(&c), 0);
    double la[8], lb[8];
    assert_int_equal(losses(sa, la, 8), 3);
    assert_int_equal(losses(sb, lb, 8), 3);
    for (int i = 0; i < 3; i++) {
        print_message("step %d: loss %.7g uninterrupted, %.7g resumed\n", i + 1, la[i], lb[i]);
        assert_true(la[i] == lb[i]);
    }
}

static int every_layer(void *user, const char *module, int ndim, const int64_t *shape)
{
    (void)user;
    return !strncmp(module, "unet.", 5) && (ndim == 2 || (ndim == 4 && shape[2] == 3));
}

/* Freshly initialised networks of every kind leave the UNet's output as it
 * was (delta W = 0, DoRA's magnitude = the weight's norm). */
static void starts_at_base(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    assert_int_equal(vkl_sd_source_open(vkl_test_shared_path(MODEL), NULL, &src, &e), 0);
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_weights *w = vkl_weights_new();
    assert_int_equal(vkl_sd_load_weights(c, src, "unet.", VKL_F32, w, &e), 0);
    unet_inputs in = random_inputs(c, cfg->unet.cross_attention_dim, 78, 300);
    vkl_tensor *tx = in.x, *tt = in.t, *tc = in.ctx;
    float *base = NULL;
    vkl_lora_kind kinds[] = {VKL_LORA_KIND_LORA, VKL_LORA_KIND_LOHA, VKL_LORA_KIND_LOKR, VKL_LORA_KIND_DORA};
    for (int k = -1; k < 4; k++) {
        vkl_lora l;
        vkl_lora_set *set = NULL;
        if (k >= 0) {
            vkl_lora_init_opts o = {kinds[k], 4, 2, -1, 9, 0};
            if (vkl_lora_init_sd_ex(cfg, every_layer, NULL, &o, &l, &e) ||
                (kinds[k] == VKL_LORA_KIND_DORA && vkl_lora_init_dora_magnitude(c, w, &l, &e)) ||
                vkl_lora_set_build_train(c, &l, &set, &e))
                fail_msg("%s", e.msg);
        }
        vkl_unet u = {&cfg->unet, w, set, 0};
        vkl_graph *g = vkl_graph_new(c);
        vkl_tensor *out = vkl_unet_forward(g, &u, tx, tt, tc, NULL);
        vkl_graph_keep(g, out);
        vkl_test_run_graph(g);
        float *y = vkl_test_download(c, out);
        vkl_graph_free(g);
        if (k < 0) {
            base = y;
            continue;
        }
        double num = 0, den = 0;
        for (int i = 0; i < 4 * 8 * 8; i++) {
            num += ((double)y[i] - base[i]) * ((double)y[i] - base[i]);
            den += (double)base[i] * base[i];
        }
        print_message("%s: %d modules at init, output vs the base model: relative L2 %.3g\n",
                      vkl_lora_kind_name(kinds[k]), l.n, sqrt(num / den));
        /* exact for additive kinds; DoRA's W * (m / ||W||) rounds in f32 */
        assert_true(kinds[k] == VKL_LORA_KIND_DORA ? sqrt(num / den) <= 5e-6 : num == 0);
        free(y);
        vkl_lora_set_free(set);
        vkl_lora_free(&l);
    }
    free(base);
    free_inputs(&in);
    vkl_weights_free(w);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(starts_at_base),
        cmocka_unit_test(loha_conv),
        cmocka_unit_test(lokr_conv),
        cmocka_unit_test(dora_linear),
        cmocka_unit_test(lokr_resume),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
