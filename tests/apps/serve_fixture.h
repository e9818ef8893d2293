/* For the tests of `vklora serve`: a server started as a child process on a
 * free loopback port (--port 0; the port read from its first line), an HTTP
 * client on libcurl, and a base64 decoder of the test's own. Header-only:
 * included by each tests/apps/test_serve*.c. */
#ifndef VKL_SERVE_FIXTURE_H
#define VKL_SERVE_FIXTURE_H

#include "vkl_test.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct test_server {
    pid_t pid;
    int port;
    char url[64];
    char log[512]; /* its stderr */
} test_server;

static double fx_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Starts `vklora serve --port 0 ARGS` in dir; returns 0 when it listens,
 * else its exit status (or -1) with its messages in the log file. */
static int fx_server_start(test_server *s, const char *dir, const char *args)
{
    const char *bin = getenv("VKLORA_BINARY");
    if (!bin || !*bin) {
        fprintf(stderr, "SKIPPED: VKLORA_BINARY not set (run the tests through ctest)\n");
        skip();
    }
    memset(s, 0, sizeof *s);
    snprintf(s->log, sizeof s->log, "%s/serve-%d.log", dir, (int)getpid() ^ (int)(fx_now() * 1000));
    int fds[2];
    if (pipe(fds)) return -1;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "cd '%s' && exec '%s' serve --port 0 %s 2>'%s'", dir, bin, args, s->log);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    s->pid = pid;
    char line[512];
    size_t n = 0;
    double t0 = fx_now();
    while (fx_now() - t0 < 120) {
        struct pollfd p = {fds[0], POLLIN, 0};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t k = read(fds[0], line + n, sizeof line - 1 - n);
        if (k <= 0) break;
        n += (size_t)k;
        line[n] = 0;
        const char *at = strstr(line, "listening on http://127.0.0.1:");
        if (at && strchr(at, '\n')) {
            s->port = atoi(at + strlen("listening on http://127.0.0.1:"));
            snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
            close(fds[0]);
            return 0;
        }
    }
    close(fds[0]);
    int st = 0;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* SIGTERM, then waits (at most 60 s); the exit status, -1 when it had to be killed. */
static int fx_server_stop(test_server *s)
{
    if (!s->pid) return -1;
    kill(s->pid, SIGTERM);
    int st = 0;
    double t0 = fx_now();
    while (waitpid(s->pid, &st, WNOHANG) == 0) {
        if (fx_now() - t0 > 60) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
            s->pid = 0;
            return -1;
        }
        usleep(20000);
    }
    s->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The server's log holds no validation message. */
static __attribute__((unused)) void fx_assert_clean_log(const test_server *s)
{
    FILE *f = fopen(s->log, "r");
    assert_non_null(f);
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        if (strstr(line, "validation")) {
            fclose(f);
            print_error("server log: %s", line);
            fail();
        }
    }
    fclose(f);
}

typedef struct http_resp {
    long status;
    char *body;
    size_t len;
    double seconds;
    int curl_code;
} http_resp;

static size_t fx_write(char *p, size_t size, size_t n, void *user)
{
    http_resp *r = user;
    size_t k = size * n;
    char *b = realloc(r->body, r->len + k + 1);
    if (!b) return 0;
    memcpy(b + r->len, p, k);
    r->len += k;
    b[r->len] = 0;
    r->body = b;
    return k;
}

static int fx_abort_cb(void *p, curl_off_t a, curl_off_t b, curl_off_t c, curl_off_t d)
{
    (void)a, (void)b, (void)c, (void)d;
    return *(volatile int *)p; /* nonzero: libcurl drops the connection */
}

/* One request: method, server URL + path, body (NULL: none), bearer key
 * (NULL: none), timeout in ms (0: 120 s); the client hangs up once *hang_up
 * (may be NULL) becomes nonzero. */
