/* vklora serve's device queue through real HTTP clients (libcurl) on a
 * loopback port with the tiny reference model: two concurrent clients both
 * get their own images; an interrupt stops the job within one step; a client
 * that hangs up mid-generation frees the device at the next step; SIGTERM
 * lets the running job finish, then the server exits 0. */
#include "serve_fixture.h"

static void test_two_concurrent_clients(void **state)
{
    (void)state;
    need_model();
    client_arg a = {"{\"prompt\": \"cube\", \"steps\": 3, \"seed\": 21, \"width\": 64, \"height\": 64}", {0}};
    client_arg b = {"{\"prompt\": \"ball\", \"steps\": 3, \"seed\": 22, \"width\": 64, \"height\": 64}", {0}};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, client, &a);
    pthread_create(&tb, NULL, client, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    cJSON *oa = ok_json(&a.r), *ob = ok_json(&b.r);
    /* each got its own image: the one it gets alone */
    cJSON *sa = post("/sdapi/v1/txt2img", a.body), *sb = post("/sdapi/v1/txt2img", b.body);
    vkl_image ia, ib, ja, jb;
    answer_image(oa, 0, &ia, NULL);
    answer_image(ob, 0, &ib, NULL);
    answer_image(sa, 0, &ja, NULL);
    answer_image(sb, 0, &jb, NULL);
    assert_true(same_pixels(&ia, &ja));
    assert_true(same_pixels(&ib, &jb));
    assert_false(same_pixels(&ia, &ib));
    vkl_image_free(&ia), vkl_image_free(&ib), vkl_image_free(&ja), vkl_image_free(&jb);
    cJSON_Delete(oa), cJSON_Delete(ob), cJSON_Delete(sa), cJSON_Delete(sb);
}

static void test_interrupt_stops_within_one_step(void **state)
{
    (void)state;
    need_model();
    client_arg a = {"{\"prompt\": \"cube\", \"steps\": 60, \"seed\": 1, \"width\": 64, \"height\": 64}", {0}};
    pthread_t t;
    pthread_create(&t, NULL, client, &a);
    wait_steps(1, 60);
    cJSON *p = progress();
    int at = state_int(p, "sampling_step");
    assert_true(cJSON_GetObjectItem(p, "progress")->valuedouble > 0);
    assert_string_equal(cJSON_GetObjectItem(cJSON_GetObjectItem(p, "state"), "job")->valuestring, "txt2img");
    cJSON_Delete(p);
    cJSON *o = post("/sdapi/v1/interrupt", "");
    cJSON_Delete(o);
    pthread_join(t, NULL);
    o = ok_json(&a.r);
    cJSON *info = cJSON_Parse(cJSON_GetObjectItem(o, "info")->valuestring);
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(info, "interrupted")));
    int done = (int)cJSON_GetObjectItem(info, "sampling_steps_done")->valuedouble;
    /* the step in flight when the interrupt came finishes; no other */
    fprintf(stderr, "interrupt at step %d, stopped after step %d of 60\n", at, done);
    assert_true(done >= at && done <= at + 1);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images")), 0);
    cJSON_Delete(info);
    cJSON_Delete(o);
}

typedef struct hangup_arg {
    const char *body;
    volatile int hang_up;
    http_resp r;
} hangup_arg;

static void *hangup_client(void *p)
{
    hangup_arg *a = p;
    a->r = fx_http_ex(&srv, "POST", "/sdapi/v1/txt2img", a->body, NULL, 0, &a->hang_up);
    return NULL;
}

/* A client that hangs up mid-generation: its job stops at the next step and
 * the device is free for the next client. */
static void test_disconnect_frees_slot(void **state)
{
    (void)state;
    need_model();
    hangup_arg a = {"{\"prompt\": \"cube\", \"steps\": 60, \"seed\": 2, \"width\": 64, \"height\": 64}", 0, {0}};
    pthread_t t;
    pthread_create(&t, NULL, hangup_client, &a);
    wait_steps(1, 60);
    double t0 = fx_now();
    int at = wait_steps(2, 60);
    double step = fx_now() - t0; /* about one step's time */
    a.hang_up = 1; /* libcurl looks at it about once a second */
    pthread_join(t, NULL);
    assert_int_not_equal(a.r.curl_code, 0); /* the client did hang up */
    free(a.r.body);
    cJSON *p0 = progress();
    at = state_int(p0, "sampling_step"); /* the step when the connection was gone */
    cJSON_Delete(p0);
    /* the server notices at its next step: idle long before the 60 steps */
    t0 = fx_now();
    int last = at;
    for (;;) {
        cJSON *p = progress();
        int jobs = state_int(p, "job_count"), s = state_int(p, "sampling_step");
        cJSON_Delete(p);
        if (!jobs) break;
        if (s > last) last = s;
        assert_true(fx_now() - t0 < 30);
        usleep(20000);
    }
    fprintf(stderr, "hung up at step %d (%.2f s a step); the job stopped by step %d of 60, idle %.2f s later\n", at,
            step, last, fx_now() - t0);
    assert_true(last <= at + 2 && last < 60);
    cJSON *o = post("/sdapi/v1/txt2img", "{\"prompt\": \"cube\", \"steps\": 1, \"width\": 32, \"height\": 32}");
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images")), 1);
    cJSON_Delete(o);
}

/* SIGTERM while a job runs: the job finishes and is answered, then the
 * server exits 0; its log holds no validation message. Runs last. */
static void test_sigterm_finishes_the_job(void **state)
{
    (void)state;
    need_model();
    client_arg a = {"{\"prompt\": \"cube\", \"steps\": 4, \"seed\": 4, \"width\": 64, \"height\": 64}", {0}};
    pthread_t t;
    pthread_create(&t, NULL, client, &a);
    wait_steps(1, 60);
    int rc = fx_server_stop(&srv);
    pthread_join(t, NULL);
    assert_int_equal(rc, 0);
    cJSON *o = ok_json(&a.r);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(o, "images")), 1);
    cJSON_Delete(o);
    fx_assert_clean_log(&srv);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_concurrent_clients),
        cmocka_unit_test(test_interrupt_stops_within_one_step),
        cmocka_unit_test(test_disconnect_frees_slot),
        cmocka_unit_test(test_sigterm_finishes_the_job),
    };
    int rc = cmocka_run_group_tests(tests, fx_setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
