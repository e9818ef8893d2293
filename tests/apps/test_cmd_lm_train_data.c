/* `vklora lm train` on {"prompt","completion"} and {"messages"} JSONL (the
 * built binary, tiny-llama): the first logged loss is the base model's mean
 * cross-entropy over the answer tokens only (completion + EOS; Mistral-style
 * chat: the assistant's content + EOS), recomputed here from the model's
 * logits with the ids derived from SentencePiece directly, and differs from
 * the loss over every token; a "messages" file without a chat template is
 * refused, naming --chat-template. Held-out scoring (--val-data,
 * --val-fraction, --eval-every) into eval_log.csv; --packing's rows and
 * loss; --grad-accum; a 16-bit frozen base (--weights); --resume exact. */
#include "../models/llama_check.h"
#include "tokenizer/sp_bpe.h"

#include <cjson/cJSON.h>
#include <sys/stat.h>

#define MODEL "refkit/lm/tiny-llama"
#define PROMPT "You may convey"
#define COMPLETION " verbatim copies of the Program's source code."

static char *dir_;

static void write_file(const char *name, const char *text)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir_, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static float first_loss(const char *out, const char *data, const char *extra)
{
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' -o '%s' --data %s --seq-len 64 --batch 1 --steps 1 --lr 0 %s",
             vkl_test_shared_path(MODEL), out, data, extra);
    int st = vkl_test_run_cli(dir_, NULL, args, &log);
    if (st) fail_msg("status %d: %s", st, log);
    free(log);
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/%s/train_log.csv", dir_, out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    float loss = 0;
    assert_int_equal(fscanf(f, "%*d,%*d,%f", &loss), 1);
    fclose(f);
    return loss;
}

/* ids: BOS + sp(head + tail) + EOS; flags from where sp(head)'s ids stop matching */
static int build(const vkl_sp *sp, const char *head, const char *tail, int32_t *ids, unsigned char *tr)
{
    char both[1024];
    snprintf(both, sizeof both, "%s%s", head, tail);
    int32_t *a = NULL, *h = NULL;
    int na = 0, nh = 0, c = 0;
    vkl_err e = {{0}};
    assert_int_equal(vkl_sp_encode(sp, both, &a, &na, &e), 0);
    assert_int_equal(vkl_sp_encode(sp, head, &h, &nh, &e), 0);
    while (c < nh && c < na && a[c] == h[c]) c++;
    int n = 0;
    ids[n] = 1, tr[n++] = 0;
    for (int i = 0; i < na; i++) ids[n] = a[i], tr[n++] = i >= c;
    ids[n] = 2, tr[n++] = 1;
    free(a);
    free(h);
    return n;
}

/* Mean -log p(ids[t] | ids[<t]) over flagged t (all t >= 1 when tr is NULL), float64 from the model's logits. */
static double base_loss(vkl_ctx *c, vkl_llama *m, const int32_t *ids, const unsigned char *tr, int n)
{
    vkl_tensor *tid = lm_ids(c, ids, 1, n), *mask = lm_mask(c, 1, n, 0, NULL);
    vkl_graph *g = vkl_graph_new(c);
    vkl_llama_fwd o = {.mask = mask, .explicit_attn = 1};
    vkl_tensor *logits = vkl_llama_forward(g, m, tid, &o);
    vkl_graph_keep(g, logits);
    lm_plan(g);
    lm_run(g);
    float *lg = lm_download(c, logits);
    int V = m->cfg.vocab, k = 0;
    double sum = 0;
    for (int t = 1; t < n; t++) {
        if (tr && !tr[t]) continue;
        const float *row = lg + (size_t)(t - 1) * V;
        double mx = row[0], z = 0;
        for (int v = 1; v < V; v++) mx = row[v] > mx ? row[v] : mx;
        for (int v = 0; v < V; v++) z += exp(row[v] - mx);
        sum += -(row[ids[t]] - mx - log(z));
        k++;
    }
    free(lg);
    vkl_graph_free(g);
    vkl_tensor_free(mask);
    vkl_tensor_free(tid);
    return sum / k;
}