static http_resp fx_http_ex(const test_server *s, const char *method, const char *path, const char *body,
                            const char *key, long timeout_ms, volatile int *hang_up)
{
    http_resp r = {0};
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[512];
    snprintf(url, sizeof url, "%s%s", s->url, path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    char auth[256];
    if (key) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", key);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, fx_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms ? timeout_ms : 120000L);
    if (hang_up) {
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, fx_abort_cb);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, (void *)hang_up);
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    }
    double t0 = fx_now();
    r.curl_code = (int)curl_easy_perform(c);
    r.seconds = fx_now() - t0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (!r.body) r.body = calloc(1, 1);
    return r;
}

static http_resp fx_http(const test_server *s, const char *method, const char *path, const char *body, const char *key,
                         long timeout_ms)
{
    return fx_http_ex(s, method, path, body, key, timeout_ms, NULL);
}

static __attribute__((unused)) int fx_b64(char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* RFC 4648 base64 (with padding) to bytes; fails the test on anything else. */
static __attribute__((unused)) uint8_t *fx_base64_decode(const char *s, size_t *n)
{
    size_t len = strlen(s);
    assert_int_equal(len % 4, 0);
    uint8_t *out = malloc(len / 4 * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        for (int k = 0; k < 4; k++) v[k] = s[i + k] == '=' ? 0 : fx_b64(s[i + k]);
        for (int k = 0; k < 4; k++) assert_true(v[k] >= 0);
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (uint8_t)(x >> 16);
        if (s[i + 2] != '=') out[o++] = (uint8_t)(x >> 8);
        if (s[i + 3] != '=') out[o++] = (uint8_t)x;
    }
    *n = o;
    return out;
}

static const char fx_b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static __attribute__((unused)) char *fx_base64_encode(const uint8_t *d, size_t n)
{
    char *s = malloc((n + 2) / 3 * 4 + 1), *p = s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n) v |= (uint32_t)d[i + 1] << 8;
        if (i + 2 < n) v |= d[i + 2];
        *p++ = fx_b64chars[v >> 18 & 63];
        *p++ = fx_b64chars[v >> 12 & 63];
        *p++ = i + 1 < n ? fx_b64chars[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? fx_b64chars[v & 63] : '=';
    }
    *p = 0;
    return s;
}

/* ---- one server per test program, with the tiny model and one adapter ---- */

#include "io/image.h"

#include <cjson/cJSON.h>
#include <pthread.h>

static test_server srv;

static __attribute__((unused)) const char *model(void) { return vkl_test_shared_path("refkit/sd/tiny-sd"); }
static __attribute__((unused)) const char *lora_file(void)
{
    return vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors");
}

static __attribute__((unused)) int fx_setup(void **state)
{
    vkl_test_group_setup(state);
    if (!vkl_test_shared_exists("refkit/sd/tiny-sd")) return 0; /* each test skips */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/loras' && cp '%s' '%s/loras/style.safetensors'", vkl_test_dir, lora_file(),
             vkl_test_dir);
    if (system(cmd)) return -1;
    char args[2048];
    snprintf(args, sizeof args, "--model '%s' --lora-dir loras", model());
    return fx_server_start(&srv, vkl_test_dir, args) ? -1 : 0;
}

static __attribute__((unused)) int fx_teardown(void **state)
{
    int rc = 0;
    if (srv.pid) {
        rc = fx_server_stop(&srv);
        if (rc != 0) fprintf(stderr, "the server exited with %d on SIGTERM\n", rc);
    }
    vkl_test_group_teardown(state);
    return rc;
}

static __attribute__((unused)) void need_model(void) { VKL_REQUIRE_SHARED("refkit/sd/tiny-sd"); }

/* A 200 answer's JSON (fails the test otherwise). */
static __attribute__((unused)) cJSON *ok_json(http_resp *r)
{
    if (r->status != 200) print_error("HTTP %ld (curl %d): %s\n", r->status, r->curl_code, r->body);
    assert_int_equal(r->status, 200);
    cJSON *o = cJSON_Parse(r->body);
    assert_non_null(o);
    free(r->body);
    r->body = NULL;
    return o;
}

