/* vklora serve's training jobs through libcurl: a job trains the library's
 * `vklora train` on a folder inside --data-root, reports its loss per step
 * (the same values as the run's own loss log), and its adapter is then
 * listed and usable by name in a prompt; DELETE stops a running job with its
 * state saved, as Ctrl-C does; paths outside the data root, settings the
 * server owns and a name in use are refused by name. */
#include "serve_fixture.h"

#include <math.h>
#include <sys/stat.h>

static int setup(void **state)
{
    vkl_test_group_setup(state);
    if (!vkl_test_shared_exists("refkit/sd/tiny-sd") || !vkl_test_shared_exists("data/wesnoth-portraits/test16-128px"))
        return 0;
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/loras' '%s/data/imgs' && cp '%s'/*.png '%s'/*.txt '%s/data/imgs/'",
             vkl_test_dir, vkl_test_dir, vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), vkl_test_dir);
    if (system(cmd)) return -1;
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --lora-dir loras --data-root data", model());
    return fx_server_start(&srv, vkl_test_dir, args) ? -1 : 0;
}

static void need(void)
{
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
}

static cJSON *job(int id)
{
    char path[64];
    snprintf(path, sizeof path, "/vklora/v1/train/%d", id);
    http_resp r = fx_http(&srv, "GET", path, NULL, NULL, 0);
    return ok_json(&r);
}

static const char *job_state(const cJSON *o) { return cJSON_GetObjectItem(o, "state")->valuestring; }

/* Polls job id until its state is one of the final ones; returns it. */
static cJSON *wait_job(int id, double timeout)
{
    double t0 = fx_now();
    for (;;) {
        cJSON *o = job(id);
        const char *st = job_state(o);
        if (!strcmp(st, "done") || !strcmp(st, "stopped") || !strcmp(st, "failed")) return o;
        cJSON_Delete(o);
        if (fx_now() - t0 > timeout) fail_msg("training job %d did not end in %.0f s", id, timeout);
        usleep(200000);
    }
}

static int start_job(const char *body)
{
    http_resp r = fx_http(&srv, "POST", "/vklora/v1/train", body, NULL, 0);
    if (r.status != 202) print_error("HTTP %ld: %s\n", r.status, r.body);
    assert_int_equal(r.status, 202);
    cJSON *o = cJSON_Parse(r.body);
    int id = (int)cJSON_GetObjectItem(o, "id")->valuedouble;
    cJSON_Delete(o);
    free(r.body);
    return id;
}

static void test_job_trains_and_adapter_is_usable(void **state)
{
    (void)state;
    need();
    int id = start_job("{\"images\": \"imgs\", \"name\": \"job1\", \"max_steps\": 3, \"resolution\": 64, \"rank\": 4, "
                       "\"alpha\": 2, \"lr\": 1e-3, \"seed\": 5}");
    cJSON *o = wait_job(id, 600);
    if (strcmp(job_state(o), "done")) print_error("%s\n", cJSON_PrintUnformatted(o));
    assert_string_equal(job_state(o), "done");
    const cJSON *loss = cJSON_GetObjectItem(o, "loss");
    assert_int_equal(cJSON_GetArraySize(loss), 3);
    /* the losses reported are the run's own log's (job1.csv: step, epoch, loss, ...) */
    char *csv = vkl_test_slurp(vkl_test_dir, "loras/job1.csv");
    assert_non_null(csv);
    char *line = strchr(csv, '\n') + 1;
    for (int i = 0; i < 3; i++) {
        int step, epoch;
        float l;
        assert_int_equal(sscanf(line, "%d,%d,%f", &step, &epoch, &l), 3);
        assert_int_equal(step, i + 1);
        assert_true(fabsf(l - (float)cJSON_GetArrayItem(loss, i)->valuedouble) <= 1e-5f * fabsf(l));
        line = strchr(line, '\n') + 1;
    }
    free(csv);
    cJSON_Delete(o);
    /* listed, and usable by name */
    http_resp r = fx_http(&srv, "GET", "/sdapi/v1/loras", NULL, NULL, 0);
    assert_non_null(strstr(r.body, "\"name\":\"job1\""));
    free(r.body);
    o = post("/sdapi/v1/txt2img", "{\"prompt\": \"a portrait <lora:job1:1>\", \"steps\": 1, \"width\": 32, \"height\": 32}");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images")), 1);
    cJSON_Delete(o);
    /* the same name again: 409 */
    r = fx_http(&srv, "POST", "/vklora/v1/train", "{\"images\": \"imgs\", \"name\": \"job1\"}", NULL, 0);
    assert_int_equal(r.status, 409);
    free(r.body);
}