static void answer_only_loss(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    vkl_err e = {{0}};
    vkl_sp *sp = NULL;
    assert_int_equal(vkl_sp_load(vkl_test_shared_path(MODEL "/tokenizer.model"), &sp, &e), 0);
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_llama *m = lm_load(c, MODEL, VKL_F32);
    int32_t ids[128];
    unsigned char tr[128];

    write_file("pc.jsonl", "{\"prompt\": \"" PROMPT "\", \"completion\": \"" COMPLETION "\"}\n");
    int n = build(sp, PROMPT, COMPLETION, ids, tr);
    double want = base_loss(c, m, ids, tr, n), all = base_loss(c, m, ids, NULL, n);
    float got = first_loss("pc", "pc.jsonl", "");
    printf("  prompt/completion: loss %.6f, expected %.6f (every token: %.6f)\n", got, want, all);
    assert_float_equal(got, want, 2e-4);
    assert_true(fabs(want - all) > 0.01);

    /* Mistral's template: BOS [INST] question [/INST]answer EOS, loss on answer + EOS */
    write_file("chat.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": \"Who may copy?\"}, "
                             "{\"role\": \"assistant\", \"content\": \"" PROMPT COMPLETION "\"}]}\n");
    n = build(sp, "[INST] Who may copy? [/INST]", PROMPT COMPLETION, ids, tr);
    want = base_loss(c, m, ids, tr, n);
    got = first_loss("chat", "chat.jsonl", "--chat-template mistral");
    printf("  messages (mistral): loss %.6f, expected %.6f\n", got, want);
    assert_float_equal(got, want, 2e-4);

    /* packing: both samples, each BOS ... EOS, in one row, every token a label */
    {
        const char *s1 = "You may convey verbatim copies.", *s2 = "You may charge any price.";
        write_file("pack.jsonl", "{\"text\": \"You may convey verbatim copies.\"}\n"
                                 "{\"text\": \"You may charge any price.\"}\n");
        int32_t *a = NULL, *b = NULL;
        int na = 0, nb = 0, k = 0;
        assert_int_equal(vkl_sp_encode(sp, s1, &a, &na, &e), 0);
        assert_int_equal(vkl_sp_encode(sp, s2, &b, &nb, &e), 0);
        ids[k++] = 1;
        for (int i = 0; i < na; i++) ids[k++] = a[i];
        ids[k++] = 2;
        ids[k++] = 1;
        for (int i = 0; i < nb; i++) ids[k++] = b[i];
        ids[k++] = 2;
        free(a);
        free(b);
        want = base_loss(c, m, ids, NULL, k);
        char *plog = NULL, pargs[8192];
        snprintf(pargs, sizeof pargs, "lm train --model '%s' -o pack --data pack.jsonl --packing --seq-len 64 --batch 1 "
                 "--steps 1 --lr 0", vkl_test_shared_path(MODEL));
        int pst = vkl_test_run_cli(dir_, NULL, pargs, &plog);
        if (pst) fail_msg("status %d: %s", pst, plog);
        assert_non_null(strstr(plog, "1 samples of 64 tokens"));
        free(plog);
        char p[4096], line[256];
        snprintf(p, sizeof p, "%s/pack/train_log.csv", dir_);
        FILE *f = fopen(p, "r");
        assert_non_null(f);
        assert_non_null(fgets(line, sizeof line, f));
        assert_int_equal(fscanf(f, "%*d,%*d,%f", &got), 1);
        fclose(f);
        printf("  packed: loss %.6f, expected %.6f (%d tokens)\n", got, want, k);
        assert_float_equal(got, want, 2e-4);
    }

    /* tiny-llama's tokenizer_config.json has no chat template */
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' -o nochat --data chat.jsonl --steps 1",
             vkl_test_shared_path(MODEL));
    assert_int_equal(vkl_test_run_cli(dir_, NULL, args, &log), 1);
    assert_non_null(strstr(log, "--chat-template"));
    free(log);
    vkl_llama_free(m);
    vkl_test_ctx_done(c);
    vkl_sp_free(sp);
}

