/* The HTTP side of `vklora serve` on libmicrohttpd: a thread per connection
 * (a request that waits for the device blocks only its own thread), request
 * bodies gathered up to a bound, the API key checked before anything is
 * read, and every answer JSON with a status that says what went wrong. */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int serve_error(serve_resp *r, int status, const char *what, const char *fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof detail, fmt, ap);
    va_end(ap);
    free(r->body);
    r->status = status;
    r->body = sj_error_body(what, detail);
    r->len = 0;
    r->type = NULL;
    return 0;
}

int serve_json(serve_resp *r, cJSON *obj)
{
    free(r->body);
    r->body = sj_print_free(obj);
    r->len = 0;
    r->type = NULL;
    r->status = 200;
    if (!r->body) return serve_error(r, 500, "Internal Server Error", "out of host memory");
    return 0;
}

cJSON *serve_parse_object(const serve_req *q, serve_resp *r)
{
    if (!q->body_len) {
        serve_error(r, 400, "Bad Request", "the request has no body; send a JSON object");
        return NULL;
    }
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithLengthOpts(q->body, q->body_len + 1, &end, 1); /* + its NUL: nothing may follow the object */
    if (!o) {
        size_t at = end && end >= q->body ? (size_t)(end - q->body) : 0;
        serve_error(r, 400, "Bad Request", "the body is not valid JSON (at byte %zu)", at);
        return NULL;
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        serve_error(r, 422, "Unprocessable Entity", "the body must be a JSON object");
        return NULL;
    }
    return o;
}

typedef int (*handler_fn)(vkl_server *, const serve_req *, serve_resp *);
static const struct {
    const char *method, *path;
    handler_fn fn;
} routes[] = {
    {"POST", "/sdapi/v1/txt2img", serve_txt2img},
    {"POST", "/sdapi/v1/img2img", serve_img2img},
    {"GET", "/sdapi/v1/progress", serve_progress},
    {"POST", "/sdapi/v1/interrupt", serve_interrupt},
    {"GET", "/sdapi/v1/sd-models", serve_sd_models},
    {"GET", "/sdapi/v1/loras", serve_loras},
    {"GET", "/sdapi/v1/samplers", serve_samplers},
    {"GET", "/sdapi/v1/schedulers", serve_schedulers},
    {"GET", "/sdapi/v1/options", serve_options_get},
    {"POST", "/sdapi/v1/options", serve_options_set},
    {"GET", "/", serve_page},
    {"GET", "/v1/models", serve_lm_models},
    {"POST", "/v1/completions", serve_completions},
    {"POST", "/v1/chat/completions", serve_chat_completions},
    {"POST", "/vklora/v1/train", serve_train_start},
};

void serve_route(vkl_server *s, const serve_req *q, serve_resp *r)
{
    int path_known = 0;
    char allow[64] = "";
    for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
        if (strcmp(q->url, routes[i].path)) continue;
        path_known = 1;
        if (!strcmp(q->method, routes[i].method) || (!strcmp(q->method, "HEAD") && !strcmp(routes[i].method, "GET"))) {
            routes[i].fn(s, q, r);
            return;
        }
        snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s", allow[0] ? ", " : "", routes[i].method);
    }
    if (!strncmp(q->url, "/vklora/v1/train/", 17)) {
        if (!strcmp(q->method, "GET") || !strcmp(q->method, "DELETE") || !strcmp(q->method, "HEAD"))
            serve_train_job(s, q, r);
        else serve_error(r, 405, "Method Not Allowed", "%s %s: this path takes GET, DELETE", q->method, q->url);
        return;
    }
    if (path_known) serve_error(r, 405, "Method Not Allowed", "%s %s: this path takes %s", q->method, q->url, allow);
    else serve_error(r, 404, "Not Found", "%s is not a path of this server", q->url);
}

/* ---- libmicrohttpd ---- */

const char *serve_query(const serve_req *q, const char *key)
{
    return q->conn ? MHD_lookup_connection_value(q->conn, MHD_GET_ARGUMENT_KIND, key) : NULL;
}

typedef struct conn_state {
    char *buf;
    size_t len, cap;
    int too_big;
    int answering; /* counted in answering below */
} conn_state;

/* Requests whose handler has started and whose answer is not yet sent:
 * stopping waits for them, so an answer made just before a SIGTERM (or a
 * lost device's stop) still reaches its client. */
static atomic_int answering;

