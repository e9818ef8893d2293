/* vklora serve: loads a Stable Diffusion model once and answers
 * AUTOMATIC1111's HTTP API and a web page until SIGINT/SIGTERM. */
#include "app.h"
#include "gen_image.h"
#include "llama/llama_lora_init.h"
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
    "  --lm-lora DIR[:W]   a PEFT LoRA adapter of the LM (repeatable; ids 0, 1, ...; W: its scale when a request\n"
    "                      names no adapters)\n"
    "  --data-root DIR     training jobs (POST /vklora/v1/train) read image folders inside DIR only;\n"
    "                      their adapters go to --lora-dir\n"
    "  --quiet             no request log\n"
    "API (AUTOMATIC1111's field names): POST /sdapi/v1/txt2img, /sdapi/v1/img2img, /sdapi/v1/interrupt;\n"
    "GET /sdapi/v1/progress, /sdapi/v1/sd-models, /sdapi/v1/loras, /sdapi/v1/samplers, /sdapi/v1/schedulers;\n"
    "GET|POST /sdapi/v1/options; the web page at /; with --lm-model: GET /v1/models, POST /v1/completions,\n"
    "/v1/chat/completions; with --data-root and --lora-dir: POST /vklora/v1/train, GET|DELETE /vklora/v1/train/ID.\n"
    "SIGINT/SIGTERM: the running job finishes (a training job saves its state at its step's end), then the\n"
    "server exits (a second signal stops the job at its next step).\n";

