/* `vklora lm lorahub` end to end (the built binary) on tiny-llama: two
 * adapters trained here by `lm train` (same seed, LoRA+ so that their A
 * factors stay near the shared initialisation) on different halves of a
 * small colour task, mixed on a few examples of both halves.
 *   - the output's tensors are w_1 A_1 + w_2 A_2 and w_1 B_1 + w_2 B_2 for
 *     the weights in its metadata and log, summed here from the input files;
 *   - the losses in the log are recomputed here (tokenised here, the model
 *     run with each adapter, cross-entropy summed here): the inputs alone,
 *     their plain average (composed here) and the output; the output's is
 *     lower than every other;
 *   - the output loads in `lm generate --lora`, with PEFT's config fields.
 * Bad input: test_cmd_lm_lorahub_bad.c. */
#include "../models/llama_check.h"
#include "io/safetensors.h"
#include "lora/lora_apply.h"
#include "tokenizer/sp_bpe.h"

#include <cjson/cJSON.h>

#include "lm_lorahub_fixture.h"

static vkl_st_file *open_st(const char *dir)
{
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(path_in(dir, "adapter_model.safetensors"), &f, &e)) fail_msg("%s", e.msg);
    return f;
}

static float *read_all(vkl_st_file *f, const vkl_st_tensor *t, uint64_t *n)
{
    *n = 1;
    for (int d = 0; d < t->ndim; d++) *n *= (uint64_t)t->shape[d];
    float *x = malloc(sizeof(float) * *n);
    vkl_err e = {{0}};
    if (vkl_st_read_f32(f, t->name, x, *n, &e)) fail_msg("%s", e.msg);
    return x;
}

/* ---- the loss, computed here ---- */

typedef struct sample {
    int32_t *ids;
    int n;
    unsigned char *label; /* label[t]: token t is an answer token (predicted from t - 1) */
} sample;

/* BOS, prompt + completion encoded as one text, EOS; the answer: the tokens
 * from the first one where the whole's encoding leaves the prompt's, and EOS. */
static int make_samples(sample *s)
{
    vkl_sp *sp = NULL;
    vkl_err e = {{0}};
    if (vkl_sp_load(vkl_test_shared_path(MODEL "/tokenizer.model"), &sp, &e)) fail_msg("%s", e.msg);
    int n = 0;
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 4; i++, n++) {
            const char *const *pc = h ? HALF_B[i] : HALF_A[i];
            char whole[256];
            snprintf(whole, sizeof whole, "%s%s", pc[0], pc[1]);
            int32_t *p = NULL, *w = NULL;
            int np = 0, nw = 0;
            if (vkl_sp_encode(sp, pc[0], &p, &np, &e) || vkl_sp_encode(sp, whole, &w, &nw, &e)) fail_msg("%s", e.msg);
            int common = 0;
            while (common < np && common < nw && p[common] == w[common]) common++;
            s[n].n = nw + 2;
            s[n].ids = malloc(sizeof(int32_t) * (size_t)s[n].n);
            s[n].label = calloc((size_t)s[n].n, 1);
            s[n].ids[0] = 1; /* tiny-llama's BOS and EOS (config.json) */
            memcpy(s[n].ids + 1, w, sizeof(int32_t) * (size_t)nw);
            s[n].ids[nw + 1] = 2;
            for (int t = 1 + common; t < s[n].n; t++) s[n].label[t] = 1;
            free(p);
            free(w);
        }
    vkl_sp_free(sp);
    return n;
}

