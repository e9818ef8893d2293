/* /sdapi/v1/progress's current_image: the VAE's decoding of the sampler's
 * prediction of the clean image, every show_progress_every_n_steps steps,
 * while a client polls progress (one that does not gets none made).
 * The last step's preview (Euler: its prediction is the final latent) has
 * the finished image's pixels within 2/255; previews come while a job still
 * samples; skip_current_image and a period of 0 leave them out; bad values
 * of the options are 422s naming them. */
#include "serve_fixture.h"

static void set_options(const char *body, long want)
{
    http_resp r = fx_http(&srv, "POST", "/sdapi/v1/options", body, NULL, 0);
    if (r.status != want) print_error("%s: HTTP %ld %s\n", body, r.status, r.body);
    assert_int_equal(r.status, want);
    free(r.body);
}

/* current_image of a progress answer, decoded (NULL: none). */
static int current_image(const char *query, vkl_image *im)
{
    char path[128];
    snprintf(path, sizeof path, "/sdapi/v1/progress%s", query);
    http_resp r = fx_http(&srv, "GET", path, NULL, NULL, 0);
    cJSON *o = ok_json(&r);
    const cJSON *ci = cJSON_GetObjectItem(o, "current_image");
    int has = cJSON_IsString(ci);
    if (has) {
        size_t n;
        uint8_t *png = fx_base64_decode(ci->valuestring, &n);
        vkl_err e = {{0}};
        assert_int_equal(vkl_image_read_memory(png, n, "preview", 3, VKL_PIX_U8, im, NULL, &e), 0);
        free(png);
    } else {
        assert_true(cJSON_IsNull(ci));
    }
    cJSON_Delete(o);
    return has;
}

static int max_diff(const vkl_image *a, const vkl_image *b)
{
    assert_int_equal(a->width, b->width);
    assert_int_equal(a->height, b->height);
    int m = 0;
    for (size_t i = 0; i < (size_t)a->width * a->height * 3; i++) {
        int d = abs((int)vkl_image_u8(a)[i] - (int)vkl_image_u8(b)[i]);
        if (d > m) m = d;
    }
    return m;
}

/* A client watching: progress polled until *stop. */
static void *watcher(void *p)
{
    volatile int *stop = p;
    while (!*stop) {
        cJSON_Delete(progress());
        usleep(100000);
    }
    return NULL;
}

static void test_last_step_preview_is_the_image(void **state)
{
    (void)state;
    need_model();
    set_options("{\"show_progress_every_n_steps\": -1}", 200);
    volatile int stop = 0;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, watcher, (void *)&stop), 0);
    cJSON *o = post("/sdapi/v1/txt2img", "{\"prompt\": \"a cube\", \"steps\": 4, \"seed\": 5, \"width\": 32, "
                                         "\"height\": 64, \"sampler_name\": \"Euler\"}");
    stop = 1;
    pthread_join(th, NULL);
    vkl_image img, pre;
    answer_image(o, 0, &img, NULL);
    cJSON_Delete(o);
    assert_true(current_image("", &pre)); /* kept after the job, until another starts */
    int d = max_diff(&img, &pre);
    fprintf(stderr, "last preview vs image: at most %d/255 apart\n", d);
    assert_true(d <= 2);
    vkl_image_free(&pre);
    vkl_image_free(&img);
    vkl_image none;
    assert_false(current_image("?skip_current_image=true", &none));
}

typedef struct {
    http_resp r;
} bg_req;

static void *long_job(void *p)
{
    bg_req *b = p;
    b->r = fx_http(&srv, "POST", "/sdapi/v1/txt2img",
                   "{\"prompt\": \"a ball\", \"steps\": 40, \"seed\": 2, \"width\": 64, \"height\": 64}", NULL, 0);
    return NULL;
}

static void test_previews_while_sampling(void **state)
{
    (void)state;
    need_model();
    set_options("{\"show_progress_every_n_steps\": 2}", 200);
    bg_req b = {0};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, long_job, &b), 0);
    wait_steps(2, 120);
    int seen = 0, step = 0;
    for (double t0 = fx_now(); !seen && fx_now() - t0 < 120; usleep(20000)) {
        cJSON *p = progress();
        step = state_int(p, "sampling_step");
        int steps = state_int(p, "sampling_steps");
        seen = cJSON_IsString(cJSON_GetObjectItem(p, "current_image")) && step >= 2 && step < steps;
        cJSON_Delete(p);
    }
    http_resp ir = fx_http(&srv, "POST", "/sdapi/v1/interrupt", "{}", NULL, 0); /* seen: the rest is not needed */
    free(ir.body);
    pthread_join(th, NULL);
    assert_int_equal(b.r.status, 200);
    free(b.r.body);
    fprintf(stderr, "a preview shown at step %d of 40\n", step);
    assert_true(seen);
}

static void test_no_previews_when_off(void **state)
{
    (void)state;
    need_model();
    set_options("{\"show_progress_every_n_steps\": 1, \"live_previews_enable\": false}", 200);
    http_resp r = fx_http(&srv, "GET", "/sdapi/v1/options", NULL, NULL, 0);
    cJSON *o = ok_json(&r);
    assert_int_equal((int)cJSON_GetObjectItem(o, "show_progress_every_n_steps")->valuedouble, 0);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(o, "live_previews_enable")));
    cJSON_Delete(o);
    cJSON_Delete(post("/sdapi/v1/txt2img", "{\"prompt\": \"a cube\", \"steps\": 2, \"width\": 32, \"height\": 32}"));
    vkl_image none;
    assert_false(current_image("", &none)); /* and the earlier job's preview is not shown for this one */
}

static void test_none_made_unwatched(void **state)
{
    (void)state;
    need_model();
    set_options("{\"show_progress_every_n_steps\": 1}", 200);
    sleep(11); /* no progress request for longer than a watcher's 10 s */
    cJSON_Delete(post("/sdapi/v1/txt2img", "{\"prompt\": \"a cube\", \"steps\": 2, \"width\": 32, \"height\": 32}"));
    vkl_image none;
    assert_false(current_image("", &none));
}

static void test_bad_preview_options(void **state)
{
    (void)state;
    need_model();
    const char *bad[] = {"{\"show_progress_every_n_steps\": \"often\"}", "{\"show_progress_every_n_steps\": -2}",
                         "{\"show_progress_every_n_steps\": 1.5}", "{\"live_previews_enable\": 1}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        http_resp r = fx_http(&srv, "POST", "/sdapi/v1/options", bad[i], NULL, 0);
        if (r.status != 422) print_error("%s: HTTP %ld %s\n", bad[i], r.status, r.body);
        assert_int_equal(r.status, 422);
        assert_non_null(strstr(r.body, strstr(bad[i], "live") ? "live_previews_enable" : "show_progress_every_n_steps"));
        free(r.body);
    }
    assert_int_equal(fx_server_stop(&srv), 0);
    fx_assert_clean_log(&srv); /* the decodes inside the sampling loop are clean under validation */
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_last_step_preview_is_the_image),
        cmocka_unit_test(test_previews_while_sampling),
        cmocka_unit_test(test_no_previews_when_off),
        cmocka_unit_test(test_none_made_unwatched),
        cmocka_unit_test(test_bad_preview_options),
    };
    int rc = cmocka_run_group_tests(tests, fx_setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
