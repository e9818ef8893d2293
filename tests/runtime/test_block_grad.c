/* A tiny block differentiated end to end: x [2,6,3,5] -> group norm (3
 * groups, f16 gamma/beta) + SiLU -> tokens [2,15,6] (a permuted view) ->
 * linear 6->8 -> layer norm -> GEGLU -> sum. The device gradients w.r.t. x and
 * the group norm's gamma against central finite differences of the chained
 * double-precision CPU references, plain and as a checkpoint segment. */
#include "grad_check.h"
#include "ops.h"
#include "ref/vkl_ref.h"

#include <string.h>

enum { N = 2, C = 6, S = 15, O = 8, G = 3 };

typedef struct {
    double x[N * C * S], gg[C], gb[C], w[O * C], b[O], lg[O], lb[O];
} block;

static double block_loss(void *u)
{
    block *k = u;
    double h1[N * C * S], t[N * S * C], h2[N * S * O], h3[N * S * O], h4[N * S * O / 2];
    vkl_ref_group_norm_f64(k->x, N, C, S, G, 1e-5, k->gg, k->gb, 1, h1);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int s = 0; s < S; s++) t[(n * S + s) * C + c] = h1[(n * C + c) * S + s];
    for (int r = 0; r < N * S; r++)
        for (int o = 0; o < O; o++) {
            double a = k->b[o];
            for (int c = 0; c < C; c++) a += t[r * C + c] * k->w[o * C + c];
            h2[r * O + o] = a;
        }
    vkl_ref_row_norm_f64(0, h2, N * S, O, k->lg, k->lb, 1e-5, h3);
    vkl_ref_geglu_f64(h3, N * S, O / 2, h4);
    double s = 0;
    for (int i = 0; i < N * S * O / 2; i++) s += h4[i];
    return s;
}

static void block_grad_matches_finite_differences(void **state)
{
    (void)state;
    vkl_test_rng rng;
    vkl_test_rng_seed(&rng, 701);
    block k;
    float xf[N * C * S], ggf[C], gbf[C], wf[O * C], bf[O], lgf[O], lbf[O];
    vkl_test_fill(&rng, xf, N * C * S, -2, 2);
    vkl_test_fill(&rng, ggf, C, 0.5f, 1.5f);
    vkl_test_fill(&rng, gbf, C, -0.5f, 0.5f);
    vkl_test_fill(&rng, wf, O * C, -1, 1);
    vkl_test_fill(&rng, bf, O, -0.5f, 0.5f);
    vkl_test_fill(&rng, lgf, O, 0.5f, 1.5f);
    vkl_test_fill(&rng, lbf, O, -0.5f, 0.5f);
    opc_round_to(VKL_F16, ggf, C);
    opc_round_to(VKL_F16, gbf, C);
    for (int i = 0; i < N * C * S; i++) k.x[i] = xf[i];
    for (int i = 0; i < C; i++) k.gg[i] = ggf[i], k.gb[i] = gbf[i];
    for (int i = 0; i < O * C; i++) k.w[i] = wf[i];
    for (int i = 0; i < O; i++) k.b[i] = bf[i], k.lg[i] = lgf[i], k.lb[i] = lbf[i];
    double want_x[N * C * S], want_g[C];
    /* the numeric gradients */
    for (int i = 0; i < N * C * S; i++) {
        double keep = k.x[i], h = 1e-6;
        k.x[i] = keep + h;
        double lp = block_loss(&k);
        k.x[i] = keep - h;
        double lm = block_loss(&k);
        k.x[i] = keep;
        want_x[i] = (lp - lm) / (2 * h);
    }
    for (int i = 0; i < C; i++) {
        double keep = k.gg[i], h = 1e-6;
        k.gg[i] = keep + h;
        double lp = block_loss(&k);
        k.gg[i] = keep - h;
        double lm = block_loss(&k);
        k.gg[i] = keep;
        want_g[i] = (lp - lm) / (2 * h);
    }
    /* both profiles; the second run also recomputes the block as a checkpoint segment */
    for (int p = 0; p < vkl_test_profile_count; p++) {
        vkl_ctx *c = vkl_test_ctx(vkl_test_profiles[p]);
        int64_t xs[4] = {N, C, 3, 5}, cs[1] = {C}, ws[2] = {O, C}, os[1] = {O};
        vkl_tensor *X = opc_upload_f32(c, VKL_F32, 4, xs, xf), *GG = opc_upload_f32(c, VKL_F16, 1, cs, ggf);
        vkl_tensor *GB = opc_upload_f32(c, VKL_F16, 1, cs, gbf), *W = opc_upload_f32(c, VKL_F32, 2, ws, wf);
        vkl_tensor *B = opc_upload_f32(c, VKL_F32, 1, os, bf), *LG = opc_upload_f32(c, VKL_F32, 1, os, lgf);
        vkl_tensor *LB = opc_upload_f32(c, VKL_F32, 1, os, lbf);
        vkl_graph *g = vkl_graph_new(c);
        if (p == 1) vkl_graph_segment_begin(g);
        vkl_tensor *h = vkl_group_norm(g, X, G, 1e-5f, GG, GB, 1);
        h = vkl_permute(g, vkl_reshape(g, h, 3, (int64_t[]){N, C, S}), (int[]){0, 2, 1});
        h = vkl_geglu(g, vkl_layer_norm(g, vkl_linear(g, h, W, B), LG, LB, 1e-5f));
        if (p == 1) vkl_graph_segment_end(g);
        vkl_tensor *loss = vkl_sum_rows(g, vkl_reshape(g, h, 2, (int64_t[]){1, N * S * O / 2}));
        vkl_tensor *wrt[2] = {X, GG};
        float *got[2];
        gc_run_backward(c, g, loss, NULL, wrt, 2, got);
        char what[96];
        snprintf(what, sizeof what, "block d x (%s%s)", vkl_ctx_caps(c)->profile, p == 1 ? ", checkpointed" : "");
        gc_assert(what, got[0], want_x, N * C * S, 2e-4);
        snprintf(what, sizeof what, "block d group-norm gamma (%s)", vkl_ctx_caps(c)->profile);
        gc_assert(what, got[1], want_g, C, 2e-4);
        free(got[0]);
        free(got[1]);
        vkl_graph_free(g);
        vkl_tensor_free(X); vkl_tensor_free(GG); vkl_tensor_free(GB); vkl_tensor_free(W);
        vkl_tensor_free(B); vkl_tensor_free(LG); vkl_tensor_free(LB);
        vkl_test_ctx_done(c);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(block_grad_matches_finite_differences),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
