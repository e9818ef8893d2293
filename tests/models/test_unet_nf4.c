/* The tiny SD UNet on an NF4 base (vkl_sd_load_weights with VKL_NF4): its
 * linear weights and the convolution kernels whose rows (C*kh*kw) are whole
 * blocks of 64 quantised, the other kernels (conv_in) f16; epsilon equals the
 * f32 UNet's whose weights were replaced by the same values on the host
 * (NF4-dequantised or rounded to f16); the change against diffusers'
 * epsilon (refkit) and the weights' bytes are reported. */
#include "vkl_test.h"
#include "quant.h"
#include "sd/sd_weights.h"
#include "sd/unet.h"
#include "ops.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define VEC "refkit/sd/vectors/unet.safetensors"
#define MODEL "refkit/sd/tiny-sd"

static vkl_tensor *upload_ref(vkl_ctx *c, const char *name, int nd, const int64_t *shape)
{
    int64_t n;
    float *x = vkl_test_ref_f32(VEC, name, &n);
    vkl_tensor *t = vkl_test_upload(c, VKL_F32, nd, shape, x);
    assert_int_equal(vkl_tensor_nelem(t), n);
    free(x);
    return t;
}

static vkl_weights *load(vkl_ctx *c, const vkl_sd_source *src, vkl_dtype dt)
{
    vkl_err e = {{0}};
    vkl_weights *w = vkl_weights_new();
    if (vkl_sd_load_weights(c, src, "unet.", dt, w, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    return w;
}

static float *eps_of(vkl_ctx *c, const vkl_sd_config *cfg, vkl_weights *w, int64_t *n)
{
    vkl_err e = {{0}};
    vkl_unet m = {&cfg->unet, w, NULL, 0};
    int64_t ss[4] = {2, 4, 16, 16}, cs[3] = {2, 77, 32}, ts[1] = {2};
    float t[2] = {500, 500};
    vkl_tensor *sample = upload_ref(c, "sample", 4, ss), *ctx = upload_ref(c, "encoder_hidden_states", 3, cs);
    vkl_tensor *tt = vkl_test_upload(c, VKL_F32, 1, ts, t);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *eps = vkl_unet_forward(g, &m, sample, tt, ctx, NULL);
    vkl_graph_keep(g, eps);
    if (vkl_graph_plan(g, &e) || vkl_graph_run(g, &e)) {
        print_error("%s %s\n", e.msg, vkl_graph_error(g));
        fail();
    }
    *n = vkl_tensor_nelem(eps);
    float *out = vkl_test_download(c, eps);
    vkl_graph_free(g);
    vkl_tensor_free(sample);
    vkl_tensor_free(ctx);
    vkl_tensor_free(tt);
    return out;
}

static void unet_nf4(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_sd_source *src = NULL;
    vkl_sd_source_opts so = {NULL, 0};
    if (vkl_sd_source_open(vkl_test_shared_path(MODEL), &so, &src, &e)) {
        print_error("%s\n", e.msg);
        fail();
    }
    const vkl_sd_config *cfg = vkl_sd_source_config(src);
    vkl_weights *q = load(c, src, VKL_NF4), *h = load(c, src, VKL_F16), *r = load(c, src, VKL_F32);
    /* the f32 copy made to hold the NF4 base's values */
    int nq = 0, nqc = 0, nh = 0;
    for (int i = 0; i < vkl_weights_count(r); i++) {
        const char *name;
        vkl_tensor *t = vkl_weights_at(r, i, &name), *tq = vkl_weights_find(q, name);
        assert_non_null(tq);
        if (t->ndim < 2) {
            assert_int_equal(tq->dtype, VKL_F32);
            continue;
        }
        int64_t n = vkl_tensor_nelem(t);
        float *w = vkl_test_download(c, t);
        if (t->ndim == 2 || (t->ndim == 4 && t->shape[1] * t->shape[2] * t->shape[3] % 64 == 0)) {
            assert_int_equal(tq->dtype, VKL_NF4);
            nqc += t->ndim == 4;
            vkl_test_round_to(VKL_NF4, w, (size_t)n);
            nq++;
        } else {
            assert_int_equal(tq->dtype, VKL_F16);
            nh++;
            vkl_test_round_to(VKL_F16, w, (size_t)n);
        }
        assert_int_equal(vkl_tensor_upload(c, t, w, VKL_F32, &e), 0);
        free(w);
    }
    assert_true(nq > nqc && nqc > 0);
    int64_t n, nr;
    float *got = eps_of(c, cfg, q, &n), *want = eps_of(c, cfg, r, &nr), *ref = vkl_test_ref_f32(VEC, "eps_t500", &nr);
    assert_int_equal(nr, n);
    vkl_test_assert_scaled("nf4 UNet eps vs f32 UNet on the same values", got, want, (size_t)n, 1e-5);
    double se = 0, sw = 0;
    for (int64_t i = 0; i < n; i++) {
        se += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        sw += (double)ref[i] * ref[i];
    }
    printf("  tiny UNet: %d weights in NF4 (%d of them convolution kernels), %d kernels f16; weights f16 %llu "
           "bytes, nf4 %llu bytes; eps (t=500) vs diffusers' f32: relative rms change %.3g\n",
           nq, nqc, nh, (unsigned long long)vkl_weights_bytes(h), (unsigned long long)vkl_weights_bytes(q), sqrt(se / sw));
    assert_true(vkl_weights_bytes(q) < vkl_weights_bytes(h));
    assert_true(sqrt(se / sw) > 1e-4 && sqrt(se / sw) < 0.3);
    free(got); free(want); free(ref);
    vkl_weights_free(q);
    vkl_weights_free(h);
    vkl_weights_free(r);
    vkl_sd_source_close(src);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unet_nf4),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
