/* The trainer API (vkl_trainer_*) driven a step at a time, as serve's
 * training jobs drive it, on the tiny model: open, 3 steps, checkpoint,
 * close; open again resuming that state, 2 steps, finish. Its losses and
 * its adapter equal one uninterrupted 5-step vkl_train_run's, and its loss
 * log is the same file. Also: the reports count steps, a checkpoint is
 * saved once per step, a step past the end and a finish before it fail,
 * and opening the finished state again has nothing to do. */
#include "vkl_test.h"
#include "train/sd_trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define IMAGES "data/wesnoth-portraits/test16-128px"
#define MODEL "refkit/sd/tiny-sd"
#define STEPS 5
#define FIRST 3

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

static void config(vkl_train_config *c, const char *out)
{
    vkl_train_config_default(c);
    c->model = vkl_test_shared_path(MODEL);
    c->data.images_dir = images;
    c->data.resolution = 64;
    c->data.batch_size = 1;
    c->data.seed = 11;
    c->output = out;
    c->rank = 4;
    c->alpha = 2;
    c->lr = 1e-2f;
    c->max_steps = STEPS;
    c->quiet = 1;
}

/* The whole of a text file (the loss logs). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char *buf = calloc(1, 1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    assert_true(n > 0 && n < (1 << 16) - 1);
    return buf;
}

/* The loss column of a loss log, in order. */
static int csv_losses(const char *text, double *out, int max)
{
    const char *line = strchr(text, '\n');
    int n = 0;
    while (line && line[1] && n < max) {
        const char *c = strchr(line + 1, ',');
        c = c ? strchr(c + 1, ',') : NULL;
        assert_non_null(c);
        out[n++] = strtod(c + 1, NULL);
        line = strchr(line + 1, '\n');
    }
    return n;
}

static void steps_resume_finish(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    char ref_out[400], api_out[400], state_dir[400], path[460];
    snprintf(ref_out, sizeof ref_out, "%.300s/ref.safetensors", tmp);
    snprintf(api_out, sizeof api_out, "%.300s/api.safetensors", tmp);
    snprintf(state_dir, sizeof state_dir, "%.300s/api.state", tmp);
    vkl_ctx *ctx = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_train_config c;

    /* the reference: one uninterrupted run */
    config(&c, ref_out);
    if (vkl_train_run(ctx, &c, NULL, NULL, &e)) fail_msg("%s", e.msg);

    /* the first part: 3 steps and a checkpoint */
    config(&c, api_out);
    vkl_trainer *t = NULL;
    if (vkl_trainer_open(ctx, &c, &t, &e)) fail_msg("%s", e.msg);
    int step = -1, total = -1;
    vkl_trainer_position(t, &step, &total);
    assert_int_equal(step, 0);
    assert_int_equal(total, STEPS);
    float loss[STEPS];
    vkl_train_report r;
    for (int i = 0; i < FIRST; i++) {
        if (vkl_trainer_step(t, &r, &e)) fail_msg("step %d: %s", i + 1, e.msg);
        assert_int_equal(r.step, i + 1);
        assert_int_equal(r.total, STEPS);
        assert_false(r.save_due || r.sample_due); /* neither --save-every nor samples */
        loss[i] = r.loss;
    }
    assert_string_equal(vkl_trainer_state_dir(t), state_dir);
    assert_int_equal(vkl_trainer_checkpoint(t, &e), 0);
    snprintf(path, sizeof path, "%s/step-%06d/state.json", state_dir, FIRST);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    /* once per step: a second call writes nothing (the state file keeps its time) */
    struct timespec before = st.st_mtim;
    assert_int_equal(vkl_trainer_checkpoint(t, &e), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_mtim.tv_sec == before.tv_sec && st.st_mtim.tv_nsec == before.tv_nsec);
    /* not the last step: no output yet */
    assert_int_not_equal(vkl_trainer_finish(t, &e), 0);
    assert_non_null(strstr(e.msg, "not finished"));
    assert_int_not_equal(stat(api_out, &st), 0);
    vkl_trainer_close(t);

    /* the second part: resume, 2 steps, finish */
    c.resume = state_dir;
    if (vkl_trainer_open(ctx, &c, &t, &e)) fail_msg("%s", e.msg);
    vkl_trainer_position(t, &step, &total);
    assert_int_equal(step, FIRST);
    assert_int_equal(total, STEPS);
    for (int i = FIRST; i < STEPS; i++) {
        if (vkl_trainer_step(t, &r, &e)) fail_msg("step %d: %s", i + 1, e.msg);
        assert_int_equal(r.step, i + 1);
        loss[i] = r.loss;
    }
    assert_int_not_equal(vkl_trainer_step(t, &r, &e), 0);
    assert_non_null(strstr(e.msg, "last step"));
    if (vkl_trainer_finish(t, &e)) fail_msg("%s", e.msg);
    vkl_trainer_close(t);

    /* the same run: losses, loss log and adapter */
    char ref_csv[420], api_csv[420];
    snprintf(ref_csv, sizeof ref_csv, "%.300s/ref.csv", tmp);
    snprintf(api_csv, sizeof api_csv, "%.300s/api.csv", tmp);
    char *ref_text = slurp(ref_csv), *api_text = slurp(api_csv);
    double ref_loss[STEPS + 1], api_loss[STEPS + 1];
    assert_int_equal(csv_losses(ref_text, ref_loss, STEPS + 1), STEPS);
    assert_int_equal(csv_losses(api_text, api_loss, STEPS + 1), STEPS);
    for (int i = 0; i < STEPS; i++) {
        print_message("step %d: loss %.7g run, %.7g parts (reported %.7g)\n", i + 1, ref_loss[i], api_loss[i],
                      loss[i]);
        assert_true(isfinite(loss[i]));
        assert_true(api_loss[i] == ref_loss[i]);
        /* the log holds 7 significant digits of the reported loss */
        assert_true(fabs(loss[i] - ref_loss[i]) <= 1e-6 * fabs(ref_loss[i]) + 1e-12);
    }
    free(ref_text);
    free(api_text);
    vkl_test_same_tensors(ref_out, api_out);

    /* the finished state again: nothing to do, nothing open */
    t = (vkl_trainer *)&c; /* not NULL, to see it cleared */
    assert_int_equal(vkl_trainer_open(ctx, &c, &t, &e), 2);
    assert_null(t);
    vkl_test_ctx_done(ctx);
}

/* Settings refused before anything is loaded; nothing is left open. */
static void open_refuses(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(MODEL);
    char out[400];
    snprintf(out, sizeof out, "%.300s/bad.safetensors", tmp);
    vkl_ctx *ctx = vkl_test_ctx(NULL);
    vkl_err e = {{0}};
    vkl_train_config c;
    config(&c, out);
    c.lr_schedule = "sawtooth";
    vkl_trainer *t = NULL;
    assert_int_equal(vkl_trainer_open(ctx, &c, &t, &e), -1);
    assert_null(t);
    assert_non_null(strstr(e.msg, "sawtooth"));
    config(&c, NULL);
    assert_int_equal(vkl_trainer_open(ctx, &c, &t, &e), -1);
    assert_non_null(strstr(e.msg, "-o/--output"));
    vkl_trainer_close(NULL);
    vkl_test_ctx_done(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(steps_resume_finish),
        cmocka_unit_test(open_refuses),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
