/* MSE loss (plain and per-sample weighted, as min-SNR weighting uses it)
 * against the SD training vectors, and its gradient against the closed form. */
#include "vkl_test.h"
#include "ops.h"
#include "vkl.h"

#include <stdlib.h>

#define VEC "refkit/sd/vectors/train_lora.safetensors"

static vkl_tensor *up_ref(vkl_ctx *c, const char *name, int nd, const int64_t *shape, float **host)
{
    int64_t n;
    float *x = vkl_test_ref_f32(VEC, name, &n);
    vkl_err e = {{0}};
    vkl_tensor *t = vkl_tensor_new(c, VKL_F32, nd, shape, &e);
    assert_int_equal(vkl_tensor_nelem(t), n);
    assert_int_equal(vkl_tensor_upload(c, t, x, VKL_F32, &e), 0);
    if (host) *host = x;
    else free(x);
    return t;
}

static void mse_matches_reference(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(VEC);
    vkl_ctx *c = vkl_test_ctx(NULL);
    int64_t s[4] = {2, 4, 16, 16}, ws[1] = {2};
    float *pred_h, *tgt_h;
    vkl_tensor *pred = up_ref(c, "pred", 4, s, &pred_h), *tgt = up_ref(c, "target", 4, s, &tgt_h);
    vkl_tensor *w = up_ref(c, "minsnr_weight", 1, ws, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_tensor *per = NULL;
    vkl_tensor *loss = vkl_mse_loss(g, pred, tgt, NULL, &per);
    vkl_tensor *wloss = vkl_mse_loss(g, pred, tgt, w, NULL);
    vkl_tensor *gp;
    vkl_err e = {{0}};
    assert_int_equal(vkl_graph_backward(g, loss, NULL, &pred, 1, &gp, &e), 0);
    vkl_graph_keep(g, loss);
    vkl_graph_keep(g, per);
    vkl_graph_keep(g, wloss);
    vkl_graph_keep(g, gp);
    assert_int_equal(vkl_graph_plan(g, &e), 0);
    assert_int_equal(vkl_graph_run(g, &e), 0);
    int64_t n;
    float got[2], *want;
    assert_int_equal(vkl_tensor_download(c, loss, got, VKL_F32, &e), 0);
    want = vkl_test_ref_f32(VEC, "loss", &n);
    vkl_test_assert_scaled("loss", got, want, 1, 1e-6);
    free(want);
    assert_int_equal(vkl_tensor_download(c, per, got, VKL_F32, &e), 0);
    want = vkl_test_ref_f32(VEC, "loss_per_sample", &n);
    vkl_test_assert_scaled("loss_per_sample", got, want, 2, 1e-6);
    free(want);
    assert_int_equal(vkl_tensor_download(c, wloss, got, VKL_F32, &e), 0);
    want = vkl_test_ref_f32(VEC, "loss_minsnr5", &n);
    vkl_test_assert_scaled("loss_minsnr5", got, want, 1, 1e-6);
    free(want);
    float *dg = malloc(sizeof(float) * 2048), *dw = malloc(sizeof(float) * 2048);
    assert_int_equal(vkl_tensor_download(c, gp, dg, VKL_F32, &e), 0);
    for (int i = 0; i < 2048; i++) dw[i] = 2.0f * (pred_h[i] - tgt_h[i]) / 2048.0f;
    vkl_test_assert_scaled("d loss / d pred", dg, dw, 2048, 1e-6);
    free(dg); free(dw); free(pred_h); free(tgt_h);
    vkl_graph_free(g);
    vkl_tensor_free(pred); vkl_tensor_free(tgt); vkl_tensor_free(w);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(mse_matches_reference)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
