/* The OpenAI-style text API, when `vklora serve --lm-model DIR` loaded a
 * LLaMA-family model: GET /v1/models, POST /v1/completions and
 * /v1/chat/completions (whole answers, or server-sent events with
 * "stream": true). Adapters are loaded at start (--lm-lora DIR[:W], ids 0,
 * 1, ... in order) and each request may set their scales as llama.cpp's
 * server takes them: "lora": [{"id": 0, "scale": 0.5}] (an adapter left out
 * of the list is off for that request). Decoding is greedy, as `vklora lm
 * generate`'s: the same prompt gives the same text. */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include "llama/llama_generate.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The text so far, decoded as `lm generate` prints it: llama2.c pieces one
 * by one, SentencePiece by decoding everything and keeping what is new. */
typedef struct lm_text {
    const vkl_app_lm_tok *tok;
    int32_t *all; /* prompt + new ids */
    int n, n_prompt;
    char *text;   /* the continuation */
    size_t len, cap, prompt_bytes;
    const char *const *stop;
    int nstop, stopped;
    serve_queue *q;
    serve_job *job;
    int max_new;
    /* streaming: events go to sse_fd (-1: none) as the text grows; sent
     * counts the bytes of text already sent */
    int sse_fd;
    size_t sent;
    struct lm_run *run;
} lm_text;

static int stream_delta(lm_text *t, int final);

static int append(lm_text *t, const char *s, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *b = realloc(t->text, cap);
        if (!b) return -1;
        t->text = b;
        t->cap = cap;
    }
    memcpy(t->text + t->len, s, n);
    t->len += n;
    t->text[t->len] = 0;
    return 0;
}

static int on_token(void *user, int32_t id)
{
    lm_text *t = user;
    int prev = t->all[t->n - 1];
    t->all[t->n++] = id;
    if (t->tok->l2c) {
        char piece[256];
        if (id != 1) {
            vkl_l2c_tok_decode(t->tok->l2c, prev, id, piece, sizeof piece);
            if (append(t, piece, strlen(piece))) return 1;
        }
    } else {
        char *s = vkl_sp_decode(t->tok->sp, t->all, t->n);
        if (!s) return 1;
        size_t len = strlen(s);
        if (len > t->prompt_bytes + t->len && append(t, s + t->prompt_bytes + t->len, len - t->prompt_bytes - t->len)) {
            free(s);
            return 1;
        }
        free(s);
    }
    /* a stop string ends the text before it, as OpenAI's "stop" does */
    for (int i = 0; i < t->nstop; i++) {
        char *at = strstr(t->text ? t->text : "", t->stop[i]);
        if (at) {
            t->len = (size_t)(at - t->text);
            t->text[t->len] = 0;
            t->stopped = 1;
            return 1;
        }
    }
    if (t->sse_fd >= 0 && stream_delta(t, 0)) {
        t->job->client_gone = 1; /* the connection is gone: MHD closed the pipe */
        return 1;
    }
    return serve_queue_step(t->q, t->job, t->n - t->n_prompt, t->max_new);
}

typedef struct lm_req {
    char *prompt;        /* malloc'd */
    long long max_tokens;
    const char *stop[4];
    int nstop, stream, chat;
    float scale[VKL_SERVE_MAX_LM_LORAS];
} lm_req;

