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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
    /* streaming: bytes of text already sent */
    size_t sent;
} lm_text;

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

/* One "data: {...}\n\n" event appended to buf. */
static int sse(char **buf, size_t *len, cJSON *obj)
{
    char *j = sj_print_free(obj);
    if (!j) return -1;
    size_t n = strlen(j) + 8;
    char *b = realloc(*buf, *len + n + 1);
    if (!b) {
        free(j);
        return -1;
    }
    *len += (size_t)sprintf(b + *len, "data: %s\n\n", j);
    *buf = b;
    free(j);
    return 0;
}

static int complete(vkl_server *s, const serve_req *q, serve_resp *r, int chat)
{
    if (!s->lm.model)
        return serve_error(r, 404, "Not Found", "%s: this server has no language model (start it with --lm-model DIR)",
                           q->url);
    cJSON *body = serve_parse_object(q, r);
    if (!body) return 0;
    vkl_err e = {{0}};
    lm_req lr;
    lm_text t;
    memset(&t, 0, sizeof t);
    int32_t *ids = NULL, *out = NULL;
    int np = 0, nout = 0;
    vkl_lora_set *set = NULL;
    int status = 422;
    const char *what = "Unprocessable Entity";
    if (parse_lm(s, body, chat, &lr, &e)) goto fail;
    const vkl_llama *m = s->lm.model;
    if (vkl_app_lm_tok_encode(&s->lm.tok, lr.prompt, m->cfg.bos, &ids, &np, &e)) goto fail;
    if (np + lr.max_tokens > m->cfg.max_pos) {
        if (np >= m->cfg.max_pos) {
            vkl_fail(&e, "the prompt is %d tokens; the model has %d positions", np, m->cfg.max_pos);
            goto fail;
        }
        lr.max_tokens = m->cfg.max_pos - np; /* as OpenAI: the answer ends with finish_reason "length" */
    }
    out = malloc(sizeof(int32_t) * (size_t)lr.max_tokens);
    t.all = malloc(sizeof(int32_t) * (size_t)(np + lr.max_tokens));
    if (!out || !t.all) {
        status = 500, what = "Internal Server Error";
        vkl_fail(&e, "out of host memory");
        goto fail;
    }
    memcpy(t.all, ids, sizeof(int32_t) * (size_t)np);
    t.tok = &s->lm.tok;
    t.n = t.n_prompt = np;
    t.stop = lr.stop;
    t.nstop = lr.nstop;
    t.max_new = (int)lr.max_tokens;
    if (t.tok->sp) {
        char *sdec = vkl_sp_decode(t.tok->sp, ids, np);
        t.prompt_bytes = sdec ? strlen(sdec) : 0;
        free(sdec);
    }
    serve_job job = {0};
    job.fd = q->fd;
    t.q = &s->q;
    t.job = &job;
    if (serve_queue_enter(&s->q, &job)) {
        if (job.client_gone) status = 400, what = "Bad Request", vkl_fail(&e, "the client closed the connection");
        else status = 503, what = "Service Unavailable", vkl_fail(&e, "the server is stopping");
        goto fail;
    }
    /* the adapters at this request's scales: a small set of factors, built
     * for the request (the model's weights stay as they are) */
    vkl_lora_use uses[VKL_SERVE_MAX_LM_LORAS];
    int nu = 0;
    for (int i = 0; i < s->lm.n; i++)
        if (lr.scale[i] != 0) uses[nu++] = (vkl_lora_use){&s->lm.lora[i], lr.scale[i], lr.scale[i]};
    int rc = nu ? vkl_lora_set_build(s->ctx, uses, nu, &set, &e) : 0;
    if (!rc) {
        vkl_llama_gen_opts o = {.lora = set, .max_new = (int)lr.max_tokens,
                                .stop_id = t.tok->l2c ? 1 : m->cfg.eos, .on_token = on_token, .user = &t};
        rc = vkl_llama_generate(m, ids, np, &o, out, &nout, &e);
        /* a stop string or an interrupt ends it early: not an error */
        if (rc && (t.stopped || job.interrupted)) rc = 0;
    }
    int gone = job.client_gone;
    serve_queue_leave(&s->q, &job);
    if (gone) {
        status = 400, what = "Bad Request";
        vkl_fail(&e, "the client closed the connection");
        goto fail;
    }
    if (rc) {
        status = 500, what = "Internal Server Error";
        goto fail;
    }
    int made = t.n - t.n_prompt;
    const char *finish = t.stopped || made < lr.max_tokens ? "stop" : "length";
    if (lr.stream) {
        /* the whole answer as server-sent events, as OpenAI streams them:
         * the text, then the finish reason, then [DONE] */
        char *buf = NULL;
        size_t len = 0;
        cJSON *c1 = envelope(s, &lr, 1), *a1 = cJSON_CreateArray();
        cJSON_AddItemToArray(a1, choice(&lr, t.text ? t.text : "", NULL, 1));
        cJSON_AddItemToObject(c1, "choices", a1);
        cJSON *c2 = envelope(s, &lr, 1), *a2 = cJSON_CreateArray();
        cJSON_AddItemToArray(a2, choice(&lr, "", finish, 1));
        cJSON_AddItemToObject(c2, "choices", a2);
        if (sse(&buf, &len, c1) || sse(&buf, &len, c2)) {
            free(buf);
            status = 500, what = "Internal Server Error";
            vkl_fail(&e, "out of host memory");
            goto fail;
        }
        char *b = realloc(buf, len + 16);
        if (b) {
            strcpy(b + len, "data: [DONE]\n\n");
            len += 14;
            buf = b;
        }
        r->status = 200;
        r->body = buf;
        r->len = len;
        r->type = "text/event-stream";
    } else {
        cJSON *o = envelope(s, &lr, 0), *a = cJSON_CreateArray(), *u = cJSON_CreateObject();
        cJSON_AddItemToArray(a, choice(&lr, t.text ? t.text : "", finish, 0));
        cJSON_AddItemToObject(o, "choices", a);
        cJSON_AddNumberToObject(u, "prompt_tokens", np);
        cJSON_AddNumberToObject(u, "completion_tokens", made);
        cJSON_AddNumberToObject(u, "total_tokens", np + made);
        cJSON_AddItemToObject(o, "usage", u);
        serve_json(r, o);
    }
    goto done;
fail:
    serve_error(r, status, what, "%s", e.msg);
done:
    vkl_lora_set_free(set);
    free(lr.prompt);
    free(ids);
    free(out);
    free(t.all);
    free(t.text);
    cJSON_Delete(body);
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
