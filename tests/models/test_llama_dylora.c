/* DyLoRA on tiny-llama: one adapter of rank D trained with the per-step rank
 * draw, written as lm train writes it (PEFT), read back and cut to r in
 * {D/4, D/2, D}, against a plain LoRA trained at rank r alone for the same
 * steps, data and seed: every cut learnt (more than half the plain LoRA's
 * gain over the base model) and its training loss is within 10 % of the
 * plain LoRA's (the figures are printed; the README quotes them). The data
 * is a learnable token chain (each token has one successor; chains start at
 * random tokens). -DSTEPS=N -DVOCAB_USED=N build other sizes by hand. */
#include "llama_check.h"
#include "llama/llama_lora_init.h"
#include "llama/llama_train.h"
#include "lora/lora_dylora.h"

#define B_ 4
#define L_ 16
#ifndef STEPS
#define STEPS 160
#endif
#define NT 7
#define DIM 8
#define UNIT 2
#define ALPHA 8.0f
#define LR 2e-2f
#ifndef VOCAB_USED
#define VOCAB_USED 16
#endif

static const char *const TARGETS[] = {"o_proj", "down_proj", "v_proj", "q_proj", "k_proj", "gate_proj", "up_proj"};

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return *s >> 33;
}

static void make_data(int32_t *ids)
{
    int succ[VOCAB_USED];
    uint64_t s = 5;
    for (int i = 0; i < VOCAB_USED; i++) succ[i] = i;
    for (int i = VOCAB_USED - 1; i > 0; i--) {
        int j = (int)(next(&s) % (uint64_t)(i + 1)), t = succ[i];
        succ[i] = succ[j];
        succ[j] = t;
    }
    for (int b = 0; b < B_; b++) {
        int tok = (int)(next(&s) % VOCAB_USED);
        ids[b * L_] = 1; /* BOS */
        for (int t = 1; t < L_; t++) {
            ids[b * L_ + t] = 100 + tok;
            tok = succ[tok];
        }
    }
}

static vkl_llama_train *trainer(vkl_llama *m, vkl_lora_set *set, const vkl_dylora *dy)
{
    vkl_llama_train_opts to = {.loraplus_ratio = 1, .dylora = dy};
    vkl_adamw_opts_default(&to.adam);
    to.adam.lr = LR;
    to.adam.weight_decay = 0;
    to.adam.max_grad_norm = 1;
    vkl_llama_train *tr = NULL;
    vkl_err e = {{0}};
    if (vkl_llama_train_new(m, set, NULL, B_, L_, &to, &tr, &e)) {
        print_error("train: %s\n", e.msg);
        fail();
    }
    return tr;
}

/* The loss of adapter l on the data (a step at learning rate 0 changes nothing). */
static float loss_of(vkl_llama *m, const vkl_lora *l, const int32_t *ids)
{
    vkl_err e = {{0}};
    vkl_lora_use use = {l, 1.0f, 1.0f};
    vkl_lora_set *set = NULL;
    assert_int_equal(vkl_lora_set_build(m->ctx, &use, 1, &set, &e), 0);
    vkl_llama_train *tr = trainer(m, set, NULL);
    float loss = 0;
    assert_int_equal(vkl_llama_train_step(tr, ids, ids, NULL, 1, 0.0f, &loss, &e), 0);
    vkl_llama_train_free(tr);
    vkl_lora_set_free(set);
    return loss;
}