/* Image i of a txt2img/img2img answer, decoded, and its parameters text. */
static __attribute__((unused)) void answer_image(const cJSON *o, int i, vkl_image *im, char **params)
{
    const cJSON *imgs = cJSON_GetObjectItem(o, "images");
    assert_true(cJSON_IsArray(imgs));
    const cJSON *it = cJSON_GetArrayItem(imgs, i);
    assert_true(cJSON_IsString(it));
    size_t n;
    uint8_t *png = fx_base64_decode(it->valuestring, &n);
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_read_memory(png, n, "answer", 3, VKL_PIX_U8, im, NULL, &e), 0);
    if (params) {
        vkl_png_text *t = NULL;
        int nt = 0;
        assert_int_equal(vkl_png_read_texts_memory(png, n, "answer", &t, &nt, &e), 0);
        const char *p = vkl_png_text_get(t, nt, "parameters");
        assert_non_null(p);
        *params = strdup(p);
        vkl_png_texts_free(t, nt);
    }
    free(png);
}

static __attribute__((unused)) void file_image(const char *name, vkl_image *im, char **params)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", vkl_test_dir, name);
    vkl_err e = {{0}};
    assert_int_equal(vkl_image_read_file(path, 3, VKL_PIX_U8, im, NULL, &e), 0);
    if (params) {
        vkl_png_text *t = NULL;
        int nt = 0;
        assert_int_equal(vkl_png_read_texts_file(path, &t, &nt, &e), 0);
        *params = strdup(vkl_png_text_get(t, nt, "parameters"));
        vkl_png_texts_free(t, nt);
    }
}

static __attribute__((unused)) int same_pixels(const vkl_image *a, const vkl_image *b)
{
    return a->width == b->width && a->height == b->height && a->channels == b->channels &&
           !memcmp(a->data, b->data, (size_t)a->width * a->height * a->channels);
}

static __attribute__((unused)) cJSON *post(const char *path, const char *body)
{
    http_resp r = fx_http(&srv, "POST", path, body, NULL, 0);
    return ok_json(&r);
}

typedef struct client_arg {
    const char *body;
    http_resp r;
} client_arg;

static __attribute__((unused)) void *client(void *p)
{
    client_arg *a = p;
    a->r = fx_http(&srv, "POST", "/sdapi/v1/txt2img", a->body, NULL, 0);
    return NULL;
}

static __attribute__((unused)) cJSON *progress(void)
{
    http_resp r = fx_http(&srv, "GET", "/sdapi/v1/progress", NULL, NULL, 0);
    return ok_json(&r);
}

static __attribute__((unused)) int state_int(const cJSON *p, const char *key)
{
    return (int)cJSON_GetObjectItem(cJSON_GetObjectItem(p, "state"), key)->valuedouble;
}

/* Waits until the running job has made at least k steps; returns that count. */
static __attribute__((unused)) int wait_steps(int k, double timeout)
{
    double t0 = fx_now();
    while (fx_now() - t0 < timeout) {
        cJSON *p = progress();
        int s = state_int(p, "sampling_step");
        cJSON_Delete(p);
        if (s >= k) return s;
        usleep(20000);
    }
    fail_msg("no job reached step %d in %.0f s", k, timeout);
    return -1;
}

/* `vklora --quiet lm generate ARGS` run in the test folder: its stdout, the
 * continuation, without the newline that ends it (malloc'd). */
static __attribute__((unused)) char *fx_lm_generate(const char *args)
{
    char cmd[20480];
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' --quiet lm generate %s 2>/dev/null", vkl_test_dir, getenv("VKLORA_BINARY"),
             args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = calloc(1, 1 << 16);
    size_t n = fread(out, 1, (1 << 16) - 1, p);
    out[n] = 0;
    assert_int_equal(pclose(p), 0);
    if (n && out[n - 1] == '\n') out[n - 1] = 0;
    return out;
}

#endif
