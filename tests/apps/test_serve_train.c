/* vklora serve's training jobs through libcurl: a job trains the library's
 * `vklora train` on a folder inside --data-root, reports its loss per step
 * (the same values as the run's own loss log), and its adapter is then
 * listed and usable by name in a prompt; a generation request sent during
 * a long job runs between two of its steps; DELETE stops a running job with its
 * state saved, as Ctrl-C does; paths outside the data root, settings the
 * server owns and a name in use are refused by name. Uploaded images
 * (base64 with captions) become an image folder in the data root that
 * trains exactly as the same files on disk do; bad uploads leave nothing
 * behind. */
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

static unsigned char *file_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void test_job_trains_and_adapter_is_usable(void **state)
{
    (void)state;
    need();
    int id = start_job("{\"images\": \"imgs\", \"name\": \"job1\", \"max_steps\": 3, \"resolution\": 64, \"rank\": 4, "
                       "\"alpha\": 2, \"lr\": 1e-3, \"seed\": 5, \"sample_prompt\": \"a portrait\\n# not a prompt\\n\\na castle\", "
                       "\"sample_every\": 2, \"sample_steps\": 2}");
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
    /* the samples of step 2 (3 is no multiple of 2), one per prompt line, served as the trainer wrote them */
    const cJSON *samples = cJSON_GetObjectItem(o, "samples");
    assert_int_equal(cJSON_GetArraySize(samples), 2);
    const char *prompts[] = {"a portrait", "a castle"};
    for (int i = 0; i < 2; i++) {
        const cJSON *smp = cJSON_GetArrayItem(samples, i);
        assert_int_equal((int)cJSON_GetObjectItem(smp, "step")->valuedouble, 2);
        assert_int_equal((int)cJSON_GetObjectItem(smp, "index")->valuedouble, i);
        char want_url[128], file[1024];
        snprintf(want_url, sizeof want_url, "/vklora/v1/train/%d/samples/step000002-%d.png", id, i);
        assert_string_equal(cJSON_GetObjectItem(smp, "url")->valuestring, want_url);
        http_resp sr = fx_http(&srv, "GET", want_url, NULL, NULL, 0);
        assert_int_equal(sr.status, 200);
        snprintf(file, sizeof file, "%s/loras/job1.samples/step000002-%d.png", vkl_test_dir, i);
        size_t n;
        unsigned char *disk = file_bytes(file, &n);
        assert_int_equal(sr.len, n);
        assert_memory_equal(sr.body, disk, n);
        vkl_png_text *t = NULL;
        int nt = 0;
        vkl_err e = {{0}};
        assert_int_equal(vkl_png_read_texts_memory(sr.body, sr.len, "sample", &t, &nt, &e), 0);
        assert_string_equal(vkl_png_text_get(t, nt, "parameters"), prompts[i]);
        vkl_png_texts_free(t, nt);
        free(disk);
        free(sr.body);
    }
    const char *not_samples[] = {"samples/step000003-0.png", "samples/step000002-2.png", "samples/step2-0.png",
                                 "samples/../../job1.safetensors", "samples/step000002-0.pngx", "samples/"};
    for (size_t i = 0; i < sizeof not_samples / sizeof *not_samples; i++) {
        char path[256];
        snprintf(path, sizeof path, "/vklora/v1/train/%d/%s", id, not_samples[i]);
        http_resp sr = fx_http(&srv, "GET", path, NULL, NULL, 0);
        if (sr.status != 404) print_error("%s: %ld\n", path, sr.status);
        assert_int_equal(sr.status, 404);
        free(sr.body);
    }
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
    /* a generation request during the job runs between two of its steps
     * (not after its 5000), then the job goes on */
    double tg = fx_now();
    cJSON *img = post("/sdapi/v1/txt2img", "{\"prompt\": \"a portrait\", \"steps\": 2, \"width\": 32, \"height\": 32}");
    fprintf(stderr, "txt2img during training: %.2f s\n", fx_now() - tg);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(img, "images")), 1);
    cJSON_Delete(img);
    cJSON *mid = job(id);
    assert_string_equal(job_state(mid), "running");
    int step_then = (int)cJSON_GetObjectItem(mid, "step")->valuedouble;
    cJSON_Delete(mid);
    for (;;) {
        cJSON *o = job(id);
        int step = (int)cJSON_GetObjectItem(o, "step")->valuedouble;
        cJSON_Delete(o);
        if (step > step_then) break;
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
    int stopped_at = (int)cJSON_GetObjectItem(o, "step")->valuedouble;
    assert_true(stopped_at < 5000);
    cJSON_Delete(o);
    char state_dir[1024];
    snprintf(state_dir, sizeof state_dir, "%s/loras/long.state", vkl_test_dir);
    struct stat st;
    assert_int_equal(stat(state_dir, &st), 0);
    /* the state saved is the last step's: the job stopped at that step's end */
    char latest_path[1100], latest[64] = "", want[64];
    snprintf(latest_path, sizeof latest_path, "%s/latest", state_dir);
    FILE *lf = fopen(latest_path, "r");
    assert_non_null(lf);
    assert_non_null(fgets(latest, sizeof latest, lf));
    fclose(lf);
    snprintf(want, sizeof want, "step-%06d\n", stopped_at);
    assert_string_equal(latest, want);
}