/* Trains a new adapter of `rank` (DyLoRA with unit when unit > 0) for STEPS steps into *l. */
static void train(vkl_llama *m, int rank, int unit, const int32_t *ids, vkl_lora *l)
{
    vkl_err e = {{0}};
    vkl_llama_lora_opts o = {.targets = TARGETS, .nt = NT, .rank = rank, .alpha = ALPHA, .seed = 3};
    assert_int_equal(vkl_llama_lora_init(m, &o, l, &e), 0);
    if (unit) assert_int_equal(vkl_dylora_mark(l, unit, rank, ALPHA, &e), 0);
    vkl_lora_use use = {l, 1.0f, 1.0f};
    vkl_lora_set *set = NULL;
    vkl_dylora *dy = NULL;
    assert_int_equal(vkl_lora_set_build(m->ctx, &use, 1, &set, &e), 0);
    if (unit) assert_int_equal(vkl_dylora_new(m->ctx, set, l, unit, 11, &dy, &e), 0);
    vkl_llama_train *tr = trainer(m, set, dy);
    for (int t = 1; t <= STEPS; t++) {
        float loss;
        if (dy) assert_int_equal(vkl_dylora_draw(dy, &e), 0);
        if (vkl_llama_train_step(tr, ids, ids, NULL, t, LR, &loss, &e)) {
            print_error("step %d: %s\n", t, e.msg);
            fail();
        }
    }
    for (int i = 0; i < vkl_lora_set_count(set); i++) {
        const vkl_lora_slot *sl = vkl_lora_set_at(set, i);
        vkl_lora_module *mo = (vkl_lora_module *)vkl_lora_find(l, sl->module);
        assert_non_null(mo);
        assert_int_equal(vkl_tensor_download(m->ctx, sl->a_cat, mo->t[VKL_LORA_DOWN].data, VKL_F32, &e), 0);
        assert_int_equal(vkl_tensor_download(m->ctx, sl->b_cat, mo->t[VKL_LORA_UP].data, VKL_F32, &e), 0);
    }
    vkl_llama_train_free(tr);
    vkl_dylora_free(dy);
    vkl_lora_set_free(set);
}

static void dylora_cuts_against_plain_lora(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(LM_DIR "/tiny-llama");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, LM_DIR "/tiny-llama", VKL_F32);
    int32_t ids[B_ * L_];
    make_data(ids);
    vkl_lora dy;
    train(m, DIM, UNIT, ids, &dy);
    vkl_err e = {{0}};
    float base;
    {
        vkl_lora none;
        vkl_llama_lora_opts o = {.targets = TARGETS, .nt = NT, .rank = 2, .alpha = ALPHA, .seed = 3};
        assert_int_equal(vkl_llama_lora_init(m, &o, &none, &e), 0);
        base = loss_of(m, &none, ids); /* up = 0: the base model's loss */
        vkl_lora_free(&none);
    }
    print_message("tiny-llama, %d steps, 7 targets, alpha %g, lr %g: base loss %.4f\n", STEPS, ALPHA, LR, base);
    const int ranks[3] = {DIM / 4, DIM / 2, DIM};
    float ld[3], lp[3];
    for (int k = 0; k < 3; k++) {
        int r = ranks[k];
        vkl_lora cut, plain;
        /* the DyLoRA adapter as lm train writes it (PEFT), read back and cut */
        char path[4200], cfg[4200];
        const char *dir = vkl_test_tmpdir(); /* a new folder each call: the config goes beside the file */
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
        snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
        assert_int_equal(vkl_lora_save_peft(&dy, path, cfg, &e), 0);
        assert_int_equal(vkl_lora_load(path, NULL, &cut, &e), 0);
        assert_true(cut.has_config);
        assert_int_equal(vkl_dylora_cut(&cut, r, &e), 0);
        train(m, r, 0, ids, &plain);
        ld[k] = loss_of(m, &cut, ids);
        lp[k] = loss_of(m, &plain, ids);
        print_message("rank %d: DyLoRA (dim %d, unit %d) cut to %d: loss %.4f; LoRA trained at rank %d alone: %.4f "
                      "(%+.1f %%)\n", r, DIM, UNIT, r, ld[k], r, lp[k], 100.0 * (ld[k] - lp[k]) / lp[k]);
        vkl_lora_free(&cut);
        vkl_lora_free(&plain);
    }
    for (int k = 0; k < 3; k++) {
        /* every cut learnt (more than half the plain LoRA's gain over the base
         * model) and is within 10 % of the LoRA trained at its rank alone */
        assert_true(ld[k] < base - 0.5f * (base - lp[k]));
        assert_true(fabsf(ld[k] - lp[k]) <= 0.10f * lp[k]);
    }
    vkl_lora_free(&dy);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dylora_cuts_against_plain_lora),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