/* "lora": [{"id": N, "scale": X}, ...] */
static int parse_lora(vkl_server *s, const cJSON *o, lm_req *r, vkl_err *e)
{
    for (int i = 0; i < s->lm.n; i++) r->scale[i] = s->lm.scale[i];
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "lora");
    if (!a || cJSON_IsNull(a)) return 0;
    if (!cJSON_IsArray(a)) return vkl_fail(e, "'lora' must be a list of {\"id\": N, \"scale\": X}");
    for (int i = 0; i < s->lm.n; i++) r->scale[i] = 0; /* only the listed ones, as llama.cpp */
    int k = 0;
    for (const cJSON *it = a->child; it; it = it->next, k++) {
        if (!cJSON_IsObject(it)) return vkl_fail(e, "'lora[%d]' must be an object {\"id\": N, \"scale\": X}", k);
        long long id = -1;
        double scale = 1.0;
        const cJSON *idv = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!idv) return vkl_fail(e, "'lora[%d]' has no 'id'", k);
        if (sj_int(it, "id", 0, s->lm.n ? s->lm.n - 1 : -1, &id, e) || sj_num(it, "scale", -100, 100, &scale, e)) {
            char msg[1200];
            snprintf(msg, sizeof msg, "'lora[%d]': %s (this server has %d adapters, --lm-lora)", k, e->msg, s->lm.n);
            return vkl_fail(e, "%s", msg);
        }
        r->scale[id] = (float)scale;
    }
    return 0;
}

static int parse_stop(const cJSON *o, lm_req *r, vkl_err *e)
{
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(o, "stop");
    if (!st || cJSON_IsNull(st)) return 0;
    if (cJSON_IsString(st)) {
        if (st->valuestring[0]) r->stop[r->nstop++] = st->valuestring;
        return 0;
    }
    if (!cJSON_IsArray(st)) return vkl_fail(e, "'stop' must be a string or a list of up to 4 strings");
    for (const cJSON *it = st->child; it; it = it->next) {
        if (!cJSON_IsString(it)) return vkl_fail(e, "'stop' must be a string or a list of up to 4 strings");
        if (r->nstop == 4) return vkl_fail(e, "'stop' holds more than 4 strings");
        if (it->valuestring[0]) r->stop[r->nstop++] = it->valuestring;
    }
    return 0;
}

/* Chat messages as one prompt: "role: content" lines and "assistant:" (a
 * plain template; vklora's LMs have no chat template of their own). */
static char *chat_prompt(const cJSON *o, vkl_err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (!cJSON_IsArray(m) || !m->child) {
        vkl_fail(e, "'messages' is required: a list of {\"role\": ..., \"content\": ...}");
        return NULL;
    }
    size_t cap = 64;
    for (const cJSON *it = m->child; it; it = it->next) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role"), *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(c)) {
            vkl_fail(e, "'messages': each message needs string 'role' and 'content'");
            return NULL;
        }
        cap += strlen(role->valuestring) + strlen(c->valuestring) + 4;
    }
    char *p = malloc(cap);
    if (!p) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    p[0] = 0;
    for (const cJSON *it = m->child; it; it = it->next)
        sprintf(p + strlen(p), "%s: %s\n", cJSON_GetObjectItemCaseSensitive(it, "role")->valuestring,
                cJSON_GetObjectItemCaseSensitive(it, "content")->valuestring);
    strcat(p, "assistant:");
    return p;
}

static int parse_lm(vkl_server *s, const cJSON *o, int chat, lm_req *r, vkl_err *e)
{
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->max_tokens = 16; /* OpenAI's default for completions */
    const char *prompt = NULL;
    double ignored = 0;
    if (sj_int(o, "max_tokens", 1, 4096, &r->max_tokens, e) || sj_bool(o, "stream", &r->stream, e) ||
        sj_num(o, "temperature", 0, 2, &ignored, e) || sj_num(o, "top_p", 0, 1, &ignored, e) ||
        parse_stop(o, r, e) || parse_lora(s, o, r, e))
        return -1;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "n");
    if (n && !(cJSON_IsNumber(n) && n->valuedouble == 1)) return vkl_fail(e, "'n': vklora serve makes one choice");
    if (chat) return (r->prompt = chat_prompt(o, e)) ? 0 : -1;
    if (sj_str(o, "prompt", 256 * 1024, &prompt, e)) return -1;
    if (!prompt) return vkl_fail(e, "'prompt' is required: a string");
    if (!(r->prompt = strdup(prompt))) return vkl_fail(e, "out of host memory");
    return 0;
}

