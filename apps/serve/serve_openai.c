/* The OpenAI-style text API, when `vklora serve --lm-model DIR` loaded a
 * LLaMA-family model: GET /v1/models, POST /v1/completions and
 * /v1/chat/completions (whole answers, or server-sent events with
 * "stream": true). Adapters are loaded at start (--lm-lora DIR[:W], ids 0,
 * 1, ... in order; LoRA, AdaLoRA, DoRA or IA3) and each request may set
 * their scales as llama.cpp's server takes them: "lora": [{"id": 0,
 * "scale": 0.5}] (an adapter left out of the list, or at scale 0, is off for
 * that request). A scale is the weight of `lm generate --lora DIR:W`
 * (lm_adapters.h): it scales LoRA's and DoRA's low-rank product, and IA3's
 * vectors as 1 + W (l - 1); a DoRA adapter runs with IA3 adapters only.
 *
 * The text is made as `vklora lm generate` makes it (the same tokenizers,
 * stop strings, sampling and decoding, through lm_stream and lm_sample), so
 * a request equals the command with the same settings. Sampling follows the
 * request's temperature, top_p, top_k, min_p, repeat_penalty and seed; with
 * no temperature the answer is greedy (OpenAI's default is 1: vklora keeps
 * a request repeatable unless it asks otherwise), and a sampled request
 * without a seed gets one from the clock, returned in "seed". Chat messages
 * go through the model's chat template (tokenizer_config.json, or
 * --lm-chat-template); a model without one gets "role: content" lines and
 * "assistant:". */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include "llama/llama_generate.h"
#include "lm_adapters.h"
#include "lm_stream.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct lm_req {
    char *prompt;        /* malloc'd; NULL for a chat rendered by the template */
    vkl_chat_msg *msgs;  /* chat: the messages (strings point into the request) */
    int nmsgs;
    long long max_tokens;
    const char *stop[4];
    int nstop, stream, chat;
    vkl_lm_sampling sampling;
    int seed_given;
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
    if (serve_lm_lora_combination(&s->lm, r->scale, e)) {
        vkl_err_prefix(e, "'lora': ");
        return -1;
    }
    return 0;
}

int serve_lm_lora_combination(const serve_lm *lm, const float *scale, vkl_err *e)
{
    int dora = -1, other = -1;
    for (int i = 0; i < lm->n; i++) {
        if (scale[i] == 0 || lm->kind[i] == VKL_APP_LM_IA3) continue;
        if (lm->kind[i] == VKL_APP_LM_DORA && dora < 0) dora = i;
        else if (other < 0) other = i;
    }
    if (dora < 0 || other < 0) return 0;
    return vkl_fail(e,
                    "adapter %d (%s) is DoRA and adapter %d (%s) is %s: a DoRA adapter runs alone or with "
                    "IA3 adapters only (as lm generate); set one of them to scale 0",
                    dora, lm->path[dora], other, lm->path[other],
                    vkl_app_lm_kind_name((vkl_app_lm_kind)lm->kind[other]));
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

/* temperature, top_p, top_k, min_p, repeat_penalty (llama.cpp's name) and
 * seed; OpenAI's frequency and presence penalties are not made, so a
 * non-zero one is refused rather than silently ignored. */
static int parse_sampling(const cJSON *o, lm_req *r, vkl_err *e)
{
    vkl_lm_sampling *sm = &r->sampling;
    vkl_lm_sampling_default(sm);
    double t = 0, top_p = 1, min_p = 0, rep = 1, pen = 0;
    long long top_k = 0, seed = -1;
    if (sj_num(o, "temperature", 0, 2, &t, e) || sj_num(o, "top_p", 0, 1, &top_p, e) ||
        sj_int(o, "top_k", 0, 1 << 24, &top_k, e) || sj_num(o, "min_p", 0, 1, &min_p, e) ||
        sj_num(o, "repeat_penalty", 0.01, 100, &rep, e) || sj_int(o, "seed", -1, 9007199254740991LL, &seed, e))
        return -1;
    const char *penalties[] = {"frequency_penalty", "presence_penalty"};
    for (int i = 0; i < 2; i++) {
        pen = 0;
        if (sj_num(o, penalties[i], -2, 2, &pen, e)) return -1;
        if (pen != 0)
            return vkl_fail(e, "'%s' is not supported by vklora serve (use 'repeat_penalty')", penalties[i]);
    }
    if (top_p <= 0) return vkl_fail(e, "'top_p' must be above 0");
    sm->temperature = (float)t;
    sm->top_p = (float)top_p;
    sm->top_k = (int)top_k;
    sm->min_p = (float)min_p;
    sm->repeat_penalty = (float)rep;
    r->seed_given = seed >= 0;
    if (r->seed_given) {
        sm->seed = (uint64_t)seed;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        sm->seed = ((uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec) & ((1ULL << 53) - 1);
    }
    return 0;
}

static int parse_messages(const cJSON *o, lm_req *r, vkl_err *e)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(o, "messages");
    if (!cJSON_IsArray(m) || !m->child)
        return vkl_fail(e, "'messages' is required: a list of {\"role\": ..., \"content\": ...}");
    int n = cJSON_GetArraySize(m);
    r->msgs = calloc((size_t)n, sizeof *r->msgs);
    if (!r->msgs) return vkl_fail(e, "out of host memory");
    for (const cJSON *it = m->child; it; it = it->next) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role"), *c = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(c))
            return vkl_fail(e, "'messages': each message needs string 'role' and 'content' (message %d)", r->nmsgs);
        const char *ro = role->valuestring;
        if (strcmp(ro, "system") && strcmp(ro, "user") && strcmp(ro, "assistant"))
            return vkl_fail(e, "'messages': role \"%s\" of message %d is not system, user or assistant", ro, r->nmsgs);
        r->msgs[r->nmsgs++] = (vkl_chat_msg){ro, c->valuestring};
    }
    return 0;
}