/* Standard base64 (RFC 4648), written here so the test does not lean on
 * the server's own encoder. */
static char *b64(const unsigned char *d, size_t n)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = malloc(4 * ((n + 2) / 3) + 1), *p = o;
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)d[i] << 16 | (i + 1 < n ? (unsigned)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *p++ = A[v >> 18 & 63];
        *p++ = A[v >> 12 & 63];
        *p++ = i + 1 < n ? A[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? A[v & 63] : '=';
    }
    *p = 0;
    return o;
}

/* The loss column of a run's log. */
static int csv_losses(const char *rel, float *out, int max)
{
    char *csv = vkl_test_slurp(vkl_test_dir, rel);
    assert_non_null(csv);
    int n = 0;
    for (char *line = strchr(csv, '\n'); line && line[1] && n < max; line = strchr(line + 1, '\n')) {
        int step, epoch;
        if (sscanf(line + 1, "%d,%d,%f", &step, &epoch, &out[n]) == 3) n++;
    }
    free(csv);
    return n;
}

static void test_uploaded_images_train_as_the_folder(void **state)
{
    (void)state;
    need();
    const char *src = vkl_test_shared_path("data/wesnoth-portraits/test16-128px");
    char list[4096];
    snprintf(list, sizeof list, "cd '%s/data/imgs' && ls *.png | sort", vkl_test_dir);
    FILE *p = popen(list, "r");
    assert_non_null(p);
    cJSON *body = cJSON_CreateObject(), *ups = cJSON_CreateArray();
    char name[256], first[256] = "";
    int n = 0;
    while (fgets(name, sizeof name, p)) {
        name[strcspn(name, "\n")] = 0;
        if (!first[0]) snprintf(first, sizeof first, "%s", name);
        char path[2048], txt[2048];
        snprintf(path, sizeof path, "%s/%s", src, name);
        snprintf(txt, sizeof txt, "%.*s.txt", (int)(strlen(name) - 4), name);
        size_t len;
        unsigned char *bytes = file_bytes(path, &len);
        char *enc = b64(bytes, len), *caption = vkl_test_slurp(src, txt);
        cJSON *u = cJSON_CreateObject();
        cJSON_AddStringToObject(u, "image", enc);
        cJSON_AddStringToObject(u, "caption", caption ? caption : "");
        cJSON_AddItemToArray(ups, u);
        free(bytes), free(enc), free(caption);
        n++;
    }
    pclose(p);
    assert_true(n >= 2);
    cJSON_AddStringToObject(body, "name", "up1");
    cJSON_AddItemToObject(body, "uploads", ups);
    /* the settings of job1, which trained on the same files in data/imgs */
    const char *settings = "{\"max_steps\": 3, \"resolution\": 64, \"rank\": 4, \"alpha\": 2, \"lr\": 1e-3, \"seed\": 5}";
    cJSON *set = cJSON_Parse(settings);
    for (cJSON *it = set->child; it; it = it->next) cJSON_AddItemToObject(body, it->string, cJSON_Duplicate(it, 1));
    cJSON_Delete(set);
    char *text = cJSON_PrintUnformatted(body);
    struct stat st;
    char job1_csv[2048];
    snprintf(job1_csv, sizeof job1_csv, "%s/loras/job1.csv", vkl_test_dir);
    if (stat(job1_csv, &st)) {
        char b[512];
        snprintf(b, sizeof b, "{\"images\": \"imgs\", \"name\": \"job1\", %s", settings + 1);
        cJSON_Delete(wait_job(start_job(b), 600));
    }
    cJSON *o = wait_job(start_job(text), 600);
    if (strcmp(job_state(o), "done")) print_error("%s\n", cJSON_PrintUnformatted(o));
    assert_string_equal(job_state(o), "done");
    cJSON_Delete(o);
    free(text);
    cJSON_Delete(body);
    /* the folder holds the files as sent, in order, with their captions */
    char want_path[2048], got_dir[2048];
    snprintf(want_path, sizeof want_path, "%s/%s", src, first);
    snprintf(got_dir, sizeof got_dir, "%s/data/uploads/up1/0001.png", vkl_test_dir);
    size_t wl, gl;
    unsigned char *w = file_bytes(want_path, &wl), *g = file_bytes(got_dir, &gl);
    assert_int_equal(wl, gl);
    assert_memory_equal(w, g, wl);
    free(w), free(g);
    snprintf(got_dir, sizeof got_dir, "%s/data/uploads/up1", vkl_test_dir);
    char txt[300];
    snprintf(txt, sizeof txt, "%.*s.txt", (int)(strlen(first) - 4), first);
    char *want_caption = vkl_test_slurp(src, txt), *got_caption = vkl_test_slurp(got_dir, "0001.txt");
    assert_string_equal(got_caption, want_caption);
    free(want_caption), free(got_caption);
    /* and train as the same files on disk: the same losses */
    float a[8], b[8];
    int na = csv_losses("loras/job1.csv", a, 8), nb = csv_losses("loras/up1.csv", b, 8);
    assert_int_equal(na, 3);
    assert_int_equal(nb, 3);
    for (int i = 0; i < 3; i++) assert_true(fabsf(a[i] - b[i]) <= 1e-6f * fabsf(a[i]));
    /* bad uploads: refused by name, nothing left in the data root */
    size_t len;
    unsigned char *png = file_bytes(want_path, &len);
    char *half = b64(png, len / 2), *whole = b64(png, len);
    free(png);
    char *bad_body = malloc(strlen(whole) + strlen(half) + 512);
    sprintf(bad_body, "{\"name\": \"bad\", \"max_steps\": 1, \"uploads\": [{\"image\": \"%s\"}, {\"image\": \"%s\"}]}", whole,
            half);
    const char *bad[][2] = {
        {bad_body, "uploads[1]"},
        {"{\"name\": \"bad\", \"uploads\": [{\"image\": \"@@@\"}]}", "'uploads[0].image'"},
        {"{\"name\": \"bad\", \"uploads\": []}", "'uploads'"},
        {"{\"name\": \"bad\", \"uploads\": [{\"image\": \"AAAA\", \"path\": \"/etc\"}]}", "'uploads[0].path'"},
        {"{\"name\": \"bad\", \"uploads\": [5]}", "'uploads[0]'"},
        {"{\"name\": \"bad\", \"images\": \"imgs\", \"uploads\": [{\"image\": \"AAAA\"}]}", "not both"},
        {"{\"name\": \"bad\", \"bogus\": 1, \"uploads\": [{\"image\": \"AAAA\"}]}", "'bogus'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_resp r = fx_http(&srv, "POST", "/vklora/v1/train", bad[i][0], NULL, 0);
        if (r.status != 422 || !strstr(r.body, bad[i][1])) print_error("%.80s: %ld %s\n", bad[i][0], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, bad[i][1]));
        free(r.body);
    }
    free(bad_body), free(half), free(whole);
    snprintf(list, sizeof list, "ls -A '%s/data/uploads'", vkl_test_dir);
    p = popen(list, "r");
    char left[4096] = "";
    size_t k = fread(left, 1, sizeof left - 1, p);
    left[k] = 0;
    pclose(p);
    assert_string_equal(left, "up1\n");
    /* the same name again: 409 */
    http_resp r = fx_http(&srv, "POST", "/vklora/v1/train", "{\"name\": \"up1\", \"uploads\": [{\"image\": \"AAAA\"}]}", NULL, 0);
    assert_int_equal(r.status, 409);
    free(r.body);
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
        {"{\"images\": \"imgs\", \"name\": \"x\", \"sample_prompt\": 5}", "'sample_prompt'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"sample_prompt\": \"# a comment only\\n\"}", "'sample_prompt'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"sample_prompt\": \"1\\n2\\n3\\n4\\n5\\n6\\n7\\n8\\n9\\n10\\n11\\n12\\n13\\n14\\n15\\n16\\n17\"}",
         "'sample_prompt'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"sample_prompts\": \"/etc/hostname\"}", "'sample_prompts'"},
        {"{\"images\": \"imgs\", \"name\": \"x\", \"sample_prompt\": \"a\", \"epochs\": 1}", "'sample_every'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_resp r = fx_http(&srv, "POST", "/vklora/v1/train", bad[i][0], NULL, 0);
        if (r.status != 422 || !strstr(r.body, bad[i][1])) print_error("%s: %ld %s\n", bad[i][0], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, bad[i][1]));
        free(r.body);
    }
    char left[1024];
    snprintf(left, sizeof left, "%s/loras/x.samples", vkl_test_dir);
    assert_int_equal(access(left, F_OK), -1); /* a refused request writes nothing */
    http_resp r = fx_http(&srv, "GET", "/vklora/v1/train/abc", NULL, NULL, 0);
    assert_int_equal(r.status, 404);
    free(r.body);
    r = fx_http(&srv, "DELETE", "/vklora/v1/train/1/samples/step000002-0.png", NULL, NULL, 0);
    assert_int_equal(r.status, 405);
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
        cmocka_unit_test(test_uploaded_images_train_as_the_folder),
        cmocka_unit_test(test_delete_stops_with_state_saved),
        cmocka_unit_test(test_bad_training_requests),
    };
    int rc = cmocka_run_group_tests(tests, setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