static enum MHD_Result send_resp(struct MHD_Connection *c, serve_resp *r)
{
    size_t len = r->body ? (r->len ? r->len : strlen(r->body)) : 0;
    struct MHD_Response *resp =
        r->pipe_fd > 0 ? MHD_create_response_from_pipe(r->pipe_fd)
                       : MHD_create_response_from_buffer(len, r->body ? r->body : (char *)"",
                                                         r->body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp) {
        free(r->body);
        if (r->pipe_fd > 0) close(r->pipe_fd);
        return MHD_NO;
    }
    r->body = NULL;
    MHD_add_response_header(resp, "Content-Type", r->type ? r->type : "application/json");
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (r->status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *what, const char *detail)
{
    serve_resp r = {0};
    serve_error(&r, status, what, "%s", detail);
    return send_resp(c, &r);
}

/* Compares the whole key whatever the first difference (no timing hint). */
static int key_ok(const char *given, const char *key)
{
    size_t n = strlen(key), m = given ? strlen(given) : 0;
    unsigned diff = (unsigned)(n != m);
    for (size_t i = 0; i < n; i++) diff |= (unsigned char)key[i] ^ (unsigned char)(i < m ? given[i] : 0);
    return diff == 0;
}

static int authorized(struct MHD_Connection *c, const char *key)
{
    const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7)) return 0;
    return key_ok(h + 7, key);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version;
    vkl_server *s = cls;
    conn_state *st = *con_cls;
    if (!st) {
        /* headers are in: refuse what must be refused before reading a body */
        if (!(st = calloc(1, sizeof *st))) return MHD_NO;
        *con_cls = st;
        /* the page itself holds nothing private (a browser cannot send a
         * bearer key when it opens it); what it asks for needs the key */
        int page = !strcmp(url, "/") && (!strcmp(method, "GET") || !strcmp(method, "HEAD"));
        if (s->api_key && !page && !authorized(c, s->api_key))
            return send_error(c, 401, "Unauthorized", "this server needs 'Authorization: Bearer <key>' (its --api-key)");
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > s->lim.max_body) {
            char d[128];
            snprintf(d, sizeof d, "the body is %s bytes; this server takes at most %zu (--max-body)", cl,
                     s->lim.max_body);
            return send_error(c, 413, "Payload Too Large", d);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        if (st->too_big) return MHD_YES;
        if (st->len + n > s->lim.max_body) {
            /* a chunked body with no length: read on, keep nothing */
            st->too_big = 1;
            free(st->buf);
            st->buf = NULL;
            st->len = st->cap = 0;
            return MHD_YES;
        }
        if (st->len + n + 1 > st->cap) {
            size_t cap = st->cap ? st->cap : 4096;
            while (cap < st->len + n + 1) cap *= 2;
            char *b = realloc(st->buf, cap);
            if (!b) return MHD_NO;
            st->buf = b;
            st->cap = cap;
        }
        memcpy(st->buf + st->len, upload, n);
        st->len += n;
        return MHD_YES;
    }
    if (st->too_big) {
        char d[128];
        snprintf(d, sizeof d, "the body is larger than this server takes (%zu bytes, --max-body)", s->lim.max_body);
        return send_error(c, 413, "Payload Too Large", d);
    }
    if (st->buf) st->buf[st->len] = 0;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    serve_req q = {method, url, st->buf ? st->buf : "", st->len, ci ? ci->connect_fd : -1, c};
    serve_resp r = {0};
    double t0 = vkl_serve_now();
    st->answering = 1;
    atomic_fetch_add(&answering, 1);
    serve_route(s, &q, &r);
    if (!r.status) serve_error(&r, 500, "Internal Server Error", "the handler gave no answer");
    if (!s->quiet) fprintf(stderr, "%s %s %d %.2f s\n", method, url, r.status, vkl_serve_now() - t0);
    /* a client that hung up gets nothing; its slot is already free */
    return send_resp(c, &r);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    conn_state *st = *con_cls;
    if (st) {
        if (st->answering) atomic_fetch_sub(&answering, 1);
        free(st->buf);
        free(st);
    }
    *con_cls = NULL;
}

int serve_http_start(vkl_server *s, const char *host, int port, struct MHD_Daemon **out, int *bound_port, vkl_err *e)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int gr = getaddrinfo(host, NULL, &hints, &ai);
    if (gr || !ai) return vkl_fail(e, "--host %s: %s", host, gai_strerror(gr));
    struct sockaddr_storage sa;
    memcpy(&sa, ai->ai_addr, ai->ai_addrlen);
    int v6 = ai->ai_family == AF_INET6;
    freeaddrinfo(ai);
    if (v6) ((struct sockaddr_in6 *)&sa)->sin6_port = htons((uint16_t)port);
    else ((struct sockaddr_in *)&sa)->sin_port = htons((uint16_t)port);
    unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     (v6 ? MHD_USE_IPv6 : 0);
    struct MHD_Daemon *d =
        MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                         MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120, MHD_OPTION_END);
    if (!d) return vkl_fail(e, "cannot listen on %s port %d (in use, or not an address of this machine)", host, port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *bound_port = di ? di->port : port;
    *out = d;
    return 0;
}

void serve_http_stop(struct MHD_Daemon *d)
{
    /* the answers being made and sent go out first (at most 10 s) */
    for (double t0 = vkl_serve_now(); d && atomic_load(&answering) > 0 && vkl_serve_now() - t0 < 10;)
        usleep(10000);
    if (d) MHD_stop_daemon(d);
}
