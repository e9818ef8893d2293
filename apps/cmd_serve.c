/* vklora serve: loads a Stable Diffusion model once and answers
 * AUTOMATIC1111's HTTP API and a web page until SIGINT/SIGTERM. */
#include "app.h"
#include "gen_image.h"
#include "llama/llama_lora_init.h"
#include "args.h"
#include "lm_adapters.h"
#include "lm_gen_args.h"
#include "lora_args.h"
#include "progress.h"
#include "serve/serve.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *usage_text =
    "usage: vklora serve [--model PATH] [--lora-dir DIR] [--host 127.0.0.1] [--port 7860] [--api-key KEY]\n"
    "  --model PATH        single-file .safetensors checkpoint or diffusers folder\n"
    "                      (default: $VKLORA_MODEL, else vklora's own model, assets/vklora-emoji)\n"
    "  --lora-dir DIR      where <lora:NAME:W> in prompts finds NAME.safetensors (GET /sdapi/v1/loras lists them)\n"
    "  --host ADDR         address to listen on (127.0.0.1); any other than a loopback address needs --api-key\n"
    "  --port N            port (7860; 0: any free one, printed)\n"
    "  --api-key KEY       clients must send 'Authorization: Bearer KEY' (or $VKLORA_API_KEY)\n"
    "  --max-body BYTES    largest request body (33554432)\n"
    "  --max-size N        largest width and height (2048)\n"
    "  --max-steps N       most sampling steps a request may ask (150)\n"
    "  --max-batch N       most images a request may ask, batch_size x n_iter (8)\n"
    "  --model-config FILE the original yaml of a single-file checkpoint (default: <name>.yaml beside it)\n"
    "  --tokenizer PATH    CLIP vocabulary (needed by single-file checkpoints; or $VKLORA_CLIP_VOCAB)\n"
    "  --weights f16|f32   storage of the model's matrices on the device (f16)\n"
    "  --lm-model DIR      also a LLaMA-family model (HF folder or llama2.c file) for the OpenAI-style API\n"
    "  --lm-tokenizer PATH its tokenizer (default: DIR/tokenizer.model, else DIR/tokenizer.json)\n"
    "  --lm-chat-template llama3|chatml|mistral  the chat template of /v1/chat/completions (default: the\n"
    "                      folder's tokenizer_config.json; none: \"role: content\" lines)\n"
    "  --lm-base-dtype f32|f16|bf16|nf4|nf4dq  the LM's weights on the device (default: config.json's torch_dtype)\n"
    "  --lm-lora DIR[:W]   a PEFT adapter of the LM: LoRA, AdaLoRA, DoRA or IA3 (repeatable; ids 0, 1, ...;\n"
    "                      W: its scale when a request names no adapters, as lm generate --lora DIR:W; 0: off)\n"
    "  --data-root DIR     training jobs (POST /vklora/v1/train) read image folders inside DIR only;\n"
    "                      their adapters go to --lora-dir\n"
    "  --quiet             no request log\n"
    "API (AUTOMATIC1111's field names): POST /sdapi/v1/txt2img, /sdapi/v1/img2img, /sdapi/v1/interrupt;\n"
    "GET /sdapi/v1/progress, /sdapi/v1/sd-models, /sdapi/v1/loras, /sdapi/v1/samplers, /sdapi/v1/schedulers;\n"
    "GET|POST /sdapi/v1/options; the web page at /; with --lm-model: GET /v1/models, POST /v1/completions,\n"
    "/v1/chat/completions; with --data-root and --lora-dir: POST /vklora/v1/train, GET|DELETE /vklora/v1/train/ID.\n"
    "SIGINT/SIGTERM: the running job finishes (a training job saves its state at its step's end), then the\n"
    "server exits (a second signal stops the job at its next step).\n";

/* 127.0.0.0/8 and ::1: reachable from this machine only. */
static int is_loopback(const char *host)
{
    struct addrinfo hints = {0}, *ai = NULL, *p;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, NULL, &hints, &ai)) return 0;
    int all = ai != NULL;
    for (p = ai; p; p = p->ai_next) {
        if (p->ai_family == AF_INET) {
            uint32_t a = ntohl(((struct sockaddr_in *)p->ai_addr)->sin_addr.s_addr);
            all &= (a >> 24) == 127;
        } else if (p->ai_family == AF_INET6) {
            all &= !memcmp(&((struct sockaddr_in6 *)p->ai_addr)->sin6_addr, &in6addr_loopback, 16);
        } else {
            all = 0;
        }
    }
    freeaddrinfo(ai);
    return all;
}

