/* `vklora serve`: one process that loads a Stable Diffusion model once and
 * answers AUTOMATIC1111's HTTP API (the /sdapi/v1 subset clients use) and a
 * web page at /. Files: cmd_serve.c (options, model, signals), serve_http.c
 * (libmicrohttpd: bodies, limits, keys, routes), serve_queue.c (one device
 * job at a time), serve_sdapi.c (the lists and options), serve_generate.c
 * (txt2img / img2img), serve_json.c (typed fields, errors, base64),
 * serve_page.c (the embedded page), serve_openai.c (the text API),
 * serve_train.c (training jobs). */
#ifndef VKL_SERVE_H
#define VKL_SERVE_H

#include "gen_lora.h"
#include "lm_tok.h"
#include "llama/llama.h"
#include "serve/serve_queue.h"
#include "sd/sd_model.h"

#include <cjson/cJSON.h>
#include <pthread.h>

typedef struct serve_limits {
    size_t max_body;  /* bytes of one request body */
    int max_side;     /* pixels of width and height */
    int max_steps;
    int max_batch;    /* batch_size x n_iter */
} serve_limits;

#define VKL_SERVE_MAX_LM_LORAS 8

/* The language model of the OpenAI-style API (--lm-model), if any. */
typedef struct serve_lm {
    vkl_llama *model;       /* NULL: none loaded */
    vkl_app_lm_tok tok;
    char name[256];
    int n;                  /* adapters (--lm-lora), ids 0..n-1 */
    vkl_lora lora[VKL_SERVE_MAX_LM_LORAS];
    float scale[VKL_SERVE_MAX_LM_LORAS]; /* when a request names none */
    int kind[VKL_SERVE_MAX_LM_LORAS];    /* vkl_app_lm_kind: LoRA (AdaLoRA too), DoRA, IA3 */
    char *path[VKL_SERVE_MAX_LM_LORAS];  /* as given to --lm-lora, for messages */
} serve_lm;

typedef struct vkl_server {
    vkl_ctx *ctx;
    vkl_sd_model *model;
    const char *model_path;
    char model_name[256];
    const char *lora_dir;   /* NULL: no <lora:...> */
    const char *api_key;    /* NULL: none asked */
    const char *data_root;  /* training images lie inside it (NULL: no training) */
    const char *tokenizer, *model_config; /* as given for the model (for training jobs) */
    serve_limits lim;
    int native;             /* the model's native image side */
    int size_multiple;      /* of width and height: the VAE factor x the UNet's downsampling */
    serve_queue q;
    /* the adapters hooked into the model now; kept while requests name the
     * same files, so changing only their weights is a small upload. Only the
     * job at the queue's head touches them. */
    vkl_gen_lora gl;
    pthread_mutex_t opt_mu; /* the options below */
    int clip_skip;          /* CLIP_stop_at_last_layers */
    int preview_every;      /* show_progress_every_n_steps: previews every N steps (-1: last only, 0: none) */
    int quiet;              /* no request log */
    serve_lm lm;
    int device_lost;        /* set once: the server stops and exits with status 1 */
    /* the latest preview (base64 PNG) and the job_no of the job that made it; guarded by q.mu */
    char *preview;
    int preview_job_no;
    double preview_asked;   /* when a progress request last wanted current_image (vkl_serve_now; 0: never) */
} vkl_server;

/* A request as the handlers see it: the whole body (NUL-terminated) read. */
typedef struct serve_req {
    const char *method, *url;
    const char *body;
    size_t body_len;
    int fd;                 /* the client's socket */
    void *conn;             /* the libmicrohttpd connection (serve_query) */
} serve_req;

/* The value of ?key=... in the request's address, or NULL. */
const char *serve_query(const serve_req *q, const char *key);

/* What a handler answers: status and a malloc'd body. */
typedef struct serve_resp {
    int status;
    char *body;
    size_t len;             /* 0: strlen(body) */
    const char *type;       /* NULL: application/json */
    int pipe_fd;            /* > 0: the body is what arrives on this pipe until it closes (a stream) */
} serve_resp;

/* A 4xx/5xx JSON error {"error": what, "detail": detail}; returns 0 so
 * handlers can `return serve_error(...)`. */
int serve_error(serve_resp *r, int status, const char *what, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* 200 with obj printed (and deleted). */
int serve_json(serve_resp *r, cJSON *obj);
/* Parses the body as a JSON object, or answers 400/422 and returns NULL. */
cJSON *serve_parse_object(const serve_req *q, serve_resp *r);

/* Routes; each fills r. */
void serve_route(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_txt2img(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_img2img(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_progress(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_interrupt(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_sd_models(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_loras(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_samplers(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_schedulers(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_options_get(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_options_set(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_page(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_completions(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_chat_completions(vkl_server *s, const serve_req *q, serve_resp *r);
/* Fails naming the adapters when scale[] (0: off) turns on a DoRA adapter
 * with another LoRA or DoRA one (IA3 ones may join it, as in lm generate). */
int serve_lm_lora_combination(const serve_lm *lm, const float *scale, vkl_err *e);
int serve_lm_models(vkl_server *s, const serve_req *q, serve_resp *r);
/* After a device job: a lost device (vkl_ctx_lost) cannot run anything
 * more, so the server stops as at SIGTERM (waiting requests get 503) and
 * exits with status 1, for a supervisor to start it again. */
void serve_device_check(vkl_server *s);
int serve_train_start(vkl_server *s, const serve_req *q, serve_resp *r);
int serve_train_job(vkl_server *s, const serve_req *q, serve_resp *r); /* /vklora/v1/train/ID: GET, DELETE */
void serve_train_free_all(void); /* waits for the jobs' threads */
/* A training request's "uploads" written as the image folder
 * --data-root/uploads/NAME (serve_upload.c); rel gets "uploads/NAME". */
int serve_train_uploads(vkl_server *s, const cJSON *uploads, const char *name, char *rel, size_t cap, vkl_err *e);

/* Live previews (serve_preview.c): whether step of steps gets one now (only
 * while progress requests ask for current_image), and
 * the making of one from the batch's first denoised latents [channels, h, w]
 * (the image width x height) into s->preview; -1 when none could be made. */
int serve_preview_wanted(vkl_server *s, int step, int steps);
int serve_preview_make(vkl_server *s, const float *denoised, int channels, int h, int w, int width, int height);

/* The HTTP server: starts listening (port 0: any free one, *bound_port
 * receives it) on its own threads. */
struct MHD_Daemon;
int serve_http_start(vkl_server *s, const char *host, int port, struct MHD_Daemon **out, int *bound_port,
                     vkl_err *e);
void serve_http_stop(struct MHD_Daemon *d);

#endif