static cJSON *choice(const lm_req *r, const char *text, const char *finish, int delta)
{
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", 0);
    if (r->chat) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", text);
        cJSON_AddItemToObject(c, delta ? "delta" : "message", m);
    } else {
        cJSON_AddStringToObject(c, "text", text);
        cJSON_AddNullToObject(c, "logprobs");
    }
    if (finish) cJSON_AddStringToObject(c, "finish_reason", finish);
    else cJSON_AddNullToObject(c, "finish_reason");
    return c;
}

static cJSON *envelope(vkl_server *s, const lm_req *r, int chunk)
{
    cJSON *o = cJSON_CreateObject();
    char id[64];
    snprintf(id, sizeof id, "%s-%d", r->chat ? "chatcmpl" : "cmpl", s->q.job_no);
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "object", r->chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                 : "text_completion");
    cJSON_AddNumberToObject(o, "created", (double)time(NULL));
    cJSON_AddStringToObject(o, "model", s->lm.name);
    return o;
}

/* One "data: ...\n\n" event written whole to fd. */
static int write_event(int fd, const char *data)
{
    size_t n = strlen(data) + 8;
    char *b = malloc(n + 1);
    if (!b) return -1;
    int len = snprintf(b, n + 1, "data: %s\n\n", data);
    int rc = 0;
    for (int off = 0; off < len && !rc;) {
        ssize_t k = write(fd, b + off, (size_t)(len - off));
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) rc = -1;
        else off += (int)k;
    }
    free(b);
    return rc;
}

/* What a request needs from its start to its answer; for a stream it lives
 * in the thread that writes the events. */
typedef struct lm_run {
    vkl_server *s;
    lm_req lr;
    int32_t *ids, *out;
    int np;
    lm_text t;
    serve_job job;
    vkl_err e;
    int status;
    const char *what;
    const char *finish;
    cJSON *body;  /* the request, which the stop strings point into */
} lm_run;

static int fail_with(lm_run *r, int status, const char *what)
{
    r->status = status;
    r->what = what;
    return -1;
}

/* The text a stream has not sent yet, as one chunk event: all of it when
 * final, else what no stop string could still cut off. */
static int stream_delta(lm_text *t, int final)
{
    lm_run *r = t->run;
    size_t hold = 0;
    for (int i = 0; !final && i < t->nstop; i++)
        if (strlen(t->stop[i]) - 1 > hold) hold = strlen(t->stop[i]) - 1;
    size_t upto = t->len > hold ? t->len - hold : 0;
    if (upto <= t->sent) return 0;
    char *piece = strndup(t->text + t->sent, upto - t->sent);
    if (!piece) return -1;
    cJSON *ev = envelope(r->s, &r->lr, 1), *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, choice(&r->lr, piece, NULL, 1));
    cJSON_AddItemToObject(ev, "choices", a);
    free(piece);
    char *j = sj_print_free(ev);
    int rc = j ? write_event(t->sse_fd, j) : -1;
    free(j);
    if (!rc) t->sent = upto;
    return rc;
}

