/* (IA)^3 on tiny-llama (refkit/lm/tiny-llama; the refkit has no IA3 vectors,
 * so every expected value is exactly known from its definition):
 *   - forward with random vectors on all seven projections (output scaling on
 *     attention and gate, input scaling on up/down) equals the base model with
 *     its weights scaled on the host, rows by output vectors and columns by
 *     input vectors; multiplier 0 is the base model bit for bit; multiplier
 *     0.5 equals weights scaled by 1 + 0.5 (l - 1); baking through
 *     vkl_lora_merge_weights gives the same logits, also for IA3 wrapping a
 *     LoRA adapter (merged: LoRA added, then the IA3 scaling);
 *   - training gradients of the vectors against central finite differences
 *     of the loss (lr 0 steps), and a few AdamW steps lower the loss;
 *   - the trained adapter saved as PEFT (keys, shapes, adapter_config.json
 *     checked against PEFT's IA3 rules) reads back identically, with the
 *     config's list and regex forms of feedforward_modules, and bad configs
 *     are refused naming the module;
 *   - `vklora lm generate --lora DIR` with the saved adapter prints the text
 *     of the library's own greedy generation with the same vectors;
 *   - what has no IA3 form (delta W, combine, the generic adapter set, kohya,
 *     mixed PEFT files) refuses it with a message;
 *   - an SD checkpoint baked with IA3 vectors (sd_bake) holds W * l exactly. */
#include "llama_check.h"
#include "llama/llama_generate.h"
#include "llama/llama_train.h"
#include "lora/lora_combine.h"
#include "lora/lora_delta.h"
#include "lora/lora_merge_weights.h"
#include "sd/sd_bake.h"
#include "tokenizer/sp_bpe.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>
#include <sys/wait.h>

#define MODEL LM_DIR "/tiny-llama"

static const char *const ALL[] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
static const char *const FF[] = {"up_proj", "down_proj"};

static void ia3_init(vkl_llama *m, const char *const *t, int nt, const char *const *f, int nf, vkl_lora *l)
{
    vkl_err e = {{0}};
    if (vkl_llama_ia3_init(m, t, nt, f, nf, l, &e)) {
        print_error("ia3 init: %s\n", e.msg);
        fail();
    }
}

static void randomize(vkl_lora *l, uint64_t seed, float lo, float hi)
{
    vkl_test_rng r;
    vkl_test_rng_seed(&r, seed);
    for (int i = 0; i < l->n; i++)
        vkl_test_fill(&r, l->m[i].t[VKL_LORA_IA3].data, vkl_lora_tensor_nelem(&l->m[i].t[VKL_LORA_IA3]), lo, hi);
}

static vkl_llama_ia3 *ia3_build(vkl_llama *m, const vkl_lora *l, float mult)
{
    vkl_err e = {{0}};
    vkl_lora_use u = {l, mult, mult};
    vkl_llama_ia3 *d = NULL;
    if (vkl_llama_ia3_build(m, &u, 1, &d, &e)) {
        print_error("ia3 build: %s\n", e.msg);
        fail();
    }
    return d;
}

static float *logits_with(vkl_ctx *c, vkl_llama *m, const vkl_llama_ia3 *d, const vkl_lora_set *set,
                          const int32_t *ids, int L)
{
    vkl_tensor *tid = lm_ids(c, ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_llama_fwd o = {.ia3 = d, .lora = set, .mask = mask, .explicit_attn = 1};
    vkl_tensor *lg = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, lg);
    lm_plan(g);
    lm_run(g);
    float *out = lm_download(c, lg);
    vkl_graph_free(g);
    vkl_tensor_free(tid);
    vkl_tensor_free(mask);
    return out;
}

static float *logits_of(vkl_ctx *c, vkl_llama *m, const vkl_llama_ia3 *d, const int32_t *ids, int L)
{
    return logits_with(c, m, d, NULL, ids, L);
}