/* A model without a chat template: "role: content" lines and "assistant:". */
static char *plain_chat(const lm_req *r, vkl_err *e)
{
    size_t cap = 64;
    for (int i = 0; i < r->nmsgs; i++) cap += strlen(r->msgs[i].role) + strlen(r->msgs[i].content) + 4;
    char *p = malloc(cap);
    if (!p) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    size_t len = 0;
    for (int i = 0; i < r->nmsgs; i++)
        len += (size_t)snprintf(p + len, cap - len, "%s: %s\n", r->msgs[i].role, r->msgs[i].content);
    snprintf(p + len, cap - len, "assistant:");
    return p;
}

static int parse_lm(vkl_server *s, const cJSON *o, int chat, lm_req *r, vkl_err *e)
{
    memset(r, 0, sizeof *r);
    r->chat = chat;
    r->max_tokens = 16; /* OpenAI's default for completions */
    const char *prompt = NULL;
    if (sj_int(o, "max_tokens", 1, 4096, &r->max_tokens, e) || sj_bool(o, "stream", &r->stream, e) ||
        parse_sampling(o, r, e) || parse_stop(o, r, e) || parse_lora(s, o, r, e))
        return -1;
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "n");
    if (n && !(cJSON_IsNumber(n) && n->valuedouble == 1)) return vkl_fail(e, "'n': vklora serve makes one choice");
    if (chat) {
        if (parse_messages(o, r, e)) return -1;
        if (s->lm.tok.chat.kind == VKL_CHAT_NONE && !(r->prompt = plain_chat(r, e))) return -1;
        return 0;
    }
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
    if (r->sampling.temperature > 0) {
        char seed[32]; /* a string: 53-bit seeds lose nothing in any JSON reader */
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)r->sampling.seed);
        cJSON_AddStringToObject(o, "seed", seed);
    }
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
    vkl_app_lm_stream st; /* the text as the ids come */
    int sse_fd;           /* streaming: the pipe the events go to; -1: none */
    int oom;
    serve_job job;
    vkl_err e;
    int status;
    const char *what;
    const char *finish;
    cJSON *body;  /* the request, which the stop strings and messages point into */
} lm_run;

static int fail_with(lm_run *r, int status, const char *what)
{
    r->status = status;
    r->what = what;
    return -1;
}

/* lm_stream's printable pieces as chunk events. */
static int emit_chunk(void *user, const char *piece)
{
    lm_run *r = user;
    cJSON *ev = envelope(r->s, &r->lr, 1), *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, choice(&r->lr, piece, NULL, 1));
    cJSON_AddItemToObject(ev, "choices", a);
    char *j = sj_print_free(ev);
    int rc = j ? write_event(r->sse_fd, j) : -1;
    free(j);
    return rc;
}

static int on_token(void *user, int32_t id)
{
    lm_run *r = user;
    int rc = vkl_app_lm_stream_token(&r->st, id);
    if (rc < 0) {
        r->oom = 1;
        return 1;
    }
    if (r->st.emit_failed) {
        r->job.client_gone = 1; /* the connection is gone: MHD closed the pipe */
        return 1;
    }
    if (rc || vkl_llama_is_extra_eos(&r->s->lm.model->cfg, id)) return 1;
    return serve_queue_step(&r->s->q, &r->job, r->st.n - r->st.n_prompt, (int)r->lr.max_tokens);
}