/* Held-out scoring: the data itself as --val-data at batch = all samples, so
 * the step-0 held-out loss is the first training loss; it falls as the
 * adapter learns (the evaluation sees the trained tensors); perplexity is
 * exp(loss); --val-fraction keeps samples out of training. */
static void held_out(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    write_file("two.jsonl", "{\"text\": \"You may convey verbatim copies of the Program.\"}\n"
                            "{\"text\": \"You may charge any price or no price for each copy.\"}\n");
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' -o ev --data two.jsonl --val-data two.jsonl --seq-len 32 --batch 2 "
             "--steps 4 --lr 1e-2 --eval-every 2", vkl_test_shared_path(MODEL));
    int st = vkl_test_run_cli(dir_, NULL, args, &log);
    if (st) fail_msg("status %d: %s", st, log);
    assert_non_null(strstr(log, "held-out loss"));
    free(log);
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/ev/train_log.csv", dir_);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    float first = 0;
    assert_non_null(fgets(line, sizeof line, f));
    assert_int_equal(fscanf(f, "%*d,%*d,%f", &first), 1);
    fclose(f);
    snprintf(p, sizeof p, "%s/ev/eval_log.csv", dir_);
    f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    assert_string_equal(line, "step,loss,perplexity,tokens\n");
    int steps[3];
    float loss[3], ppl[3];
    long long tokens[3];
    for (int i = 0; i < 3; i++) assert_int_equal(fscanf(f, "%d,%f,%f,%lld", &steps[i], &loss[i], &ppl[i], &tokens[i]), 4);
    fclose(f);
    printf("  held-out loss %.5f (first training loss %.5f) -> %.5f -> %.5f\n", loss[0], first, loss[1], loss[2]);
    assert_true(steps[0] == 0 && steps[1] == 2 && steps[2] == 4);
    assert_float_equal(loss[0], first, 1e-4);
    assert_true(loss[2] < loss[0]);
    for (int i = 0; i < 3; i++) assert_float_equal(ppl[i], exp(loss[i]), 1e-3 * ppl[i]);
    assert_true(tokens[0] > 10 && tokens[0] == tokens[2]);
    /* a fraction held out: one sample trains, one is scored */
    snprintf(args, sizeof args, "lm train --model '%s' -o frac --data two.jsonl --val-fraction 0.5 --seq-len 32 --steps 1",
             vkl_test_shared_path(MODEL));
    st = vkl_test_run_cli(dir_, NULL, args, &log);
    if (st) fail_msg("status %d: %s", st, log);
    assert_non_null(strstr(log, "1 samples of 32 tokens"));
    assert_non_null(strstr(log, "step 1 held-out loss"));
    free(log);
    snprintf(args, sizeof args, "lm train --model '%s' -o bad --data two.jsonl --val-fraction 1.5", vkl_test_shared_path(MODEL));
    assert_int_equal(vkl_test_run_cli(dir_, NULL, args, &log), 2);
    assert_non_null(strstr(log, "--val-fraction"));
    free(log);
}