/* The model's weights times 1 + mult (l - 1), on the host in double. */
static void scale_weights(vkl_ctx *c, vkl_llama *m, const vkl_lora *l, double mult)
{
    vkl_err e = {{0}};
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *mo = &l->m[i];
        char wn[160];
        snprintf(wn, sizeof wn, "%s.weight", mo->name);
        vkl_tensor *w = vkl_weights_find(m->w, wn);
        assert_non_null(w);
        float *h = lm_download(c, w);
        int64_t O = w->shape[0], I = w->shape[1];
        const float *v = mo->t[VKL_LORA_IA3].data;
        for (int64_t o = 0; o < O; o++)
            for (int64_t k = 0; k < I; k++)
                h[o * I + k] = (float)(h[o * I + k] * (1.0 + mult * (v[mo->on_input ? k : o] - 1.0)));
        assert_int_equal(vkl_tensor_upload(c, w, h, VKL_F32, &e), 0);
        free(h);
    }
}

static const int32_t IDS[] = {1, 415, 23, 977, 5, 301, 64, 812, 99, 4, 250};
#define NIDS 11

static void test_forward(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    size_t nl = (size_t)NIDS * m->cfg.vocab;
    vkl_lora l;
    ia3_init(m, ALL, 7, FF, 2, &l);
    assert_int_equal(l.n, 7 * m->cfg.layers);
    randomize(&l, 11, 0.5f, 1.5f);
    float *base = logits_of(c, m, NULL, IDS, NIDS);
    const float mults[] = {1.0f, 0.5f, 0.0f};
    float *run[3];
    for (int k = 0; k < 3; k++) {
        vkl_llama_ia3 *d = ia3_build(m, &l, mults[k]);
        run[k] = logits_of(c, m, d, IDS, NIDS);
        vkl_llama_ia3_free(d);
    }
    /* multiplier 0: every vector is exactly 1 */
    lm_expect("multiplier 0 vs base", run[2], base, nl, 0.0);
    double spread = vkl_test_max_abs_diff(run[0], base, nl);
    printf("  IA3 moves the logits by up to %.3g\n", spread);
    assert_true(spread > 0.05);
    for (int k = 0; k < 2; k++) {
        vkl_llama *ms = lm_load(c, MODEL, VKL_F32);
        scale_weights(c, ms, &l, mults[k]);
        float *want = logits_of(c, ms, NULL, IDS, NIDS);
        lm_expect(k ? "mult 0.5 vs host-scaled weights" : "mult 1 vs host-scaled weights", run[k], want, nl, 2e-5);
        free(want);
        vkl_llama_free(ms);
        /* baked by the library */
        ms = lm_load(c, MODEL, VKL_F32);
        vkl_err e = {{0}};
        vkl_lora_use u = {&l, mults[k], mults[k]};
        if (vkl_lora_merge_weights(c, ms->w, &u, 1, &e)) {
            print_error("merge: %s\n", e.msg);
            fail();
        }
        want = logits_of(c, ms, NULL, IDS, NIDS);
        lm_expect(k ? "mult 0.5 vs merged weights" : "mult 1 vs merged weights", run[k], want, nl, 2e-5);
        free(want);
        vkl_llama_free(ms);
    }
    /* IA3 around a LoRA adapter's layers at run time = LoRA merged, then the IA3 scaling */
    vkl_lora lr;
    vkl_err e = {{0}};
    assert_int_equal(vkl_lora_load(vkl_test_shared_path(LM_DIR "/tiny-llama-lora/adapter_model.safetensors"), NULL,
                                   &lr, &e), 0);
    vkl_lora_use both[2] = {{&lr, 1.0f, 1.0f}, {&l, 1.0f, 1.0f}};
    vkl_lora_set *set = NULL;
    assert_int_equal(vkl_lora_set_build(c, &both[0], 1, &set, &e), 0);
    vkl_llama_ia3 *d = ia3_build(m, &l, 1.0f);
    float *mixed = logits_with(c, m, d, set, IDS, NIDS);
    vkl_llama *mm = lm_load(c, MODEL, VKL_F32);
    if (vkl_lora_merge_weights(c, mm->w, both, 2, &e)) {
        print_error("merge: %s\n", e.msg);
        fail();
    }
    float *want = logits_of(c, mm, NULL, IDS, NIDS);
    lm_expect("IA3 + LoRA vs both merged", mixed, want, nl, 2e-5);
    free(want);
    free(mixed);
    vkl_llama_free(mm);
    vkl_llama_ia3_free(d);
    vkl_lora_set_free(set);
    vkl_lora_free(&lr);
    for (int k = 0; k < 3; k++) free(run[k]);
    free(base);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

typedef struct trainer {
    vkl_llama_ia3 *d;
    vkl_llama_train *s;
    int32_t ids[2 * 12], labels[2 * 12];
    int t;
} trainer;

static void trainer_new(vkl_llama *m, const vkl_lora *l, trainer *tr)
{
    vkl_err e = {{0}};
    tr->d = ia3_build(m, l, 1.0f);
    vkl_llama_train_opts o = {0};
    vkl_adamw_opts_default(&o.adam);
    o.adam.weight_decay = 0;
    o.ia3 = tr->d;
    if (vkl_llama_train_new(m, NULL, NULL, 2, 12, &o, &tr->s, &e)) {
        print_error("train: %s\n", e.msg);
        fail();
    }
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 5);
    for (int i = 0; i < 24; i++) tr->ids[i] = tr->labels[i] = vkl_test_rng_int(&r, 3, m->cfg.vocab - 1);
    tr->labels[0] = VKL_LLAMA_IGNORE;
    tr->t = 0;
}

