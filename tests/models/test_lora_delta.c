/* delta W of every module kind on hand-computed small cases, read from files
 * written with the LyCORIS / kohya / PEFT key spellings. */
#include "vkl_test.h"

#include "io/safetensors.h"
#include "lora/lora_delta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *key;
    int ndim;
    int64_t shape[4];
    float v[8];
} entry;

/* Writes the entries to a file, loads it without targets, returns module 0's delta. */
static void check(const char *what, const entry *ents, int n, const float *base, const double *want, int nwant,
                  vkl_lora_kind kind)
{
    const char *dir = vkl_test_tmpdir();
    char p[512];
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e;
    for (int i = 0; i < n; i++)
        if (vkl_st_writer_add(w, ents[i].key, VKL_F32, ents[i].ndim, ents[i].shape, ents[i].v, &e))
            fail_msg("%s", e.msg);
    if (vkl_st_writer_finish(w, p, &e)) fail_msg("%s", e.msg);
    vkl_st_writer_free(w);
    vkl_lora l;
    if (vkl_lora_load(p, NULL, &l, &e)) fail_msg("%s: %s", what, e.msg);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.m[0].kind, kind);
    assert_int_equal((int)vkl_lora_wnelem(&l.m[0]), nwant);
    double got[16];
    if (vkl_lora_delta(&l.m[0], base, got, &e)) fail_msg("%s: %s", what, e.msg);
    for (int i = 0; i < nwant; i++)
        if (fabs(got[i] - want[i]) > 1e-12 * (1 + fabs(want[i])))
            fail_msg("%s: element %d is %.17g, expected %.17g", what, i, got[i], want[i]);
    vkl_lora_free(&l);
    vkl_test_rmtree(dir);
}

static void test_lora(void **state)
{
    (void)state;
    /* 0.5 * [[1],[2]] @ [[3,4]] */
    entry lin[] = {{"lora_unet_x.lora_up.weight", 2, {2, 1}, {1, 2}},
                   {"lora_unet_x.lora_down.weight", 2, {1, 2}, {3, 4}},
                   {"lora_unet_x.alpha", 0, {0}, {0.5f}}};
    check("linear", lin, 3, NULL, (double[]){1.5, 2, 3, 4}, 4, VKL_LORA_KIND_LORA);
    /* conv 2x2 kernel, no alpha (scale 1): 2 * [1,2,3,4] */
    entry conv[] = {{"lora_unet_c.lora_up.weight", 4, {1, 1, 1, 1}, {2}},
                    {"lora_unet_c.lora_down.weight", 4, {1, 1, 2, 2}, {1, 2, 3, 4}}};
    check("conv", conv, 2, NULL, (double[]){2, 4, 6, 8}, 4, VKL_LORA_KIND_LORA);
    /* Tucker LoCon: up 3, mid [1,2,3,4], down 2 -> 6 * [1,2,3,4] */
    entry mid[] = {{"lora_unet_c.lora_up.weight", 4, {1, 1, 1, 1}, {3}},
                   {"lora_unet_c.lora_mid.weight", 4, {1, 1, 2, 2}, {1, 2, 3, 4}},
                   {"lora_unet_c.lora_down.weight", 4, {1, 1, 1, 1}, {2}}};
    check("tucker locon", mid, 3, NULL, (double[]){6, 12, 18, 24}, 4, VKL_LORA_KIND_LORA);
    /* diffusers spelling, folded: scale 1 */
    entry dif[] = {{"unet.a.to_q.lora.up.weight", 2, {2, 1}, {1, 2}},
                   {"unet.a.to_q.lora.down.weight", 2, {1, 2}, {3, 4}}};
    check("diffusers", dif, 2, NULL, (double[]){3, 4, 6, 8}, 4, VKL_LORA_KIND_LORA);
    /* attention-processor spelling */
    entry proc[] = {{"unet.a.attn1.processor.to_out_lora.up.weight", 2, {2, 1}, {1, 2}},
                    {"unet.a.attn1.processor.to_out_lora.down.weight", 2, {1, 2}, {3, 4}}};
    check("processor", proc, 2, NULL, (double[]){3, 4, 6, 8}, 4, VKL_LORA_KIND_LORA);
}