/* Mean cross-entropy over every answer token of the samples, the model run with the adapter l. */
static double loss_of(vkl_ctx *c, const vkl_llama *m, const vkl_lora *l, const sample *s, int ns)
{
    vkl_lora_use use = {l, 1.0f, 1.0f};
    vkl_lora_set *set = NULL;
    vkl_err e = {{0}};
    if (vkl_lora_set_build(c, &use, 1, &set, &e)) fail_msg("%s", e.msg);
    int V = m->cfg.vocab;
    double sum = 0;
    long count = 0;
    for (int k = 0; k < ns; k++) {
        int L = s[k].n;
        vkl_tensor *tid = lm_ids(c, s[k].ids, 1, L), *mask = lm_mask(c, 1, L, 0, NULL);
        vkl_graph *g = vkl_graph_new(c);
        vkl_llama_fwd o = {.lora = set, .mask = mask, .explicit_attn = 1};
        vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
        vkl_graph_keep(g, logits);
        lm_plan(g);
        lm_run(g);
        float *lg = lm_download(c, logits);
        for (int t = 1; t < L; t++) {
            if (!s[k].label[t]) continue;
            const float *row = lg + (size_t)(t - 1) * V;
            double mx = row[0], z = 0;
            for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
            for (int v = 0; v < V; v++) z += exp(row[v] - mx);
            sum += mx + log(z) - row[s[k].ids[t]];
            count++;
        }
        free(lg);
        vkl_graph_free(g);
        vkl_tensor_free(tid);
        vkl_tensor_free(mask);
    }
    vkl_lora_set_free(set);
    return sum / (double)count;
}

static void load_lora(const char *dir, vkl_lora *l)
{
    vkl_err e = {{0}};
    if (vkl_lora_load(path_in(dir, "adapter_model.safetensors"), NULL, l, &e)) fail_msg("%s", e.msg);
}

/* The row of lorahub_log.csv named `row`: its loss and weights. */
static void log_row(const char *log, const char *row, double *loss, double *w)
{
    char key[64];
    snprintf(key, sizeof key, "\n%s,", row);
    const char *p = strstr(log, key);
    if (!p) fail_msg("lorahub_log.csv has no row %s:\n%s", row, log);
    int evals;
    char obj[32];
    if (sscanf(p + strlen(key), "%d,%lf,%31[^,],%lf,%lf", &evals, loss, obj, &w[0], &w[1]) != 5)
        fail_msg("row %s unreadable", row);
}