static float step(trainer *tr, float lr)
{
    vkl_err e = {{0}};
    float loss = 0;
    if (vkl_llama_train_step(tr->s, tr->ids, tr->labels, NULL, ++tr->t, lr, &loss, &e)) {
        print_error("step: %s\n", e.msg);
        fail();
    }
    return loss;
}

static void test_gradients(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    vkl_lora l;
    ia3_init(m, NULL, 0, NULL, 0, &l); /* PEFT's LLaMA defaults */
    assert_int_equal(l.n, 3 * m->cfg.layers);
    randomize(&l, 3, 0.6f, 1.4f);
    trainer tr;
    trainer_new(m, &l, &tr);
    assert_int_equal(vkl_llama_train_count(tr.s), 3 * m->cfg.layers);
    assert_string_equal(vkl_llama_train_key(tr.s, 0), "base_model.model.model.layers.0.self_attn.k_proj.ia3_l");
    assert_string_equal(vkl_llama_train_key(tr.s, 2), "base_model.model.model.layers.0.mlp.down_proj.ia3_l");
    float loss0 = step(&tr, 0.0f);
    const double eps = 4e-3;
    double worst = 0;
    vkl_err e = {{0}};
    for (int i = 0; i < vkl_llama_train_count(tr.s); i++) {
        vkl_tensor *p = vkl_llama_train_param(tr.s, i);
        float *g = lm_download(c, vkl_llama_train_grad(tr.s, i)), *v = lm_download(c, p);
        int64_t n = vkl_tensor_nelem(p), big = 0;
        for (int64_t k = 1; k < n; k++)
            if (fabsf(g[k]) > fabsf(g[big])) big = k;
        int64_t pick[2] = {big, (big + n / 2) % n};
        for (int q = 0; q < 2; q++) {
            int64_t k = pick[q];
            float orig = v[k];
            v[k] = (float)(orig + eps);
            assert_int_equal(vkl_tensor_upload(c, p, v, VKL_F32, &e), 0);
            double lp = step(&tr, 0.0f);
            v[k] = (float)(orig - eps);
            assert_int_equal(vkl_tensor_upload(c, p, v, VKL_F32, &e), 0);
            double lm = step(&tr, 0.0f);
            v[k] = orig;
            assert_int_equal(vkl_tensor_upload(c, p, v, VKL_F32, &e), 0);
            double fd = (lp - lm) / (2 * eps), d = fabs(fd - g[k]);
            double tol = 3e-4 + 2e-2 * fabs(g[k]);
            if (d / tol > worst) worst = d / tol;
            if (!(d <= tol)) {
                print_error("%s[%lld]: gradient %g, finite difference %g\n", vkl_llama_train_key(tr.s, i),
                            (long long)k, g[k], fd);
                fail();
            }
        }
        free(g);
        free(v);
    }
    /* lr 0 steps left the vectors alone: the loss is unchanged */
    float again = step(&tr, 0.0f);
    printf("  loss %.6f (again %.6f), worst |fd - grad| = %.2f x tolerance\n", loss0, again, worst);
    assert_true(again == loss0);
    vkl_llama_train_free(tr.s);
    vkl_llama_ia3_free(tr.d);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *s = calloc(1, 1 << 20);
    size_t n = fread(s, 1, (1 << 20) - 1, f);
    s[n] = 0;
    fclose(f);
    return s;
}