/* The LM, its tokenizer and its PEFT adapters (folders or files: LoRA,
 * AdaLoRA, DoRA, IA3), each checked against the model and built once alone
 * (a DoRA adapter on a quantised base fails here, not at each request), and
 * the scales a request without "lora" gets checked as a combination. */
static int load_lm(vkl_server *s, const char *dir, const char *tok, const char *chat, vkl_dtype dt,
                   const char *const *loras, int n, vkl_err *e)
{
    if (vkl_llama_load(s->ctx, dir, dt, &s->lm.model, e) ||
        vkl_app_lm_tok_open(dir, tok, s->lm.model->cfg.vocab, &s->lm.tok, e) ||
        (chat && vkl_chat_from_name(chat, &s->lm.tok.chat, e)))
        return -1;
    vkl_gen_model_name(dir, s->lm.name, sizeof s->lm.name);
    for (int i = 0; i < n; i++) {
        char path[4096], file[4200];
        float w = 1.0f;
        int nw = 0;
        if (vkl_app_lora_spec(loras[i], path, sizeof path, &w, 1, &nw, e)) return -1;
        snprintf(file, sizeof file, "%s/adapter_model.safetensors", path);
        struct stat st;
        if (stat(file, &st)) snprintf(file, sizeof file, "%s", path);
        if (vkl_lora_load(file, NULL, &s->lm.lora[s->lm.n], e)) return -1;
        s->lm.n++;
        if (!(s->lm.path[i] = strdup(path))) return vkl_fail(e, "out of host memory");
        if (vkl_llama_lora_check(s->lm.model, &s->lm.lora[i], path, e)) return -1;
        s->lm.kind[i] = (int)vkl_app_lm_adapter_kind(&s->lm.lora[i]);
        s->lm.scale[i] = w;
        vkl_lora_use one = {&s->lm.lora[i], 1.0f, 1.0f};
        vkl_app_lm_adapters ad;
        if (vkl_app_lm_adapters_build(s->lm.model, &one, 1, &ad, e)) {
            vkl_err_prefix(e, "--lm-lora %s: ", path);
            return -1;
        }
        vkl_app_lm_adapters_free(&ad);
    }
    if (serve_lm_lora_combination(&s->lm, s->lm.scale, e)) {
        vkl_err_prefix(e, "--lm-lora: at the scales a request without \"lora\" gets, ");
        return -1;
    }
    return 0;
}

void serve_device_check(vkl_server *s)
{
    if (!vkl_ctx_lost(s->ctx)) return;
    pthread_mutex_lock(&s->q.mu);
    int first = !s->device_lost;
    s->device_lost = 1;
    pthread_mutex_unlock(&s->q.mu);
    if (!first) return;
    fprintf(stderr, "vklora serve: the device was lost; stopping (start the server again)\n");
    kill(getpid(), SIGTERM); /* the main thread's sigwait takes it */
}

/* The command line of serve; strings point into argv. */
typedef struct serve_args {
    const char *model, *lora_dir, *host, *api_key, *model_config, *tokenizer, *lm_model, *lm_tokenizer, *data_root,
        *lm_chat;
    int weights; /* 0 f16, 1 f32 */
    vkl_app_dtype_arg lm_dtype;
    const char *lm_lora_v[VKL_SERVE_MAX_LM_LORAS];
    vkl_arg_list lm_lora;
    int port, max_size, max_steps, max_batch, quiet;
    int64_t max_body;
} serve_args;