static void test_mix(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/config.json");
    train("a.jsonl", "A", TRAIN);
    train("b.jsonl", "B", TRAIN);
    char args[2048];
    snprintf(args, sizeof args, "lm lorahub --model '%s' --adapters A,B --data few.jsonl -o HUB --seq-len 16 --seed 1",
             vkl_test_shared_path(MODEL));
    char *out = run_ok(args);
    assert_non_null(strstr(out, "generation 7/7 [40/40 evaluations] best loss"));
    free(out);

    /* the weights: metadata and log agree */
    char *log = vkl_test_slurp(vkl_test_dir, "HUB/lorahub_log.csv");
    assert_non_null(log);
    assert_true(!strncmp(log, "row,evaluations,loss,objective,w_1,w_2\n", 39));
    double w[2], best, la, lb, lavg, wr[2];
    log_row(log, "best", &best, w);
    log_row(log, "input_1", &la, wr);
    assert_true(wr[0] == 1 && wr[1] == 0);
    log_row(log, "input_2", &lb, wr);
    log_row(log, "average", &lavg, wr);
    assert_true(wr[0] == 0.5 && wr[1] == 0.5);
    free(log);
    vkl_st_file *hub = open_st("HUB"), *fa = open_st("A"), *fb = open_st("B");
    cJSON *mw = cJSON_Parse(vkl_st_meta_get(hub, "lorahub_weights"));
    assert_true(cJSON_IsArray(mw) && cJSON_GetArraySize(mw) == 2);
    for (int i = 0; i < 2; i++) assert_float_equal(cJSON_GetArrayItem(mw, i)->valuedouble, w[i], 1e-8);
    cJSON_Delete(mw);
    printf("  weights (%.4f, %.4f)\n", w[0], w[1]);

    /* (a) every tensor is the weighted sum of the inputs' */
    assert_int_equal(vkl_st_count(hub), vkl_st_count(fa));
    assert_int_equal(vkl_st_count(hub), 2 * 15); /* 5 targets x 3 layers, A and B */
    for (int i = 0; i < vkl_st_count(hub); i++) {
        const vkl_st_tensor *t = vkl_st_at(hub, i);
        const vkl_st_tensor *ta = vkl_st_find(fa, t->name), *tb = vkl_st_find(fb, t->name);
        assert_non_null(ta);
        assert_non_null(tb);
        uint64_t n, na, nb;
        float *x = read_all(hub, t, &n), *a = read_all(fa, ta, &na), *b = read_all(fb, tb, &nb);
        assert_true(n == na && n == nb);
        float *want = malloc(sizeof(float) * n);
        for (uint64_t k = 0; k < n; k++) want[k] = (float)(w[0] * a[k] + w[1] * b[k]);
        vkl_test_assert_close(t->name, x, want, n, 1e-7f, 1e-6f);
        free(x);
        free(a);
        free(b);
        free(want);
    }

    /* (b) the losses, recomputed here */
    sample s[8];
    int ns = make_samples(s);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    vkl_lora l;
    load_lora("A", &l);
    double my_a = loss_of(c, m, &l, s, ns);
    /* the plain average, composed here from the files' tensors into A's structure */
    for (int k = 0; k < l.n; k++)
        for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++) {
            char key[512];
            snprintf(key, sizeof key, "base_model.model.%s.%s", l.m[k].name, r == VKL_LORA_DOWN ? "lora_A.weight" : "lora_B.weight");
            uint64_t n, nb;
            float *a = read_all(fa, vkl_st_find(fa, key), &n), *b = read_all(fb, vkl_st_find(fb, key), &nb);
            assert_true(n == vkl_lora_tensor_nelem(&l.m[k].t[r]));
            for (uint64_t x = 0; x < n; x++) l.m[k].t[r].data[x] = 0.5f * a[x] + 0.5f * b[x];
            free(a);
            free(b);
        }
    double my_avg = loss_of(c, m, &l, s, ns);
    vkl_lora_free(&l);
    load_lora("B", &l);
    double my_b = loss_of(c, m, &l, s, ns);
    vkl_lora_free(&l);
    load_lora("HUB", &l);
    double my_hub = loss_of(c, m, &l, s, ns);
    vkl_lora_free(&l);
    printf("  loss on the 8 examples (recomputed here / logged): A %.5f / %.5f, B %.5f / %.5f, average %.5f / %.5f, "
           "LoRAHub %.5f / %.5f\n", my_a, la, my_b, lb, my_avg, lavg, my_hub, best);
    assert_float_equal(my_a, la, 1e-4 * la);
    assert_float_equal(my_b, lb, 1e-4 * lb);
    assert_float_equal(my_avg, lavg, 1e-4 * lavg);
    assert_float_equal(my_hub, best, 1e-4 * best);
    assert_true(my_hub < my_a && my_hub < my_b && my_hub < my_avg);
    for (int k = 0; k < ns; k++) {
        free(s[k].ids);
        free(s[k].label);
    }
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
    vkl_st_close(hub);
    vkl_st_close(fa);
    vkl_st_close(fb);

    /* an ordinary PEFT adapter */
    char *cfg = vkl_test_slurp(vkl_test_dir, "HUB/adapter_config.json");
    cJSON *j = cJSON_Parse(cfg);
    free(cfg);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "peft_type")->valuestring, "LORA");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "r")->valueint, 4);
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(j, "lora_alpha")->valueint, 8);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "task_type")->valuestring, "CAUSAL_LM");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "base_model_name_or_path")->valuestring,
                        vkl_test_shared_path(MODEL));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "target_modules")), 5);
    cJSON_Delete(j);
    snprintf(args, sizeof args, "lm generate --model '%s' --lora HUB --prompt 'The sky is' --max-tokens 3",
             vkl_test_shared_path(MODEL));
    free(run_ok(args));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mix),
    };
    return cmocka_run_group_tests(tests, setup, vkl_test_group_teardown);
}