static void test_loha(void **state)
{
    (void)state;
    /* ([[1],[2]] @ [[1,1]]) * ([[3],[1]] @ [[1,2]]) = [[1,1],[2,2]] * [[3,6],[1,2]] */
    entry h[] = {{"lora_unet_x.hada_w1_a", 2, {2, 1}, {1, 2}}, {"lora_unet_x.hada_w1_b", 2, {1, 2}, {1, 1}},
                 {"lora_unet_x.hada_w2_a", 2, {2, 1}, {3, 1}}, {"lora_unet_x.hada_w2_b", 2, {1, 2}, {1, 2}},
                 {"lora_unet_x.alpha", 0, {0}, {1}}};
    check("loha", h, 5, NULL, (double[]){3, 6, 2, 4}, 4, VKL_LORA_KIND_LOHA);
    /* Tucker: P1[p,0,0,l] = t1[l] * w1b * w1a[p] = [[6,12],[3,6]]; P2 = [[1,-1],[1,-1]];
     * alpha 2 over rank 1 doubles it */
    entry t[] = {{"lora_unet_x.hada_t1", 4, {1, 1, 1, 2}, {1, 2}}, {"lora_unet_x.hada_w1_a", 2, {1, 2}, {2, 1}},
                 {"lora_unet_x.hada_w1_b", 2, {1, 1}, {3}},        {"lora_unet_x.hada_t2", 4, {1, 1, 1, 2}, {1, -1}},
                 {"lora_unet_x.hada_w2_a", 2, {1, 2}, {1, 1}},     {"lora_unet_x.hada_w2_b", 2, {1, 1}, {1}},
                 {"lora_unet_x.alpha", 0, {0}, {2}}};
    check("loha tucker", t, 7, NULL, (double[]){12, -24, 6, -12}, 4, VKL_LORA_KIND_LOHA);
}

static void test_lokr(void **state)
{
    (void)state;
    /* kron([[1,2]], [[1],[3]]) = [[1,2],[3,6]]; full factors: scale 1 whatever alpha says */
    entry k[] = {{"lora_unet_x.lokr_w1", 2, {1, 2}, {1, 2}}, {"lora_unet_x.lokr_w2", 2, {2, 1}, {1, 3}},
                 {"lora_unet_x.alpha", 0, {0}, {8}}};
    check("lokr", k, 3, NULL, (double[]){1, 2, 3, 6}, 4, VKL_LORA_KIND_LOKR);
    /* factored: w1 = [[1]] @ [[1,2]], w2 = [[1],[3]] @ [[1]], alpha 2 / rank 1 */
    entry f[] = {{"lora_unet_x.lokr_w1_a", 2, {1, 1}, {1}}, {"lora_unet_x.lokr_w1_b", 2, {1, 2}, {1, 2}},
                 {"lora_unet_x.lokr_w2_a", 2, {2, 1}, {1, 3}}, {"lora_unet_x.lokr_w2_b", 2, {1, 1}, {1}},
                 {"lora_unet_x.alpha", 0, {0}, {2}}};
    check("lokr factored", f, 5, NULL, (double[]){2, 4, 6, 12}, 4, VKL_LORA_KIND_LOKR);
    /* conv: kron([[1,2]], w2 [1,1,1,2] = [1,3]) -> [1,2,1,2] = [1,3, 2,6] */
    entry c[] = {{"lora_unet_x.lokr_w1", 2, {1, 2}, {1, 2}}, {"lora_unet_x.lokr_w2", 4, {1, 1, 1, 2}, {1, 3}}};
    check("lokr conv", c, 2, NULL, (double[]){1, 3, 2, 6}, 4, VKL_LORA_KIND_LOKR);
    /* Tucker w2: t2 [1,1,1,2] = [1,2], w2_a [1,2] = [1,1] (r x b), w2_b [1,1] = [3] -> w2 [2,1,1,2] = [[3,6],[3,6]];
     * kron with w1 [[2]] -> 2*w2; alpha 1 / rank 1 */
    entry t[] = {{"lora_unet_x.lokr_w1", 2, {1, 1}, {2}}, {"lora_unet_x.lokr_t2", 4, {1, 1, 1, 2}, {1, 2}},
                 {"lora_unet_x.lokr_w2_a", 2, {1, 2}, {1, 1}}, {"lora_unet_x.lokr_w2_b", 2, {1, 1}, {3}},
                 {"lora_unet_x.alpha", 0, {0}, {1}}};
    check("lokr tucker", t, 5, NULL, (double[]){6, 12, 6, 12}, 4, VKL_LORA_KIND_LOKR);
}