/* -1 to serve, else the exit status */
static int parse_args(int argc, char **argv, serve_args *a)
{
    *a = (serve_args){.model = getenv("VKLORA_MODEL"), .host = "127.0.0.1", .lm_dtype = {VKL_F32, 0}, .port = 7860,
                      .max_body = 32 << 20, .max_size = 2048, .max_steps = 150, .max_batch = 8, .quiet = vkl_app_quiet};
    a->lm_lora = (vkl_arg_list){a->lm_lora_v, VKL_SERVE_MAX_LM_LORAS, 0};
    const vkl_arg table[] = {
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model), .help = NULL},
        {"--lora-dir", NULL, VKL_ARG_STR, VKL_AS_STR(&a->lora_dir), .help = NULL},
        {"--host", NULL, VKL_ARG_STR, VKL_AS_STR(&a->host), .help = NULL},
        {"--api-key", NULL, VKL_ARG_STR, VKL_AS_STR(&a->api_key), .help = NULL},
        {"--model-config", NULL, VKL_ARG_STR, VKL_AS_STR(&a->model_config), .help = NULL},
        {"--tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&a->tokenizer), .help = NULL},
        {"--lm-model", NULL, VKL_ARG_STR, VKL_AS_STR(&a->lm_model), .help = NULL},
        {"--lm-tokenizer", NULL, VKL_ARG_STR, VKL_AS_STR(&a->lm_tokenizer), .help = NULL},
        {"--data-root", NULL, VKL_ARG_STR, VKL_AS_STR(&a->data_root), .help = NULL},
        {"--lm-chat-template", NULL, VKL_ARG_CALL, &a->lm_chat, .call = vkl_app_arg_chat_template},
        {"--lm-base-dtype", NULL, VKL_ARG_CALL, &a->lm_dtype, .call = vkl_app_arg_base_dtype},
        {"--lm-lora", NULL, VKL_ARG_LIST, VKL_AS_LIST(&a->lm_lora), .help = NULL},
        {"--weights", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&a->weights), .choices = "f16|f32"},
        {"--port", NULL, VKL_ARG_INT, VKL_AS_INT(&a->port), .lo = 0, .hi = 65535},
        {"--max-body", NULL, VKL_ARG_I64, VKL_AS_I64(&a->max_body), .lo = 1024, .hi = 4294967296.0},
        {"--max-size", NULL, VKL_ARG_INT, VKL_AS_INT(&a->max_size), .lo = 8, .hi = 16384},
        {"--max-steps", NULL, VKL_ARG_INT, VKL_AS_INT(&a->max_steps), .lo = 1, .hi = 1000},
        {"--max-batch", NULL, VKL_ARG_INT, VKL_AS_INT(&a->max_batch), .lo = 1, .hi = 64},
        {"--quiet", "-q", VKL_ARG_FLAG, VKL_AS_INT(&a->quiet), .help = NULL},
    };
    int parsed = vkl_args_parse("serve", table, (int)(sizeof table / sizeof *table), argc, argv, NULL);
    if (parsed == VKL_ARGS_HELP) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (parsed) return 2;
    if (!a->api_key && getenv("VKLORA_API_KEY") && *getenv("VKLORA_API_KEY")) a->api_key = getenv("VKLORA_API_KEY");
    if (a->api_key && !*a->api_key) {
        fprintf(stderr, "vklora serve: --api-key is empty\n");
        return 2;
    }
    if (!a->api_key && !is_loopback(a->host)) {
        fprintf(stderr, "vklora serve: --host %s is reachable from other machines: give --api-key KEY (clients send "
                        "'Authorization: Bearer KEY')\n", a->host);
        return 2;
    }
    if (!a->model) a->model = vkl_default_model_path();
    if (!a->model) {
        fprintf(stderr, "vklora serve: no model given and vklora's own model (assets/vklora-emoji) was not found; "
                        "pass --model PATH or set VKLORA_MODEL\n");
        return 2;
    }
    struct stat st;
    const char *files[][2] = {{"--model", a->model},         {"--lora-dir", a->lora_dir},
                              {"--model-config", a->model_config}, {"--tokenizer", a->tokenizer},
                              {"--lm-model", a->lm_model},   {"--lm-tokenizer", a->lm_tokenizer},
                              {"--data-root", a->data_root}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (files[i][1] && stat(files[i][1], &st)) {
            fprintf(stderr, "vklora serve: %s %s: %s\n", files[i][0], files[i][1], strerror(errno));
            return 1;
        }
    if (a->lora_dir && (stat(a->lora_dir, &st) || !S_ISDIR(st.st_mode))) {
        fprintf(stderr, "vklora serve: --lora-dir %s is not a folder\n", a->lora_dir);
        return 1;
    }
    return -1;
}