/* --grad-accum 2 at batch 1 over two samples: one step per epoch */
static void grad_accum_cli(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    write_file("pair.jsonl", "{\"text\": \"You may convey verbatim copies of the Program.\"}\n"
                             "{\"text\": \"You may charge any price or no price for each copy.\"}\n");
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' -o acc --data pair.jsonl --seq-len 32 --batch 1 --grad-accum 2 "
             "--epochs 3 --lr 1e-2", vkl_test_shared_path(MODEL));
    int st = vkl_test_run_cli(dir_, NULL, args, &log);
    if (st) fail_msg("status %d: %s", st, log);
    assert_non_null(strstr(log, "3 steps of batch 2 (batch 1 x gradient accumulation 2 x 1 ranks)"));
    free(log);
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/acc/train_log.csv", dir_);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    float loss[3];
    int epoch[3];
    for (int i = 0; i < 3; i++) assert_int_equal(fscanf(f, "%*d,%d,%f,%*f,%*f,%*d,%*f", &epoch[i], &loss[i]), 2);
    fclose(f);
    printf("  accumulated steps: loss %.4f -> %.4f -> %.4f\n", loss[0], loss[1], loss[2]);
    assert_true(epoch[0] == 0 && epoch[1] == 1 && epoch[2] == 2);
    assert_true(loss[2] < loss[0]);
}

static float first_logged(const char *out)
{
    char p[4096], line[256];
    snprintf(p, sizeof p, "%s/%s/train_log.csv", dir_, out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_non_null(fgets(line, sizeof line, f));
    float loss = 0;
    assert_int_equal(fscanf(f, "%*d,%*d,%f", &loss), 1);
    fclose(f);
    return loss;
}

/* --weights f16 / bf16: the frozen base in 16 bits trains, starting within
 * the rounding of the f32 base's loss; an unknown dtype is refused */
static void frozen_16bit(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    write_file("w.jsonl", "{\"text\": \"You may convey verbatim copies of the Program.\"}\n");
    const char *w[] = {"f32", "f16", "bf16"};
    float first[3];
    for (int i = 0; i < 3; i++) {
        char args[8192], *log = NULL, out[16];
        snprintf(out, sizeof out, "w%s", w[i]);
        snprintf(args, sizeof args, "lm train --model '%s' -o %s --data w.jsonl --seq-len 32 --batch 1 --steps 2 "
                 "--weights %s", vkl_test_shared_path(MODEL), out, w[i]);
        int st = vkl_test_run_cli(dir_, NULL, args, &log);
        if (st) fail_msg("%s: status %d: %s", w[i], st, log);
        free(log);
        first[i] = first_logged(out);
    }
    printf("  first loss: f32 %.6f, f16 %.6f, bf16 %.6f\n", first[0], first[1], first[2]);
    assert_float_equal(first[1], first[0], 1e-3);
    assert_float_equal(first[2], first[0], 1e-2);
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' -o wx --data w.jsonl --weights q4", vkl_test_shared_path(MODEL));
    assert_int_equal(vkl_test_run_cli(dir_, NULL, args, &log), 2);
    assert_non_null(strstr(log, "--weights"));
    free(log);
}

static char *slurp_bytes(const char *rel, size_t *n)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir_, rel);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* --save-every / --resume: 2 steps, then resumed to 4, equal 4 straight
 * steps: every logged loss and the adapter file byte for byte (3 samples
 * in batches of 2, so the order state crosses an epoch; held-out scoring on,
 * whose log the state must not take for the loss log) */