static void write_all(const char *path, const char *text)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int in_list(const cJSON *a, const char *s)
{
    const cJSON *it;
    cJSON_ArrayForEach(it, a) if (cJSON_IsString(it) && !strcmp(it->valuestring, s)) return 1;
    return 0;
}

/* PEFT's feedforward rule for a list: the module path ends with an entry. */
static int ff_by_list(const cJSON *a, const char *path)
{
    const cJSON *it;
    size_t n = strlen(path);
    cJSON_ArrayForEach(it, a)
    {
        size_t k = strlen(it->valuestring);
        if (k <= n && !strcmp(path + n - k, it->valuestring)) return 1;
    }
    return 0;
}

/* Loads dir's adapter; NULL when it fails (message in err). */
static int load_dir(const char *dir, vkl_lora *l, char *err, size_t size)
{
    char p[4200];
    if ((size_t)snprintf(p, sizeof p, "%.4000s/adapter_model.safetensors", dir) >= sizeof p) fail();
    vkl_err e = {{0}};
    int rc = vkl_lora_load(p, NULL, l, &e);
    snprintf(err, size, "%s", rc ? e.msg : "");
    return rc;
}

static void same_vectors(const vkl_lora *a, const vkl_lora *b)
{
    assert_int_equal(a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const vkl_lora_module *x = &a->m[i], *y = vkl_lora_find(b, x->name);
        assert_non_null(y);
        assert_int_equal(y->kind, VKL_LORA_KIND_IA3);
        assert_int_equal(y->on_input, x->on_input);
        const vkl_lora_tensor *tx = &x->t[VKL_LORA_IA3], *ty = &y->t[VKL_LORA_IA3];
        assert_int_equal(ty->ndim, 2);
        assert_memory_equal(ty->shape, tx->shape, sizeof tx->shape);
        assert_memory_equal(ty->data, tx->data, sizeof(float) * vkl_lora_tensor_nelem(tx));
    }
}

/* The binary's stdout alone (its log lines go to stderr). */
static char *run_stdout(const char *args, int *status)
{
    const char *bin = getenv("VKLORA_BINARY");
    if (!bin || !*bin) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run the tests through ctest)\n");
        skip();
    }
    char cmd[12288];
    snprintf(cmd, sizeof cmd, "'%.2000s' %.8192s 2>/dev/null", bin, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = calloc(1, 1 << 16);
    size_t n = fread(out, 1, (1 << 16) - 1, p);
    out[n] = 0;
    int st = pclose(p);
    *status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    return out;
}