/* Parses, tokenizes and sizes the request (no device yet). */
static int lm_prepare(lm_run *r, const cJSON *body, int chat)
{
    vkl_server *s = r->s;
    r->t.sse_fd = -1;
    r->t.run = r;
    if (parse_lm(s, body, chat, &r->lr, &r->e)) return fail_with(r, 422, "Unprocessable Entity");
    const vkl_llama *m = s->lm.model;
    if (vkl_app_lm_tok_encode(&s->lm.tok, r->lr.prompt, m->cfg.bos, &r->ids, &r->np, &r->e))
        return fail_with(r, 422, "Unprocessable Entity");
    if (r->np + r->lr.max_tokens > m->cfg.max_pos) {
        if (r->np >= m->cfg.max_pos) {
            vkl_fail(&r->e, "the prompt is %d tokens; the model has %d positions", r->np, m->cfg.max_pos);
            return fail_with(r, 422, "Unprocessable Entity");
        }
        r->lr.max_tokens = m->cfg.max_pos - r->np; /* as OpenAI: the answer ends with finish_reason "length" */
    }
    r->out = malloc(sizeof(int32_t) * (size_t)r->lr.max_tokens);
    r->t.all = malloc(sizeof(int32_t) * (size_t)(r->np + r->lr.max_tokens));
    if (!r->out || !r->t.all) {
        vkl_fail(&r->e, "out of host memory");
        return fail_with(r, 500, "Internal Server Error");
    }
    memcpy(r->t.all, r->ids, sizeof(int32_t) * (size_t)r->np);
    r->t.tok = &s->lm.tok;
    r->t.n = r->t.n_prompt = r->np;
    r->t.stop = r->lr.stop;
    r->t.nstop = r->lr.nstop;
    r->t.max_new = (int)r->lr.max_tokens;
    if (r->t.tok->sp) {
        char *sdec = vkl_sp_decode(r->t.tok->sp, r->ids, r->np);
        r->t.prompt_bytes = sdec ? strlen(sdec) : 0;
        free(sdec);
    }
    return 0;
}

/* Waits for the device, builds the adapters at this request's scales (a
 * small set of factors; the model's weights stay as they are), generates. */
static int lm_exec(lm_run *r, int fd)
{
    vkl_server *s = r->s;
    r->job.fd = fd;
    r->job.kind = "completion";
    r->t.q = &s->q;
    r->t.job = &r->job;
    if (serve_queue_enter(&s->q, &r->job)) {
        if (r->job.client_gone) vkl_fail(&r->e, "the client closed the connection");
        else vkl_fail(&r->e, "the server is stopping");
        return fail_with(r, r->job.client_gone ? 400 : 503, r->job.client_gone ? "Bad Request" : "Service Unavailable");
    }
    vkl_lora_use uses[VKL_SERVE_MAX_LM_LORAS];
    int nu = 0;
    for (int i = 0; i < s->lm.n; i++)
        if (r->lr.scale[i] != 0) uses[nu++] = (vkl_lora_use){&s->lm.lora[i], r->lr.scale[i], r->lr.scale[i]};
    vkl_lora_set *set = NULL;
    int nout = 0, rc = nu ? vkl_lora_set_build(s->ctx, uses, nu, &set, &r->e) : 0;
    if (!rc) {
        vkl_llama_gen_opts o = {.lora = set, .max_new = (int)r->lr.max_tokens,
                                .stop_id = r->t.tok->l2c ? 1 : s->lm.model->cfg.eos, .on_token = on_token,
                                .user = &r->t};
        rc = vkl_llama_generate(s->lm.model, r->ids, r->np, &o, r->out, &nout, &r->e);
    }
    vkl_lora_set_free(set);
    int gone = r->job.client_gone;
    serve_queue_leave(&s->q, &r->job);
    if (gone) {
        vkl_fail(&r->e, "the client closed the connection");
        return fail_with(r, 400, "Bad Request");
    }
    if (rc) return fail_with(r, 500, "Internal Server Error");
    int made = r->t.n - r->t.n_prompt;
    r->finish = r->t.stopped || made < r->lr.max_tokens ? "stop" : "length";
    return 0;
}

static void lm_run_free(lm_run *r)
{
    free(r->lr.prompt);
    free(r->ids);
    free(r->out);
    free(r->t.all);
    free(r->t.text);
    cJSON_Delete(r->body);
    free(r);
}

/* The stream's thread: the events as the text grows, then the finish
 * reason (or an error event) and [DONE]; closing the pipe ends the answer. */