int vkl_cmd_serve(int argc, char **argv)
{
    serve_args a;
    int status = parse_args(argc, argv, &a);
    if (status >= 0) return status;

    /* the signals are taken by this thread alone (sigwait): the HTTP threads
     * started below inherit the blocked mask */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    vkl_server s;
    memset(&s, 0, sizeof s);
    s.model_path = a.model;
    s.lora_dir = a.lora_dir;
    s.api_key = a.api_key;
    s.data_root = a.data_root;
    s.tokenizer = a.tokenizer;
    s.model_config = a.model_config;
    s.lim.max_body = (size_t)a.max_body;
    s.lim.max_side = a.max_size;
    s.lim.max_steps = a.max_steps;
    s.lim.max_batch = a.max_batch;
    s.clip_skip = 1;
    s.preview_every = 10; /* A1111's default live preview period */
    s.quiet = a.quiet;
    vkl_gen_model_name(a.model, s.model_name, sizeof s.model_name);
    serve_queue_init(&s.q);
    pthread_mutex_init(&s.opt_mu, NULL);
    struct MHD_Daemon *d = NULL;
    vkl_err e = {{0}};
    int rc = 1;
    if (vkl_ctx_create(NULL, &s.ctx, &e)) goto done;
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.tokenizer = a.tokenizer;
    mo.yaml = a.model_config;
    if (a.weights == 1) mo.weight_dtype = VKL_F32;
    double t0 = vkl_progress_now();
    if (vkl_sd_model_load(s.ctx, a.model, &mo, &s.model, &e)) goto done;
    int vae_factor = 1 << (s.model->cfg->vae.n_levels - 1);
    s.size_multiple = vae_factor * (1 << (s.model->cfg->unet.n_levels - 1));
    s.native = s.model->cfg->unet.sample_size * vae_factor;
    if (s.native <= 0) s.native = 512;
    if (!a.quiet)
        fprintf(stderr, "loaded %s (%s) in %.1f s on %s\n", a.model, vkl_sd_family_name(s.model->cfg->family),
                vkl_progress_now() - t0, vkl_ctx_caps(s.ctx)->name);
    if (a.lm_model && !a.lm_dtype.given) a.lm_dtype.dt = vkl_app_lm_model_dtype(a.lm_model);
    if (a.lm_model &&
        load_lm(&s, a.lm_model, a.lm_tokenizer, a.lm_chat, a.lm_dtype.dt, a.lm_lora.v, a.lm_lora.n, &e)) goto done;
    int bound = 0;
    if (serve_http_start(&s, a.host, a.port, &d, &bound, &e)) goto done;
    int v6 = strchr(a.host, ':') != NULL;
    printf("vklora serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", a.host, v6 ? "]" : "", bound);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    if (!a.quiet) fprintf(stderr, "vklora serve: %s: finishing the running job, then stopping\n", strsignal(sig));
    serve_queue_stop(&s.q, 0);
    for (;;) {
        pthread_mutex_lock(&s.q.mu);
        int busy = s.q.head != NULL;
        pthread_mutex_unlock(&s.q.mu);
        if (!busy) break;
        struct timespec ts = {0, 100 * 1000000L};
        if (sigtimedwait(&sigs, NULL, &ts) > 0) {
            if (!a.quiet) fprintf(stderr, "vklora serve: stopping the running job at its next step\n");
            serve_queue_stop(&s.q, 1);
        }
    }
    rc = s.device_lost;
    if (rc) vkl_fail(&e, "stopped: the device was lost");
done:
    if (rc) fprintf(stderr, "vklora serve: %s\n", e.msg);
    serve_http_stop(d); /* waits for the connection threads */
    serve_train_free_all();
    vkl_gen_lora_free(&s.gl, s.model);
    for (int i = 0; i < s.lm.n; i++) {
        vkl_lora_free(&s.lm.lora[i]);
        free(s.lm.path[i]);
    }
    vkl_app_lm_tok_free(&s.lm.tok);
    vkl_llama_free(s.lm.model);
    vkl_sd_model_free(s.model);
    vkl_ctx_destroy(s.ctx);
    pthread_mutex_destroy(&s.opt_mu);
    serve_queue_destroy(&s.q);
    free(s.preview);
    if (!a.quiet && !rc) fprintf(stderr, "vklora serve: stopped\n");
    return rc;
}