/* Parses, tokenizes and sizes the request (no device yet). */
static int lm_prepare(lm_run *r, const cJSON *body, int chat)
{
    vkl_server *s = r->s;
    r->sse_fd = -1;
    if (parse_lm(s, body, chat, &r->lr, &r->e)) return fail_with(r, 422, "Unprocessable Entity");
    const vkl_llama *m = s->lm.model;
    int rc = r->lr.prompt ? vkl_app_lm_tok_encode(&s->lm.tok, r->lr.prompt, m->cfg.bos, &r->ids, &r->np, &r->e)
                          : vkl_app_lm_tok_chat_messages(&s->lm.tok, r->lr.msgs, r->lr.nmsgs, m->cfg.bos,
                                                         vkl_app_lm_tok_eos(&s->lm.tok, m->cfg.eos), &r->ids, &r->np,
                                                         &r->e);
    if (rc) return fail_with(r, 422, "Unprocessable Entity");
    if (r->np + r->lr.max_tokens > m->cfg.max_pos) {
        if (r->np >= m->cfg.max_pos) {
            vkl_fail(&r->e, "the prompt is %d tokens; the model has %d positions", r->np, m->cfg.max_pos);
            return fail_with(r, 422, "Unprocessable Entity");
        }
        r->lr.max_tokens = m->cfg.max_pos - r->np; /* as OpenAI: the answer ends with finish_reason "length" */
    }
    r->out = malloc(sizeof(int32_t) * (size_t)r->lr.max_tokens);
    if (!r->out || vkl_app_lm_stream_start(&r->st, &s->lm.tok, r->ids, r->np, (int)r->lr.max_tokens,
                                           r->lr.stop, r->lr.nstop, NULL, &r->e)) {
        vkl_fail(&r->e, "out of host memory");
        return fail_with(r, 500, "Internal Server Error");
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
    if (r->sse_fd >= 0) {
        r->st.emit = emit_chunk;
        r->st.emit_user = r;
    }
    if (serve_queue_enter(&s->q, &r->job)) {
        if (r->job.client_gone) vkl_fail(&r->e, "the client closed the connection");
        else vkl_fail(&r->e, "the server is stopping");
        return fail_with(r, r->job.client_gone ? 400 : 503, r->job.client_gone ? "Bad Request" : "Service Unavailable");
    }
    vkl_lora_use uses[VKL_SERVE_MAX_LM_LORAS];
    int nu = 0;
    for (int i = 0; i < s->lm.n; i++)
        if (r->lr.scale[i] != 0) uses[nu++] = (vkl_lora_use){&s->lm.lora[i], r->lr.scale[i], r->lr.scale[i]};
    vkl_app_lm_adapters ad;
    int nout = 0, rc = vkl_app_lm_adapters_build(s->lm.model, uses, nu, &ad, &r->e);
    if (!rc) {
        vkl_llama_gen_opts o = {.lora = ad.set, .dora = ad.dora, .ia3 = ad.ia3, .max_new = (int)r->lr.max_tokens,
                                .stop_id = vkl_app_lm_tok_eos(&s->lm.tok, s->lm.model->cfg.eos),
                                .sampling = &r->lr.sampling, .on_token = on_token, .user = r};
        rc = vkl_llama_generate(s->lm.model, r->ids, r->np, &o, r->out, &nout, &r->e);
        if (!rc && r->oom) rc = vkl_fail(&r->e, "out of host memory");
    }
    vkl_app_lm_adapters_free(&ad);
    int gone = r->job.client_gone;
    serve_queue_leave(&s->q, &r->job);
    serve_device_check(s);
    if (gone) {
        vkl_fail(&r->e, "the client closed the connection");
        return fail_with(r, 400, "Bad Request");
    }
    if (rc) return fail_with(r, 500, "Internal Server Error");
    int made = r->st.n - r->st.n_prompt;
    r->finish = r->st.stopped || made < r->lr.max_tokens ? "stop" : "length";
    return 0;
}

static void lm_run_free(lm_run *r)
{
    free(r->lr.prompt);
    free(r->lr.msgs);
    free(r->ids);
    free(r->out);
    vkl_app_lm_stream_free(&r->st);
    cJSON_Delete(r->body);
    free(r);
}

/* The stream's thread: the events as the text grows, then the finish
 * reason (or an error event) and [DONE]; closing the pipe ends the answer. */
static void *stream_thread(void *p)
{
    lm_run *r = p;
    int fd = r->sse_fd;
    if (!lm_exec(r, r->job.fd)) {
        vkl_app_lm_stream_finish(&r->st); /* what was held back for a stop string that never came */
        cJSON *ev = envelope(r->s, &r->lr, 1), *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, choice(&r->lr, "", r->finish, 1));
        cJSON_AddItemToObject(ev, "choices", a);
        char *j = sj_print_free(ev);
        if (!r->st.emit_failed && j) write_event(fd, j);
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
        r->sse_fd = fds[1];
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
        int made = r->st.n - r->st.n_prompt;
        char *text = vkl_app_lm_stream_text(&r->st);
        cJSON *o = envelope(s, &r->lr, 0), *a = cJSON_CreateArray(), *u = cJSON_CreateObject();
        cJSON_AddItemToArray(a, choice(&r->lr, text ? text : "", r->finish, 0));
        free(text);
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