static int parse_long(const char *s, long long lo, long long hi, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || !*s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

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

/* The LM, its tokenizer and its LoRA adapters (PEFT folders or files),
 * each checked against the model. */
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
        if (vkl_llama_lora_check(s->lm.model, &s->lm.lora[i], path, e)) return -1;
        for (int k = 0; k < s->lm.lora[i].n; k++)
            if (s->lm.lora[i].m[k].kind != VKL_LORA_KIND_LORA)
                return vkl_fail(e, "--lm-lora %s: serve takes LoRA adapters for the LM (not DoRA or IA3)", path);
        s->lm.scale[i] = w;
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

int vkl_cmd_serve(int argc, char **argv)
{
    const char *model = getenv("VKLORA_MODEL"), *lora_dir = NULL, *host = "127.0.0.1", *api_key = NULL,
               *model_config = NULL, *tokenizer = NULL, *weights = NULL, *lm_model = NULL, *lm_tokenizer = NULL,
               *data_root = NULL, *lm_chat = NULL;
    vkl_dtype lm_dtype = VKL_F32;
    int lm_dtype_given = 0;
    const char *lm_lora[VKL_SERVE_MAX_LM_LORAS];
    int n_lm_lora = 0;
    long long port = 7860, max_body = 32 << 20, max_size = 2048, max_steps = 150, max_batch = 8;
    int quiet = vkl_app_quiet;
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(k, "--help") || !strcmp(k, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (!strcmp(k, "--quiet") || !strcmp(k, "-q")) {
            quiet = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "vklora serve: %s needs a value\n", k);
            return 2;
        }
        i++;
        int bad = 0;
        if (!strcmp(k, "--model")) model = v;
        else if (!strcmp(k, "--lora-dir")) lora_dir = v;
        else if (!strcmp(k, "--host")) host = v;
        else if (!strcmp(k, "--api-key")) api_key = v;
        else if (!strcmp(k, "--model-config")) model_config = v;
        else if (!strcmp(k, "--tokenizer")) tokenizer = v;
        else if (!strcmp(k, "--lm-model")) lm_model = v;
        else if (!strcmp(k, "--data-root")) data_root = v;
        else if (!strcmp(k, "--lm-tokenizer")) lm_tokenizer = v;
        else if (!strcmp(k, "--lm-chat-template")) {
            vkl_chat probe;
            vkl_err pe = {{0}};
            lm_chat = v;
            if (vkl_chat_from_name(v, &probe, &pe)) {
                fprintf(stderr, "vklora serve: --lm-chat-template: %s\n", pe.msg);
                return 2;
            }
        }
        else if (!strcmp(k, "--lm-base-dtype")) {
            bad = vkl_app_base_dtype(v, &lm_dtype);
            lm_dtype_given = 1;
        }
        else if (!strcmp(k, "--lm-lora")) {
            if (n_lm_lora == VKL_SERVE_MAX_LM_LORAS) {
                fprintf(stderr, "vklora serve: at most %d --lm-lora options\n", VKL_SERVE_MAX_LM_LORAS);
                return 2;
            }
            lm_lora[n_lm_lora++] = v;
        }
        else if (!strcmp(k, "--weights")) {
            weights = v;
            bad = strcmp(v, "f16") && strcmp(v, "f32");
        }
        else if (!strcmp(k, "--port")) bad = parse_long(v, 0, 65535, &port);
        else if (!strcmp(k, "--max-body")) bad = parse_long(v, 1024, 1LL << 32, &max_body);
        else if (!strcmp(k, "--max-size")) bad = parse_long(v, 8, 16384, &max_size);
        else if (!strcmp(k, "--max-steps")) bad = parse_long(v, 1, 1000, &max_steps);
        else if (!strcmp(k, "--max-batch")) bad = parse_long(v, 1, 64, &max_batch);
        else {
            fprintf(stderr, "vklora serve: unknown option '%s'\n%s", k, usage_text);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "vklora serve: bad value '%s' for %s\n", v, k);
            return 2;
        }
    }
    if (!api_key && getenv("VKLORA_API_KEY") && *getenv("VKLORA_API_KEY")) api_key = getenv("VKLORA_API_KEY");
    if (api_key && !*api_key) {
        fprintf(stderr, "vklora serve: --api-key is empty\n");
        return 2;
    }
    if (!api_key && !is_loopback(host)) {
        fprintf(stderr, "vklora serve: --host %s is reachable from other machines: give --api-key KEY (clients send "
                        "'Authorization: Bearer KEY')\n", host);
        return 2;
    }
    if (!model) model = vkl_default_model_path();
    if (!model) {
        fprintf(stderr, "vklora serve: no model given and vklora's own model (assets/vklora-emoji) was not found; "
                        "pass --model PATH or set VKLORA_MODEL\n");
        return 2;
    }
    struct stat st;
    const char *files[][2] = {{"--model", model}, {"--lora-dir", lora_dir}, {"--model-config", model_config},
                              {"--tokenizer", tokenizer}, {"--lm-model", lm_model}, {"--lm-tokenizer", lm_tokenizer},
                              {"--data-root", data_root}};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        if (files[i][1] && stat(files[i][1], &st)) {
            fprintf(stderr, "vklora serve: %s %s: %s\n", files[i][0], files[i][1], strerror(errno));
            return 1;
        }
    if (lora_dir && (stat(lora_dir, &st) || !S_ISDIR(st.st_mode))) {
        fprintf(stderr, "vklora serve: --lora-dir %s is not a folder\n", lora_dir);
        return 1;
    }

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
    s.model_path = model;
    s.lora_dir = lora_dir;
    s.api_key = api_key;
    s.data_root = data_root;
    s.tokenizer = tokenizer;
    s.model_config = model_config;
    s.lim.max_body = (size_t)max_body;
    s.lim.max_side = (int)max_size;
    s.lim.max_steps = (int)max_steps;
    s.lim.max_batch = (int)max_batch;
    s.clip_skip = 1;
    s.preview_every = 10; /* A1111's default live preview period */
    s.quiet = quiet;
    vkl_gen_model_name(model, s.model_name, sizeof s.model_name);
    serve_queue_init(&s.q);
    pthread_mutex_init(&s.opt_mu, NULL);
    struct MHD_Daemon *d = NULL;
    vkl_err e = {{0}};
    int rc = 1;
    if (vkl_ctx_create(NULL, &s.ctx, &e)) goto done;
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.tokenizer = tokenizer;
    mo.yaml = model_config;
    if (weights && !strcmp(weights, "f32")) mo.weight_dtype = VKL_F32;
    double t0 = vkl_progress_now();
    if (vkl_sd_model_load(s.ctx, model, &mo, &s.model, &e)) goto done;
    int vae_factor = 1 << (s.model->cfg->vae.n_levels - 1);
    s.size_multiple = vae_factor * (1 << (s.model->cfg->unet.n_levels - 1));
    s.native = s.model->cfg->unet.sample_size * vae_factor;
    if (s.native <= 0) s.native = 512;
    if (!quiet)
        fprintf(stderr, "loaded %s (%s) in %.1f s on %s\n", model, vkl_sd_family_name(s.model->cfg->family),
                vkl_progress_now() - t0, vkl_ctx_caps(s.ctx)->name);
    if (lm_model && !lm_dtype_given) lm_dtype = vkl_app_lm_model_dtype(lm_model);
    if (lm_model && load_lm(&s, lm_model, lm_tokenizer, lm_chat, lm_dtype, lm_lora, n_lm_lora, &e)) goto done;
    int bound = 0;
    if (serve_http_start(&s, host, (int)port, &d, &bound, &e)) goto done;
    int v6 = strchr(host, ':') != NULL;
    printf("vklora serve: listening on http://%s%s%s:%d/\n", v6 ? "[" : "", host, v6 ? "]" : "", bound);
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    if (!quiet) fprintf(stderr, "vklora serve: %s: finishing the running job, then stopping\n", strsignal(sig));
    serve_queue_stop(&s.q, 0);
    for (;;) {
        pthread_mutex_lock(&s.q.mu);
        int busy = s.q.head != NULL;
        pthread_mutex_unlock(&s.q.mu);
        if (!busy) break;
        struct timespec ts = {0, 100 * 1000000L};
        if (sigtimedwait(&sigs, NULL, &ts) > 0) {
            if (!quiet) fprintf(stderr, "vklora serve: stopping the running job at its next step\n");
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
    for (int i = 0; i < s.lm.n; i++) vkl_lora_free(&s.lm.lora[i]);
    vkl_app_lm_tok_free(&s.lm.tok);
    vkl_llama_free(s.lm.model);
    vkl_sd_model_free(s.model);
    vkl_ctx_destroy(s.ctx);
    pthread_mutex_destroy(&s.opt_mu);
    serve_queue_destroy(&s.q);
    free(s.preview);
    if (!quiet && !rc) fprintf(stderr, "vklora serve: stopped\n");
    return rc;
}
