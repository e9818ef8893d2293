/* vklora serve on a device that is lost during a request (injected with
 * VKLORA_FAULT_DEVICE_LOST_AT): the request gets a 500 naming it, and the
 * server, which cannot run anything more, stops by itself with status 1
 * (for a supervisor to start it again) instead of failing every later
 * request. The answer made just before the stop still reaches its client. */
#include "serve_fixture.h"

static void test_lost_device_stops_the_server(void **state)
{
    (void)state;
    need_model();
    setenv("VKLORA_FAULT_DEVICE_LOST_AT", "2", 1);
    char args[2048];
    snprintf(args, sizeof args, "--model '%s'", model());
    int started = fx_server_start(&srv, vkl_test_dir, args);
    unsetenv("VKLORA_FAULT_DEVICE_LOST_AT");
    assert_int_equal(started, 0);
    http_resp r = fx_http(&srv, "POST", "/sdapi/v1/txt2img", "{\"prompt\": \"x\", \"steps\": 2, \"width\": 32, \"height\": 32}",
                          NULL, 0);
    if (r.status != 500 || !strstr(r.body, "the device was lost"))
        print_error("%ld (curl %d) %s\n", r.status, r.curl_code, r.body);
    assert_int_equal(r.status, 500);
    assert_non_null(strstr(r.body, "the device was lost"));
    free(r.body);
    /* it exits by itself, with status 1 */
    int st = 0;
    double t0 = fx_now();
    while (waitpid(srv.pid, &st, WNOHANG) == 0) {
        assert_true(fx_now() - t0 < 30);
        usleep(50000);
    }
    srv.pid = 0;
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lost_device_stops_the_server),
    };
    int rc = cmocka_run_group_tests(tests, vkl_test_group_setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