static void test_train_save_generate(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    vkl_err e = {{0}};
    vkl_lora l;
    ia3_init(m, NULL, 0, NULL, 0, &l);
    trainer tr;
    trainer_new(m, &l, &tr);
    float first = step(&tr, 3e-2f), last = first;
    for (int i = 0; i < 7; i++) last = step(&tr, 3e-2f);
    printf("  training: loss %.5f -> %.5f after 8 AdamW steps\n", first, last);
    assert_true(last < first - 0.05f);
    assert_int_equal(vkl_llama_ia3_store(m, tr.d, &l, &e), 0);
    /* the vectors moved away from PEFT's ones */
    assert_true(l.m[0].t[VKL_LORA_IA3].data[0] != 1.0f);

    char dir[1024], model[1100], cfg[1100], err[1024];
    snprintf(dir, sizeof dir, "%.1000s/ia3", vkl_test_tmpdir());
    mkdir(dir, 0755);
    snprintf(model, sizeof model, "%s/adapter_model.safetensors", dir);
    snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
    if (vkl_lora_save_peft(&l, model, cfg, &e)) {
        print_error("save: %s\n", e.msg);
        fail();
    }
    /* the file as PEFT writes it: base_model.model.<module>.ia3_l, [out,1] or [1,in] */
    vkl_st_file *f = NULL;
    assert_int_equal(vkl_st_open(model, &f, &e), 0);
    assert_int_equal(vkl_st_count(f), l.n);
    for (int i = 0; i < m->cfg.layers; i++) {
        char key[128];
        snprintf(key, sizeof key, "base_model.model.model.layers.%d.self_attn.k_proj.ia3_l", i);
        const vkl_st_tensor *t = vkl_st_find(f, key);
        assert_non_null(t);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->shape[0], m->cfg.kv_heads * m->cfg.head_dim);
        assert_int_equal(t->shape[1], 1);
        snprintf(key, sizeof key, "base_model.model.model.layers.%d.mlp.down_proj.ia3_l", i);
        t = vkl_st_find(f, key);
        assert_non_null(t);
        assert_int_equal(t->shape[0], 1);
        assert_int_equal(t->shape[1], m->cfg.intermediate);
    }
    vkl_st_close(f);
    /* the config by PEFT's rules */
    char *text = read_all(cfg);
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItem(j, "peft_type")->valuestring, "IA3");
    const cJSON *tm = cJSON_GetObjectItem(j, "target_modules"), *ff = cJSON_GetObjectItem(j, "feedforward_modules");
    assert_true(cJSON_IsArray(tm) && cJSON_IsArray(ff));
    assert_int_equal(cJSON_GetArraySize(tm), l.n);
    assert_int_equal(cJSON_GetArraySize(ff), m->cfg.layers);
    for (int i = 0; i < l.n; i++) {
        assert_true(in_list(tm, l.m[i].name));
        assert_int_equal(ff_by_list(ff, l.m[i].name), l.m[i].on_input);
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, ff) assert_true(in_list(tm, it->valuestring)); /* PEFT: a subset */
    assert_false(cJSON_IsTrue(cJSON_GetObjectItem(j, "fan_in_fan_out")));
    cJSON_Delete(j);

    vkl_lora back;
    if (load_dir(dir, &back, err, sizeof err)) {
        print_error("reload: %s\n", err);
        fail();
    }
    assert_int_equal(back.format, VKL_LORA_FMT_PEFT);
    assert_true(back.has_config);
    same_vectors(&l, &back);
    vkl_lora_free(&back);

    /* with the targets of the model: the full weight shapes */
    vkl_st_file *mf = NULL;
    vkl_lora_targets tg;
    assert_int_equal(vkl_st_open(vkl_test_shared_path(MODEL "/model.safetensors"), &mf, &e), 0);
    assert_int_equal(vkl_lora_targets_from_st(mf, &tg, &e), 0);
    vkl_lora_opts lo = {.targets = &tg};
    assert_int_equal(vkl_lora_load(model, &lo, &back, &e), 0);
    const vkl_lora_module *dm = vkl_lora_find(&back, "model.layers.1.mlp.down_proj");
    assert_non_null(dm);
    assert_int_equal(dm->wshape[0], m->cfg.hidden);
    assert_int_equal(dm->wshape[1], m->cfg.intermediate);
    vkl_lora_free(&back);
    vkl_lora_targets_free(&tg);
    vkl_st_close(mf);

    /* PEFT's other spellings of feedforward_modules: a plain suffix list and regexes */
    static const char *good[] = {
        "{\"peft_type\": \"IA3\", \"target_modules\": [\"k_proj\", \"v_proj\", \"down_proj\"], "
        "\"feedforward_modules\": [\"down_proj\"]}",
        "{\"peft_type\": \"IA3\", \"target_modules\": \".*\\\\.(k_proj|v_proj|down_proj)\", "
        "\"feedforward_modules\": \".*mlp\\\\.down_proj\"}",
        "{\"peft_type\": \"IA3\", \"target_modules\": \"all-linear\", "
        "\"feedforward_modules\": \"model\\\\.layers\\\\.\\\\d+\\\\.mlp\\\\.(?:down_proj)\"}",
    };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        write_all(cfg, good[i]);
        if (load_dir(dir, &back, err, sizeof err)) {
            print_error("config %s: %s\n", good[i], err);
            fail();
        }
        same_vectors(&l, &back);
        vkl_lora_free(&back);
    }
    static const struct {
        const char *cfg, *msg;
    } bad[] = {
        {"{\"peft_type\": \"IA3\", \"target_modules\": [\"k_proj\", \"v_proj\", \"down_proj\"], "
         "\"feedforward_modules\": []}",
         "model.layers.0.mlp.down_proj is not a feed-forward module"},
        {"{\"peft_type\": \"IA3\", \"target_modules\": [\"k_proj\", \"v_proj\", \"down_proj\"], "
         "\"feedforward_modules\": \".*_proj\"}",
         "model.layers.0.self_attn.k_proj is a feed-forward module"},
        {"{\"peft_type\": \"IA3\", \"target_modules\": [\"k_proj\", \"down_proj\"], \"feedforward_modules\": "
         "[\"down_proj\"]}",
         "target_modules does not name it"},
        {"{\"peft_type\": \"IA3\", \"target_modules\": [\"k_proj\", \"v_proj\"], \"feedforward_modules\": "
         "[\"down_proj\"]}",
         "subset"},
        {"{\"peft_type\": \"IA3\", \"target_modules\": \"(k_proj\", \"feedforward_modules\": []}", "cannot be compiled"},
        {"{\"peft_type\": \"IA3\", \"target_modules\": [\"k_proj\"]}", "feedforward_modules"},
        {"{\"peft_type\": \"LORA\", \"r\": 8, \"lora_alpha\": 16}", "peft_type is not IA3"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        write_all(cfg, bad[i].cfg);
        int rc = load_dir(dir, &back, err, sizeof err);
        printf("  bad config %zu: %s\n", i, err);
        assert_int_equal(rc, -1);
        assert_non_null(strstr(err, bad[i].msg));
    }
    /* the writers that have no IA3 form refuse it */
    char kp[4200];
    snprintf(kp, sizeof kp, "%s/kohya.safetensors", dir);
    assert_int_equal(vkl_lora_save_kohya(&l, kp, &e), -1);
    assert_non_null(strstr(e.msg, "IA3"));
    assert_false(access(kp, F_OK) == 0);
    /* back to the saved config for the command line */
    write_all(cfg, text);
    free(text);

    /* the library's greedy continuation with the saved vectors */
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path(MODEL "/tokenizer.model"), &sp, &e), 0);
    const char *prompt = "Once upon a time";
    int32_t *pid = NULL;
    int np = 0;
    assert_int_equal(vkl_sp_encode(sp, prompt, &pid, &np, &e), 0);
    int32_t ids[64], out[16];
    ids[0] = m->cfg.bos >= 0 ? m->cfg.bos : 1;
    memcpy(ids + 1, pid, sizeof(int32_t) * (size_t)np);
    np++;
    assert_int_equal(load_dir(dir, &back, err, sizeof err), 0);
    vkl_llama_ia3 *d = ia3_build(m, &back, 1.0f);
    vkl_llama_gen_opts go = {.ia3 = d, .max_new = 12, .stop_id = m->cfg.eos};
    int nout = 0;
    assert_int_equal(vkl_llama_generate(m, ids, np, &go, out, &nout, &e), 0);
    memcpy(ids + np, out, sizeof(int32_t) * (size_t)nout);
    char *full = vkl_sp_decode(sp, ids, np + nout), *head = vkl_sp_decode(sp, ids, np);
    char args[8192];
    snprintf(args, sizeof args, "lm generate --model '%s' --prompt '%s' --max-tokens 12 --lora '%s'",
             vkl_test_shared_path(MODEL), prompt, dir);
    int st = 0;
    char *cli = run_stdout(args, &st);
    printf("  lm generate --lora (IA3): \"%s\"\n", cli);
    assert_int_equal(st, 0);
    size_t hl = strlen(head), fl = strlen(full);
    assert_int_equal(strlen(cli), fl - hl + 1);
    assert_memory_equal(cli, full + hl, fl - hl);
    free(cli);
    free(full);
    free(head);
    free(pid);
    vkl_sp_free(sp);
    vkl_llama_ia3_free(d);
    vkl_lora_free(&back);
    vkl_test_rmtree(dir);

    vkl_llama_train_free(tr.s);
    vkl_llama_ia3_free(tr.d);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