static void resume_exact(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(MODEL "/model.safetensors");
    write_file("three.jsonl", "{\"text\": \"You may convey verbatim copies of the Program.\"}\n"
                              "{\"text\": \"You may charge any price or no price for each copy.\"}\n"
                              "{\"text\": \"You may offer support or warranty protection for a fee.\"}\n");
    const char *common = "--data three.jsonl --val-data three.jsonl --seq-len 32 --batch 2 --lr 1e-2 --seed 11";
    const char *runs[][2] = {{"straight", "--steps 4"}, {"resumed", "--steps 2 --save-every 2"},
                             {"resumed", "--steps 4 --save-every 2 --resume"}};
    for (int i = 0; i < 3; i++) {
        char args[8192], *log = NULL;
        snprintf(args, sizeof args, "lm train --model '%s' -o %s %s %s", vkl_test_shared_path(MODEL), runs[i][0], common,
                 runs[i][1]);
        int st = vkl_test_run_cli(dir_, NULL, args, &log);
        if (st) fail_msg("%s: status %d: %s", runs[i][1], st, log);
        if (i == 2) assert_non_null(strstr(log, "resuming from step 2 of 4"));
        free(log);
    }
    char *a = vkl_test_slurp(dir_, "straight/train_log.csv"), *b = vkl_test_slurp(dir_, "resumed/train_log.csv");
    vkl_test_csv_first_columns(a, 3); /* step, epoch, loss: the rest holds times */
    vkl_test_csv_first_columns(b, 3);
    printf("  straight:\n%s  resumed:\n%s", a, b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    size_t na, nb;
    char *fa = slurp_bytes("straight/adapter_model.safetensors", &na), *fb = slurp_bytes("resumed/adapter_model.safetensors", &nb);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    free(fa);
    free(fb);
    /* resuming the finished run (as after a kill between its last state and
     * its exit) succeeds and leaves its output as it was */
    char again[8192], *said = NULL;
    snprintf(again, sizeof again, "lm train --model '%s' -o resumed %s %s", vkl_test_shared_path(MODEL), common,
             runs[2][1]);
    int st = vkl_test_run_cli(dir_, NULL, again, &said);
    if (st) fail_msg("resuming the finished run: status %d: %s", st, said);
    assert_non_null(strstr(said, "nothing to do"));
    free(said);
    fb = slurp_bytes("resumed/adapter_model.safetensors", &nb);
    fa = slurp_bytes("straight/adapter_model.safetensors", &na);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    free(fa);
    free(fb);
    /* other options than the saved ones are refused */
    char args[8192], *log = NULL;
    snprintf(args, sizeof args, "lm train --model '%s' -o resumed %s --steps 6 --resume --rank 4", vkl_test_shared_path(MODEL),
             common);
    assert_int_equal(vkl_test_run_cli(dir_, NULL, args, &log), 1);
    assert_non_null(strstr(log, "other options"));
    free(log);
    /* a state written before the split of the global batch was recorded kept
     * --grad-accum among its options (one rank): still resumed, and checked */
    for (int accum = 1; accum <= 2; accum++) {
        char *text = vkl_test_slurp(dir_, "resumed.state/state.json");
        assert_non_null(text);
        cJSON *j = cJSON_Parse(text);
        free(text);
        assert_non_null(j);
        cJSON_DeleteItemFromObject(j, "ranks");
        cJSON_DeleteItemFromObject(j, "grad_accum");
        cJSON *o = cJSON_GetObjectItem(j, "options");
        cJSON_DeleteItemFromObject(o, "grad_accum");
        cJSON_AddNumberToObject(o, "grad_accum", accum);
        text = cJSON_Print(j);
        cJSON_Delete(j);
        write_file("resumed.state/state.json", text);
        free(text);
        int st = vkl_test_run_cli(dir_, NULL, again, &log);
        if (accum == 1) {
            if (st) fail_msg("resuming an older state: status %d: %s", st, log);
            assert_non_null(strstr(log, "nothing to do"));
        } else {
            assert_int_equal(st, 1);
            assert_non_null(strstr(log, "1 rank(s) x --grad-accum 2 = 2 micro-batches per step, this run has 1 x 1 = 1"));
        }
        free(log);
    }
}

static int setup(void **state)
{
    (void)state;
    dir_ = strdup(vkl_test_tmpdir());
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    vkl_test_rmtree(dir_);
    free(dir_);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(answer_only_loss), cmocka_unit_test(held_out),
                                       cmocka_unit_test(grad_accum_cli), cmocka_unit_test(frozen_16bit),
                                       cmocka_unit_test(resume_exact)};
    return cmocka_run_group_tests(tests, setup, teardown);
}