static void *stream_thread(void *p)
{
    lm_run *r = p;
    int fd = r->t.sse_fd;
    if (!lm_exec(r, r->job.fd)) {
        cJSON *ev = envelope(r->s, &r->lr, 1), *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, choice(&r->lr, "", r->finish, 1));
        cJSON_AddItemToObject(ev, "choices", a);
        char *j = sj_print_free(ev);
        if (!stream_delta(&r->t, 1) && j) write_event(fd, j);
        free(j);
    } else {
        char *j = sj_error_body(r->what, r->e.msg);
        if (j) write_event(fd, j);
        free(j);
    }
    write_event(fd, "[DONE]");
    close(fd);
    lm_run_free(r);
    return NULL;
}

static int complete(vkl_server *s, const serve_req *q, serve_resp *resp, int chat)
{
    if (!s->lm.model)
        return serve_error(resp, 404, "Not Found",
                           "%s: this server has no language model (start it with --lm-model DIR)", q->url);
    cJSON *body = serve_parse_object(q, resp);
    if (!body) return 0;
    lm_run *r = calloc(1, sizeof *r);
    if (!r) {
        cJSON_Delete(body);
        return serve_error(resp, 500, "Internal Server Error", "out of host memory");
    }
    r->s = s;
    r->body = body; /* the stop strings point into it */
    if (lm_prepare(r, body, chat)) {
        serve_error(resp, r->status, r->what, "%s", r->e.msg);
        lm_run_free(r);
        return 0;
    }
    if (r->lr.stream) {
        /* server-sent events as the tokens come: a thread generates into a
         * pipe that libmicrohttpd sends on as it fills */
        int fds[2];
        pthread_t th;
        pthread_attr_t at;
        if (pipe2(fds, O_CLOEXEC)) {
            lm_run_free(r);
            return serve_error(resp, 500, "Internal Server Error", "cannot make a pipe: %s", strerror(errno));
        }
        r->t.sse_fd = fds[1];
        r->job.fd = q->fd;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&th, &at, stream_thread, r)) {
            close(fds[0]);
            close(fds[1]);
            pthread_attr_destroy(&at);
            lm_run_free(r);
            return serve_error(resp, 500, "Internal Server Error", "cannot start a thread");
        }
        pthread_attr_destroy(&at);
        resp->status = 200;
        resp->pipe_fd = fds[0];
        resp->type = "text/event-stream";
        return 0;
    }
    if (lm_exec(r, q->fd)) {
        serve_error(resp, r->status, r->what, "%s", r->e.msg);
    } else {
        int made = r->t.n - r->t.n_prompt;
        cJSON *o = envelope(s, &r->lr, 0), *a = cJSON_CreateArray(), *u = cJSON_CreateObject();
        cJSON_AddItemToArray(a, choice(&r->lr, r->t.text ? r->t.text : "", r->finish, 0));
        cJSON_AddItemToObject(o, "choices", a);
        cJSON_AddNumberToObject(u, "prompt_tokens", r->np);
        cJSON_AddNumberToObject(u, "completion_tokens", made);
        cJSON_AddNumberToObject(u, "total_tokens", r->np + made);
        cJSON_AddItemToObject(o, "usage", u);
        serve_json(resp, o);
    }
    lm_run_free(r);
    return 0;
}

int serve_completions(vkl_server *s, const serve_req *q, serve_resp *r)
{
    return complete(s, q, r, 0);
}

int serve_chat_completions(vkl_server *s, const serve_req *q, serve_resp *r)
{
    return complete(s, q, r, 1);
}

int serve_lm_models(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)q;
    cJSON *o = cJSON_CreateObject(), *a = cJSON_CreateArray();
    cJSON_AddStringToObject(o, "object", "list");
    if (s->lm.model) {
        cJSON *m = cJSON_CreateObject();
        cJSON_AddStringToObject(m, "id", s->lm.name);
        cJSON_AddStringToObject(m, "object", "model");
        cJSON_AddStringToObject(m, "owned_by", "vklora");
        cJSON_AddItemToArray(a, m);
    }
    cJSON_AddItemToObject(o, "data", a);
    return serve_json(r, o);
}