/* What has no IA3 form says so instead of computing something else. */
static void test_refusals(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    vkl_lora l;
    ia3_init(m, NULL, 0, NULL, 0, &l);
    vkl_err e = {{0}};
    /* additive delta W (convert to LoRA, SVD) */
    double *d = malloc(sizeof(double) * vkl_lora_wnelem(&l.m[0]));
    assert_int_equal(vkl_lora_delta(&l.m[0], NULL, d, &e), -1);
    printf("  delta: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "IA3"));
    free(d);
    /* combining adapters */
    vkl_lora_input in = {&l, 1.0};
    vkl_lora out;
    assert_int_equal(vkl_lora_combine(&in, 1, 0, &out, NULL, &e), -1);
    printf("  combine: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "IA3"));
    /* the generic run-time adapter set (SD layers, LLaMA LoRA) */
    vkl_lora_use u = {&l, 1.0f, 1.0f};
    vkl_lora_set *set = NULL;
    assert_int_equal(vkl_lora_set_build(c, &u, 1, &set, &e), -1);
    printf("  adapter set: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "IA3"));
    /* LoRA and IA3 modules in one PEFT file */
    vkl_lora mixed;
    assert_int_equal(vkl_lora_load(vkl_test_shared_path(LM_DIR "/tiny-llama-lora/adapter_model.safetensors"), NULL,
                                   &mixed, &e), 0);
    assert_int_equal(vkl_llama_ia3_build(m, &(vkl_lora_use){&mixed, 1, 1}, 1, &(vkl_llama_ia3 *){NULL}, &e), -1);
    printf("  LoRA as IA3: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "not an IA3 module"));
    vkl_lora_module *extra = vkl_lora_add_module(&mixed, &e);
    *extra = l.m[0];
    assert_int_equal(vkl_lora_save_peft(&mixed, "/nonexistent/x.safetensors", "/nonexistent/c.json", &e), -1);
    printf("  mixed PEFT: %s\n", e.msg);
    assert_non_null(strstr(e.msg, "IA3 modules cannot be written together"));
    memset(extra, 0, sizeof *extra); /* owned by l */
    vkl_lora_free(&mixed);
    vkl_lora_free(&l);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
}

/* An SD checkpoint baked with IA3 vectors (merge --model): the text
 * encoder's q_proj rows and the VAE mid-attention q columns times the vector,
 * exactly (f32 products), every other tensor untouched. */
static void test_sd_bake(void **state)
{
    (void)state;
    const char *ldm_rel = "refkit/sd/tiny-sd-ldm.safetensors";
    VKL_REQUIRE_SHARED(ldm_rel);
    const char *ldm = vkl_test_shared_path(ldm_rel);
    static const struct {
        const char *name, *key;
        int on_input;
    } mods[] = {
        {"text_encoder.text_model.encoder.layers.0.self_attn.q_proj",
         "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", 0},
        {"vae.decoder.mid_block.attentions.0.to_q", "first_stage_model.decoder.mid.attn_1.q.weight", 1},
    };
    vkl_err e = {{0}};
    vkl_lora_targets tg;
    assert_int_equal(vkl_lora_targets_open(ldm, &tg, &e), 0);
    vkl_lora l = {0};
    l.format = VKL_LORA_FMT_PEFT;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 9);
    for (int i = 0; i < 2; i++) {
        int ti = vkl_lora_targets_find(&tg, mods[i].name);
        assert_true(ti >= 0);
        const vkl_lora_target *t = &tg.v[ti];
        assert_int_equal(t->ndim, 2);
        vkl_lora_module *m = vkl_lora_add_module(&l, &e);
        m->name = strdup(t->name);
        m->kname = strdup(t->kname);
        m->source = strdup(t->name);
        int64_t shape[2] = {mods[i].on_input ? 1 : t->shape[0], mods[i].on_input ? t->shape[1] : 1};
        float *v = vkl_lora_tensor_alloc(&m->t[VKL_LORA_IA3], 2, shape, &e);
        vkl_test_fill(&r, v, (size_t)(shape[0] * shape[1]), 0.5f, 1.5f);
        assert_int_equal(vkl_lora_module_finish(m, t, &e), 0);
        assert_int_equal(m->kind, VKL_LORA_KIND_IA3);
        assert_int_equal(m->on_input, mods[i].on_input);
    }
    char out[1100];
    snprintf(out, sizeof out, "%.1000s/ia3-baked.safetensors", vkl_test_tmpdir());
    vkl_lora_use u = {&l, 1.0f, 1.0f};
    vkl_sd_bake_opts o = {VKL_DTYPE_COUNT, 0, "ia3", NULL};
    if (vkl_sd_bake(ldm, &u, 1, out, &o, &e)) {
        print_error("bake: %s\n", e.msg);
        fail();
    }
    vkl_st_file *a = NULL, *b = NULL;
    assert_int_equal(vkl_st_open(ldm, &a, &e), 0);
    assert_int_equal(vkl_st_open(out, &b, &e), 0);
    assert_int_equal(vkl_st_count(a), vkl_st_count(b));
    for (int i = 0; i < 2; i++) {
        const vkl_st_tensor *ta = vkl_st_find(a, mods[i].key), *tb = vkl_st_find(b, mods[i].key);
        assert_non_null(ta);
        assert_non_null(tb);
        assert_int_equal(tb->dtype, ta->dtype);
        assert_int_equal(ta->nelem, tb->nelem);
        float *wa = malloc(sizeof(float) * ta->nelem), *wb = malloc(sizeof(float) * ta->nelem);
        assert_int_equal(vkl_st_read(a, ta, VKL_F32, wa, &e), 0);
        assert_int_equal(vkl_st_read(b, tb, VKL_F32, wb, &e), 0);
        const vkl_lora_module *m = &l.m[i];
        int64_t I = m->wshape[1];
        const float *v = m->t[VKL_LORA_IA3].data;
        size_t bad = 0;
        for (uint64_t q = 0; q < ta->nelem; q++) {
            float want = wa[q] * v[m->on_input ? (int64_t)q % I : (int64_t)q / I];
            if (ta->dtype != VKL_F32) vkl_test_round_to(ta->dtype, &want, 1);
            bad += wb[q] != want;
        }
        printf("  baked %s (%s, %s scaled): %zu of %llu elements differ from W * l\n", mods[i].key,
               vkl_dtype_name(ta->dtype), m->on_input ? "columns" : "rows", bad, (unsigned long long)ta->nelem);
        assert_int_equal(bad, 0);
        free(wa);
        free(wb);
    }
    /* an untouched tensor stays the same */
    const char *other = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.k_proj.weight";
    const vkl_st_tensor *ka = vkl_st_find(a, other), *kb = vkl_st_find(b, other);
    assert_non_null(ka);
    assert_non_null(kb);
    assert_int_equal(ka->nbytes, kb->nbytes);
    assert_memory_equal(ka->data, kb->data, ka->nbytes);
    vkl_st_close(a);
    vkl_st_close(b);
    remove(out);
    vkl_lora_free(&l);
    vkl_lora_targets_free(&tg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_train_save_generate),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_sd_bake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