static void test_delete_stops_with_state_saved(void **state)
{
    (void)state;
    need();
    int id = start_job("{\"images\": \"imgs\", \"name\": \"long\", \"max_steps\": 5000, \"resolution\": 64, "
                       "\"rank\": 4, \"alpha\": 2}");
    double t0 = fx_now();
    for (;;) {
        cJSON *o = job(id);
        int step = (int)cJSON_GetObjectItem(o, "step")->valuedouble;
        cJSON_Delete(o);
        if (step >= 1) break;
        assert_true(fx_now() - t0 < 600);
        usleep(200000);
    }
    http_resp r = fx_http(&srv, "DELETE", "/vklora/v1/train/1000", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    free(r.body);
    char path[64];
    snprintf(path, sizeof path, "/vklora/v1/train/%d", id);
    r = fx_http(&srv, "DELETE", path, NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    free(r.body);
    cJSON *o = wait_job(id, 120);
    assert_string_equal(job_state(o), "stopped");
    assert_true(cJSON_GetObjectItem(o, "step")->valuedouble < 5000);
    cJSON_Delete(o);
    char state_dir[1024];
    snprintf(state_dir, sizeof state_dir, "%s/loras/long.state", vkl_test_dir);
    struct stat st;
    assert_int_equal(stat(state_dir, &st), 0);
}

static void test_bad_training_requests(void **state)
{
    (void)state;
    need();
    const char *bad[][2] = {
        {"{\"name\": \"x\"}", "'images'"},
        {"{\"images\": \"imgs\"}", "'name'"},
        {"{\"images\": \"../..\", \"name\": \"x\"}", "outside --data-root"},
        {"{\"images\": \"/etc\", \"name\": \"x\"}", "not a folder inside --data-root"},
        {"{\"images\": \"nope\", \"name\": \"x\"}", "not a folder inside --data-root"},
        {"{\"images\": \"imgs\", \"name\": \"../x\"}", "'name'"},
        {"{\"images\": \"imgs\", \"name\": \".x\"}", "'name'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"output\": \"/tmp/x\"}", "'output'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"model\": \"/tmp/m\"}", "'model'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"resume\": \"/tmp/s\"}", "'resume'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"bogus\": 1}", "'bogus'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"rank\": [4]}", "'rank'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"rank\": \"four\"}", "'rank'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"network\": \"magic\"}", "'network'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_resp r = fx_http(&srv, "POST", "/vklora/v1/train", bad[i][0], NULL, 0);
        if (r.status != 422 || !strstr(r.body, bad[i][1])) print_error("%s: %ld %s\n", bad[i][0], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, bad[i][1]));
        free(r.body);
    }
    http_resp r = fx_http(&srv, "GET", "/vklora/v1/train/abc", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = fx_http(&srv, "GET", "/vklora/v1/train/1?after=x", NULL, NULL, 0);
    assert_int_equal(r.status, 422);
    assert_non_null(strstr(r.body, "'after'"));
    free(r.body);
    /* a finished job answers ?after=N at once */
    r = fx_http(&srv, "GET", "/vklora/v1/train/1?after=100", NULL, NULL, 0);
    assert_int_equal(r.status, 200);
    assert_true(r.seconds < 10);
    free(r.body);
    assert_int_equal(fx_server_stop(&srv), 0);
    fx_assert_clean_log(&srv);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_job_trains_and_adapter_is_usable),
        cmocka_unit_test(test_delete_stops_with_state_saved),
        cmocka_unit_test(test_bad_training_requests),
    };
    int rc = cmocka_run_group_tests(tests, setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