/* W = [[3,0],[0,1]], s B A = [[0,4],[0,0]], V = W + sBA = [[3,4],[0,1]].
 * Output axis (PEFT): row norms [5,1], m = [10,2] -> W' = [[6,8],[0,2]].
 * Input axis (LyCORIS wd_on_out=False): column norms [3, sqrt 17], m = [5,3]
 * -> W' = [[5, 12/sqrt17], [0, 3/sqrt17]]. delta = W' - W. */
static void test_dora(void **state)
{
    (void)state;
    const float w[4] = {3, 0, 0, 1};
    entry peft[] = {{"base_model.model.l.lora_B.weight", 2, {2, 1}, {1, 0}},
                    {"base_model.model.l.lora_A.weight", 2, {1, 2}, {0, 4}},
                    {"base_model.model.l.lora_magnitude_vector", 1, {2}, {10, 2}}};
    check("dora output axis", peft, 3, w, (double[]){3, 8, 0, 1}, 4, VKL_LORA_KIND_DORA);
    entry ly[] = {{"lora_unet_l.lora_up.weight", 2, {2, 1}, {1, 0}},
                  {"lora_unet_l.lora_down.weight", 2, {1, 2}, {0, 4}},
                  {"lora_unet_l.dora_scale", 2, {1, 2}, {5, 3}}};
    double s17 = sqrt(17.0);
    check("dora input axis", ly, 3, w, (double[]){2, 12 / s17, 0, 3 / s17 - 1}, 4, VKL_LORA_KIND_DORA);
    /* without the base weight DoRA has no delta */
    entry *x = peft;
    const char *dir = vkl_test_tmpdir();
    char p[512];
    snprintf(p, sizeof p, "%s/d.safetensors", dir);
    vkl_st_writer *wr = vkl_st_writer_new();
    vkl_err e;
    for (int i = 0; i < 3; i++) vkl_st_writer_add(wr, x[i].key, VKL_F32, x[i].ndim, x[i].shape, x[i].v, &e);
    assert_int_equal(vkl_st_writer_finish(wr, p, &e), 0);
    vkl_st_writer_free(wr);
    vkl_lora l;
    assert_int_equal(vkl_lora_load(p, NULL, &l, &e), 0);
    double d[4];
    assert_int_equal(vkl_lora_delta(&l.m[0], NULL, d, &e), -1);
    assert_non_null(strstr(e.msg, "base weight"));
    vkl_lora_free(&l);
    vkl_test_rmtree(dir);
}

static void test_bad_modules(void **state)
{
    (void)state;
    static const struct {
        entry e[3];
        int n;
        const char *frag;
    } cases[] = {
        {{{"lora_unet_x.lora_up.weight", 2, {2, 3}, {0}}, {"lora_unet_x.lora_down.weight", 2, {2, 2}, {0}}}, 2, "does not fit"},
        {{{"lora_unet_x.hada_w1_a", 2, {2, 1}, {0}}, {"lora_unet_x.hada_w1_b", 2, {1, 2}, {0}}}, 2, "incomplete LoHa"},
        {{{"lora_unet_x.lokr_w1", 2, {1, 1}, {0}}}, 1, "lokr_w2"},
        {{{"lora_unet_x.lora_up.weight", 2, {2, 1}, {0}}, {"lora_unet_x.lora_down.weight", 2, {1, 2}, {0}},
          {"lora_unet_x.hada_w1_a", 2, {2, 1}, {0}}}, 3, "mixes"},
        {{{"lora_unet_x.alpha", 0, {0}, {1}}}, 1, "no factor"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const char *dir = vkl_test_tmpdir();
        char p[512];
        snprintf(p, sizeof p, "%s/b.safetensors", dir);
        vkl_st_writer *w = vkl_st_writer_new();
        vkl_err e;
        for (int i = 0; i < cases[c].n; i++)
            vkl_st_writer_add(w, cases[c].e[i].key, VKL_F32, cases[c].e[i].ndim, cases[c].e[i].shape, cases[c].e[i].v, &e);
        assert_int_equal(vkl_st_writer_finish(w, p, &e), 0);
        vkl_st_writer_free(w);
        vkl_lora l;
        assert_int_equal(vkl_lora_load(p, NULL, &l, &e), -1);
        printf("expected error: %s\n", e.msg);
        if (!strstr(e.msg, cases[c].frag) || !strstr(e.msg, "lora_unet_x")) fail_msg("case %zu: %s", c, e.msg);
        vkl_test_rmtree(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lora), cmocka_unit_test(test_loha), cmocka_unit_test(test_lokr),
        cmocka_unit_test(test_dora), cmocka_unit_test(test_bad_modules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
