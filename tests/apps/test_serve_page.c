/* vklora serve's web page in a real browser: Debian's chromium, headless,
 * opens the page with settings in its address (prompt, size, seed, the
 * adapter's slider at 0.5) and presses "Before / after"; the page then
 * calls the API itself and shows two images. The test reads them from the
 * page's DOM: each has the pixels the API gives for the prompt the page
 * sent (<lora:style:0> and <lora:style:0.5>), and they differ. Then the
 * training tab: a 3-step job started from the page, whose loss curve gets
 * its 3 points and whose adapter then appears in the page's list. */
#include "serve_fixture.h"

static void need_chromium(void)
{
    if (system("command -v chromium >/dev/null 2>&1")) {
        fprintf(stderr, "SKIPPED: chromium is not installed (Debian: apt-get install chromium)\n");
        skip();
    }
}

/* The n-th <img src="data:image/png;base64,..."> of html, decoded. */
static int dom_image(const char *html, int n, vkl_image *im)
{
    const char *key = "src=\"data:image/png;base64,";
    const char *p = html;
    for (int i = 0; i <= n; i++) {
        p = strstr(p, key);
        if (!p) return -1;
        p += strlen(key);
    }
    const char *end = strchr(p, '"');
    if (!end) return -1;
    char *b64 = strndup(p, (size_t)(end - p));
    size_t len;
    uint8_t *png = fx_base64_decode(b64, &len);
    vkl_err e = {{0}};
    int rc = vkl_image_read_memory(png, len, "page image", 3, VKL_PIX_U8, im, NULL, &e);
    free(png);
    free(b64);
    return rc;
}

static int setup(void **state)
{
    if (fx_setup(state)) return -1;
    if (!srv.pid) return 0;
    fx_server_stop(&srv); /* again, with training */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/data/imgs' && cp '%s'/*.png '%s'/*.txt '%s/data/imgs/'", vkl_test_dir,
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"),
             vkl_test_shared_path("data/wesnoth-portraits/test16-128px"), vkl_test_dir);
    if (system(cmd)) return -1;
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --lora-dir loras --data-root data", model());
    return fx_server_start(&srv, vkl_test_dir, args) ? -1 : 0;
}

static void test_page_trains(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    VKL_REQUIRE_SHARED("data/wesnoth-portraits/test16-128px");
    need_chromium();
    char cmd[4096];
    /* the page follows the job with ?after=N requests that answer at each
     * step, so the browser's virtual time waits while the job runs */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && HOME='%s' setsid timeout 400 chromium --headless --no-sandbox --disable-gpu "
             "--user-data-dir='%s/chromium' --virtual-time-budget=20000 --dump-dom "
             "'%s/#train-images=imgs&train-name=webjob&train-steps=3&train-rank=4&go=train' "
             ">train.html 2>chromium.log",
             vkl_test_dir, vkl_test_dir, vkl_test_dir, srv.url);
    double t0 = fx_now();
    assert_int_equal(system(cmd), 0);
    fprintf(stderr, "chromium (training): %.1f s\n", fx_now() - t0);
    char *html = vkl_test_slurp(vkl_test_dir, "train.html");
    assert_non_null(html);
    if (!strstr(html, "done, step 3 / 3")) print_error("%s\n", strstr(html, "train-status") ? strstr(html, "train-status") : html);
    assert_non_null(strstr(html, "done, step 3 / 3, loss "));
    assert_non_null(strstr(html, "data-points=\"3\""));
    assert_non_null(strstr(html, "<span class=\"name\">webjob</span>"));
    free(html);
}

static void test_page_generates_before_after(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd");
    need_chromium();
    char cmd[4096];
    /* its own session: chromium's exit must not reach the server's signals */
    snprintf(cmd, sizeof cmd,
             "cd '%s' && HOME='%s' setsid timeout 240 chromium --headless --no-sandbox --disable-gpu "
             "--user-data-dir='%s/chromium' --virtual-time-budget=120000 --dump-dom "
             "'%s/#prompt=cube&steps=2&seed=3&width=64&height=64&sampler=Euler&lora.style=0.5&go=compare' "
             ">page.html 2>chromium.log",
             vkl_test_dir, vkl_test_dir, vkl_test_dir, srv.url);
    double t0 = fx_now();
    int rc = system(cmd);
    fprintf(stderr, "chromium: %.1f s\n", fx_now() - t0);
    assert_int_equal(rc, 0);
    char *html = vkl_test_slurp(vkl_test_dir, "page.html");
    assert_non_null(html);
    /* the page filled its form from the address and shows both captions */
    assert_non_null(strstr(html, "cube &lt;lora:style:0&gt;"));
    assert_non_null(strstr(html, "cube &lt;lora:style:0.5&gt;"));
    vkl_image before, after;
    assert_int_equal(dom_image(html, 0, &before), 0);
    assert_int_equal(dom_image(html, 1, &after), 0);
    assert_false(same_pixels(&before, &after)); /* the slider changed the image */
    const char *prompts[] = {"cube <lora:style:0>", "cube <lora:style:0.5>"};
    const vkl_image *shown[] = {&before, &after};
    for (int i = 0; i < 2; i++) {
        char body[512];
        snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"steps\": 2, \"seed\": 3, \"width\": 64, \"height\": 64, "
                 "\"sampler_name\": \"Euler\"}", prompts[i]);
        cJSON *o = post("/sdapi/v1/txt2img", body);
        vkl_image api;
        answer_image(o, 0, &api, NULL);
        assert_true(same_pixels(&api, shown[i]));
        vkl_image_free(&api);
        cJSON_Delete(o);
    }
    vkl_image_free(&before);
    vkl_image_free(&after);
    free(html);
    assert_int_equal(fx_server_stop(&srv), 0);
    fx_assert_clean_log(&srv);
}

int main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_trains),
        cmocka_unit_test(test_page_generates_before_after),
    };
    int rc = cmocka_run_group_tests(tests, setup, fx_teardown);
    curl_global_cleanup();
    return rc;
}
