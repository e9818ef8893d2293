/* POST /sdapi/v1/txt2img and /sdapi/v1/img2img: AUTOMATIC1111's request
 * fields read and checked (a field vklora cannot honour is refused by name,
 * never ignored), the adapters of <lora:NAME:W> resolved in --lora-dir, then
 * one job on the device through the same library calls as `vklora generate`
 * (same settings, same pixels and parameters text). */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include "gen_image.h"
#include "sd/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gen_req {
    const char *prompt, *negative, *sampler, *scheduler;
    long long steps, width, height, batch_size, n_iter, seed, clip_skip, resize_mode;
    double cfg, strength;
    int img2img;
    int ninit;
    vkl_image init[4]; /* img2img: the decoded init_images (f32 RGB) */
} gen_req;

static void gen_req_free(gen_req *g)
{
    for (int i = 0; i < g->ninit; i++) vkl_image_free(&g->init[i]);
}

/* A field that asks for something vklora does not do (true, a non-empty
 * string, list or object, a non-zero strength) is refused by name; its
 * "off" values are what clients send by default and pass. */
static int unsupported(const cJSON *o, const char *key, const char *what, vkl_err *e)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    int on = 0;
    if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) on = 0;
    else if (cJSON_IsTrue(v)) on = 1;
    else if (cJSON_IsString(v)) on = v->valuestring[0] != 0;
    else if (cJSON_IsArray(v) || cJSON_IsObject(v)) on = v->child != NULL;
    else if (cJSON_IsNumber(v)) on = v->valuedouble != 0;
    return on ? vkl_fail(e, "'%s' (%s) is not supported by vklora serve", key, what) : 0;
}

static int parse_override(vkl_server *s, const cJSON *o, gen_req *g, vkl_err *e)
{
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(o, "override_settings");
    if (!ov || cJSON_IsNull(ov)) return 0;
    if (!cJSON_IsObject(ov)) return vkl_fail(e, "'override_settings' must be an object");
    for (const cJSON *it = ov->child; it; it = it->next) {
        if (!strcmp(it->string, "CLIP_stop_at_last_layers")) {
            if (sj_int(ov, it->string, 1, 12, &g->clip_skip, e)) return -1;
        } else if (!strcmp(it->string, "sd_model_checkpoint")) {
            size_t nl = strlen(s->model_name);
            if (!cJSON_IsString(it) ||
                (strcmp(it->valuestring, s->model_name) &&
                 (strncmp(it->valuestring, s->model_name, nl) || strncmp(it->valuestring + nl, " [", 2))))
                return vkl_fail(e, "'override_settings.sd_model_checkpoint': this server has loaded \"%s\" only",
                                s->model_name);
        } else {
            return vkl_fail(e, "'override_settings.%s' is not an option of vklora serve (CLIP_stop_at_last_layers, "
                               "sd_model_checkpoint)", it->string);
        }
    }
    return 0;
}

static int decode_init_images(vkl_server *s, const cJSON *o, gen_req *g, vkl_err *e)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "init_images");
    if (!a || cJSON_IsNull(a)) return vkl_fail(e, "'init_images' is required: a list of base64 images");
    if (!cJSON_IsArray(a)) return vkl_fail(e, "'init_images' must be a list of base64 images");
    int n = cJSON_GetArraySize(a);
    if (n < 1) return vkl_fail(e, "'init_images' is empty");
    if (n > 4) return vkl_fail(e, "'init_images' holds %d images; at most 4", n);
    for (int i = 0; i < n; i++) {
        const cJSON *it = cJSON_GetArrayItem(a, i);
        if (!cJSON_IsString(it)) return vkl_fail(e, "'init_images[%d]' must be a base64 string", i);
        uint8_t *bytes = NULL;
        size_t len = 0;
        vkl_err be = {{0}};
        if (sj_base64_decode(it->valuestring, &bytes, &len, &be))
            return vkl_fail(e, "'init_images[%d]': %s", i, be.msg);
        char label[32];
        snprintf(label, sizeof label, "init_images[%d]", i);
        /* the header first: a huge image is refused before it is decoded */
        vkl_image_info info;
        int bad = vkl_image_info_memory(bytes, len, label, &info, e);
        if (!bad && ((long long)info.width > 4LL * s->lim.max_side || (long long)info.height > 4LL * s->lim.max_side))
            bad = vkl_fail(e, "'%s' is %dx%d; this server takes images of at most %d pixels a side", label, info.width,
                           info.height, 4 * s->lim.max_side);
        if (!bad) bad = vkl_image_read_memory(bytes, len, label, 3, VKL_PIX_F32, &g->init[g->ninit], NULL, e);
        free(bytes);
        if (bad) return -1;
        g->ninit++;
    }
    return 0;
}

static int parse_request(vkl_server *s, const cJSON *o, int img2img, gen_req *g, vkl_err *e)
{
    memset(g, 0, sizeof *g);
    g->img2img = img2img;
    g->prompt = g->negative = "";
    g->steps = 20;
    g->cfg = 7.0;
    g->seed = -1;
    g->batch_size = g->n_iter = 1;
    g->strength = 0.75;
    g->width = g->height = s->native;
    pthread_mutex_lock(&s->opt_mu);
    g->clip_skip = s->clip_skip;
    pthread_mutex_unlock(&s->opt_mu);
    const size_t text_max = 64 * 1024;
    if (sj_str(o, "prompt", text_max, &g->prompt, e) || sj_str(o, "negative_prompt", text_max, &g->negative, e) ||
        sj_str(o, "sampler_name", 64, &g->sampler, e) || sj_str(o, "scheduler", 64, &g->scheduler, e) ||
        sj_int(o, "steps", 1, s->lim.max_steps, &g->steps, e) ||
        sj_int(o, "width", 8, s->lim.max_side, &g->width, e) ||
        sj_int(o, "height", 8, s->lim.max_side, &g->height, e) ||
        sj_int(o, "batch_size", 1, s->lim.max_batch, &g->batch_size, e) ||
        sj_int(o, "n_iter", 1, s->lim.max_batch, &g->n_iter, e) ||
        sj_int(o, "seed", -1, 9007199254740991LL, &g->seed, e) || sj_num(o, "cfg_scale", 0, 100, &g->cfg, e) ||
        sj_num(o, "denoising_strength", 0, 1, &g->strength, e) || sj_int(o, "resize_mode", 0, 3, &g->resize_mode, e))
        return -1;
    if (!g->sampler && sj_str(o, "sampler_index", 64, &g->sampler, e)) return -1;
    int flag = 0;
    if (sj_bool(o, "send_images", &flag, e) || sj_bool(o, "save_images", &flag, e)) return -1;
    if (unsupported(o, "enable_hr", "hires fix", e) || unsupported(o, "restore_faces", "face restoration", e) ||
        unsupported(o, "tiling", "tiling", e) || unsupported(o, "styles", "saved styles", e) ||
        unsupported(o, "alwayson_scripts", "scripts", e) || unsupported(o, "script_name", "scripts", e) ||
        unsupported(o, "mask", "inpainting", e) || unsupported(o, "subseed_strength", "variation seeds", e))
        return -1;
    if (g->batch_size * g->n_iter > s->lim.max_batch)
        return vkl_fail(e, "'batch_size' x 'n_iter' = %lld; this server makes at most %d images a request",
                        g->batch_size * g->n_iter, s->lim.max_batch);
    if (g->width % s->size_multiple || g->height % s->size_multiple)
        return vkl_fail(e, "'width' %lld x 'height' %lld: this model needs multiples of %d", g->width, g->height,
                        s->size_multiple);
    if (img2img && g->strength <= 0)
        return vkl_fail(e, "'denoising_strength' 0 changes nothing; give a value in (0, 1]");
    if (g->resize_mode > 1)
        return vkl_fail(e, "'resize_mode' %lld: vklora serve has 0 (just resize) and 1 (crop and resize)",
                        g->resize_mode);
    if (parse_override(s, o, g, e)) return -1;
    if (g->img2img && decode_init_images(s, o, g, e)) return -1;
    return 0;
}

/* <lora:NAME:...> names a file directly inside --lora-dir: a NAME with a
 * folder in it would reach outside. */
static int check_lora_names(const char *prompt, vkl_err *e)
{
    for (const char *p = strstr(prompt, "<lora:"); p; p = strstr(p + 1, "<lora:")) {
        const char *name = p + 6;
        size_t n = strcspn(name, ":>");
        if (!n) return vkl_fail(e, "'prompt': <lora:> without a name");
        for (size_t i = 0; i < n; i++)
            if (name[i] == '/' || name[i] == '\\')
                return vkl_fail(e, "'prompt': <lora:%.*s>: an adapter is named by its file name in --lora-dir, "
                                   "without folders", (int)n, name);
        if (name[0] == '.') return vkl_fail(e, "'prompt': <lora:%.*s>: a name may not start with '.'", (int)n, name);
    }
    return 0;
}

/* Makes s->gl the adapters of want (consumed): the same files in the same
 * order only change their multipliers (a small upload); another set is
 * unhooked and the new one read and hooked in. */
static int use_adapters(vkl_server *s, vkl_gen_lora *want, vkl_err *e)
{
    int same = want->n == s->gl.n;
    for (int i = 0; same && i < want->n; i++) same = !strcmp(want->path[i], s->gl.path[i]);
    if (same) {
        for (int i = 0; i < want->n; i++) {
            s->gl.unet_mult[i] = want->unet_mult[i];
            s->gl.te_mult[i] = want->te_mult[i];
            if (vkl_gen_lora_set_weight(&s->gl, i, want->unet_mult[i], want->te_mult[i], e)) {
                vkl_gen_lora_free(&s->gl, s->model);
                vkl_gen_lora_free(want, s->model);
                return -1;
            }
        }
        vkl_gen_lora_free(want, s->model);
        return 0;
    }
    vkl_gen_lora_free(&s->gl, s->model);
    s->gl = *want;
    memset(want, 0, sizeof *want);
    if (!s->gl.n) return 0;
    if (vkl_gen_lora_apply(&s->gl, s->model, 0, e)) {
        vkl_gen_lora_free(&s->gl, s->model);
        return -1;
    }
    return 0;
}

typedef struct step_ctx {
    vkl_server *s;
    serve_job *job;
    int width, height;
} step_ctx;

static int on_preview(void *user, int step, int steps, const float *denoised, int batch, int channels, int h, int w)
{
    (void)batch;
    step_ctx *c = user;
    if (serve_preview_wanted(c->s, step, steps)) serve_preview_make(c->s, denoised, channels, h, w, c->width, c->height);
    return 0;
}

static int on_step(void *user, int step, int steps)
{
    step_ctx *c = user;
    return serve_queue_step(&c->s->q, c->job, step, steps);
}

/* [batch, 3, H, W] in [-1, 1] from the init images as `generate` prepares its own. */
static float *init_tensor(const gen_req *g, vkl_err *e)
{
    int w = (int)g->width, h = (int)g->height, B = (int)g->batch_size;
    size_t hw = (size_t)w * h;
    float *t = malloc(sizeof(float) * 3 * hw * B);
    if (!t) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    for (int b = 0; b < B; b++) {
        vkl_image rs;
        memset(&rs, 0, sizeof rs);
        const vkl_image *src = &g->init[b % g->ninit];
        int bad = g->resize_mode == 1 ? vkl_image_resize_cover(src, w, h, VKL_RESIZE_LANCZOS3, &rs, e)
                                      : vkl_image_resize(src, w, h, VKL_RESIZE_LANCZOS3, &rs, e);
        if (bad) {
            free(t);
            return NULL;
        }
        const float *px = vkl_image_f32(&rs);
        for (size_t i = 0; i < hw; i++)
            for (int ch = 0; ch < 3; ch++) t[(size_t)b * 3 * hw + ch * hw + i] = px[i * 3 + ch] * 2.0f - 1.0f;
        vkl_image_free(&rs);
    }
    return t;
}

static uint64_t random_seed(void)
{
    uint64_t seed = 0;
    FILE *r = fopen("/dev/urandom", "rb");
    if (!r || fread(&seed, sizeof seed, 1, r) != 1) seed = (uint64_t)(vkl_serve_now() * 1e6);
    if (r) fclose(r);
    return seed % 4294967296ull; /* A1111 shows 32-bit seeds */
}

/* One image as a base64 PNG with its parameters text, as `generate` writes it. */
static char *encode_image(vkl_server *s, const gen_req *g, const vkl_gen_opts *o, const vkl_gen_result *res, int b,
                          const char *prompt, char **infotext, vkl_err *e)
{
    vkl_image im;
    if (vkl_gen_image_u8(res->images, b, res->width, res->height, &im, e)) return NULL;
    vkl_gen_settings gs = {0};
    gs.prompt = prompt; /* as given, <lora:...> included, as A1111 records it */
    gs.negative_prompt = g->negative;
    gs.steps = (int)g->steps;
    gs.sampler = vkl_sampler_kind_a1111_name(o->sampler.kind);
    gs.schedule_type = vkl_schedule_kind_a1111_name(o->sampler.schedule);
    gs.cfg_scale = g->cfg;
    gs.seed = o->seed;
    gs.width = res->width;
    gs.height = res->height;
    gs.model = s->model_name;
    gs.denoising_strength = g->img2img ? g->strength : -1;
    gs.clip_skip = (int)g->clip_skip;
    gs.version = "vklora";
    char *text = NULL, *b64 = NULL;
    uint8_t *png = NULL;
    size_t n = 0;
    if (!vkl_gen_infotext(&gs, &s->gl, &text, e)) {
        vkl_png_text t = {"parameters", text};
        if (!vkl_png_encode(&im, &t, 1, "image", &png, &n, e) && !(b64 = sj_base64_encode(png, n)))
            vkl_fail(e, "out of host memory");
    }
    free(png);
    vkl_image_free(&im);
    if (b64) *infotext = text;
    else free(text);
    return b64;
}

static cJSON *info_json(vkl_server *s, const gen_req *g, const vkl_gen_opts *o, uint64_t seed, cJSON *infotexts,
                        int interrupted, int steps_done)
{
    cJSON *i = cJSON_CreateObject(), *seeds = cJSON_CreateArray(), *prompts = cJSON_CreateArray(),
          *negs = cJSON_CreateArray();
    int total = (int)(g->batch_size * g->n_iter);
    for (int k = 0; k < total; k++) {
        /* one seed per batch, the next seed for the next batch */
        cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)(seed + (uint64_t)(k / g->batch_size))));
        cJSON_AddItemToArray(prompts, cJSON_CreateString(g->prompt));
        cJSON_AddItemToArray(negs, cJSON_CreateString(g->negative));
    }
    cJSON_AddStringToObject(i, "prompt", g->prompt);
    cJSON_AddItemToObject(i, "all_prompts", prompts);
    cJSON_AddStringToObject(i, "negative_prompt", g->negative);
    cJSON_AddItemToObject(i, "all_negative_prompts", negs);
    cJSON_AddNumberToObject(i, "seed", (double)seed);
    cJSON_AddItemToObject(i, "all_seeds", seeds);
    cJSON_AddNumberToObject(i, "subseed", -1);
    cJSON_AddNumberToObject(i, "subseed_strength", 0);
    cJSON_AddNumberToObject(i, "width", (double)g->width);
    cJSON_AddNumberToObject(i, "height", (double)g->height);
    cJSON_AddStringToObject(i, "sampler_name", vkl_sampler_kind_a1111_name(o->sampler.kind));
    const char *sched = vkl_schedule_kind_a1111_name(o->sampler.schedule);
    cJSON_AddStringToObject(i, "scheduler", sched ? sched : "Automatic");
    cJSON_AddNumberToObject(i, "cfg_scale", g->cfg);
    cJSON_AddNumberToObject(i, "steps", (double)g->steps);
    cJSON_AddNumberToObject(i, "batch_size", (double)g->batch_size);
    cJSON_AddNumberToObject(i, "clip_skip", (double)g->clip_skip);
    cJSON_AddStringToObject(i, "sd_model_name", s->model_name);
    if (g->img2img) cJSON_AddNumberToObject(i, "denoising_strength", g->strength);
    else cJSON_AddNullToObject(i, "denoising_strength");
    cJSON_AddItemToObject(i, "infotexts", infotexts);
    cJSON_AddItemToObject(i, "styles", cJSON_CreateArray());
    pthread_mutex_lock(&s->q.mu);
    cJSON_AddStringToObject(i, "job_timestamp", s->q.job_timestamp);
    pthread_mutex_unlock(&s->q.mu);
    cJSON_AddStringToObject(i, "version", "vklora");
    cJSON_AddBoolToObject(i, "interrupted", interrupted);
    /* vklora's: the steps its last sampling run made (fewer when interrupted) */
    cJSON_AddNumberToObject(i, "sampling_steps_done", steps_done);
    return i;
}

/* The request as understood, defaults filled in (A1111's "parameters"). */
static cJSON *parameters_json(const gen_req *g, const char *sampler)
{
    cJSON *p = cJSON_CreateObject();
    cJSON_AddStringToObject(p, "prompt", g->prompt);
    cJSON_AddStringToObject(p, "negative_prompt", g->negative);
    cJSON_AddNumberToObject(p, "seed", (double)g->seed);
    cJSON_AddStringToObject(p, "sampler_name", sampler);
    cJSON_AddStringToObject(p, "scheduler", g->scheduler ? g->scheduler : "Automatic");
    cJSON_AddNumberToObject(p, "batch_size", (double)g->batch_size);
    cJSON_AddNumberToObject(p, "n_iter", (double)g->n_iter);
    cJSON_AddNumberToObject(p, "steps", (double)g->steps);
    cJSON_AddNumberToObject(p, "cfg_scale", g->cfg);
    cJSON_AddNumberToObject(p, "width", (double)g->width);
    cJSON_AddNumberToObject(p, "height", (double)g->height);
    if (g->img2img) {
        cJSON_AddNumberToObject(p, "denoising_strength", g->strength);
        cJSON_AddNumberToObject(p, "resize_mode", (double)g->resize_mode);
        cJSON_AddNullToObject(p, "init_images");
    }
    return p;
}

static int generate(vkl_server *s, const serve_req *q, serve_resp *r, int img2img)
{
    cJSON *body = serve_parse_object(q, r);
    if (!body) return 0;
    vkl_err e = {{0}};
    gen_req g;
    vkl_gen_lora want;
    memset(&want, 0, sizeof want);
    char *clean = NULL;
    cJSON *images = NULL, *infotexts = NULL;
    float *init = NULL;
    int status = 422;
    const char *what = "Unprocessable Entity";
    vkl_gen_opts o;
    vkl_gen_opts_default(&o);
    memset(&g, 0, sizeof g);
    if (parse_request(s, body, img2img, &g, &e)) goto fail;
    if ((g.sampler && vkl_sampler_config_set_name(&o.sampler, g.sampler, &e)) ||
        (g.scheduler && vkl_schedule_kind_parse(g.scheduler, &o.sampler.schedule, &e)))
        goto fail;
    if (check_lora_names(g.prompt, &e)) goto fail;
    if (strstr(g.prompt, "<lora:") && !s->lora_dir) {
        vkl_fail(&e, "'prompt' names an adapter (<lora:...>) but this server has no --lora-dir");
        goto fail;
    }
    if (!(clean = vkl_gen_lora_from_prompt(&want, g.prompt, s->lora_dir, &e))) goto fail;
    o.prompt = clean;
    o.negative = g.negative;
    o.width = (int)g.width;
    o.height = (int)g.height;
    o.batch = (int)g.batch_size;
    o.cfg = (float)g.cfg;
    o.clip_skip = (int)g.clip_skip;
    o.strength = (float)g.strength;
    o.sampler.steps = (int)g.steps;
    if (img2img && !(init = init_tensor(&g, &e))) goto fail;
    o.init_image = init;
    uint64_t seed = g.seed < 0 ? random_seed() : (uint64_t)g.seed;

    serve_job job = {0};
    job.fd = q->fd;
    job.kind = img2img ? "img2img" : "txt2img";
    if (serve_queue_enter(&s->q, &job)) {
        if (job.client_gone) status = 400, what = "Bad Request", vkl_fail(&e, "the client closed the connection");
        else status = 503, what = "Service Unavailable", vkl_fail(&e, "the server is stopping");
        goto fail;
    }
    int interrupted = 0, rc = 0;
    double t_adapters = vkl_serve_now(), t_text = 0, t_sampling = 0, t_vae = 0;
    images = cJSON_CreateArray();
    infotexts = cJSON_CreateArray();
    if (use_adapters(s, &want, &e)) {
        serve_queue_leave(&s->q, &job);
        serve_device_check(s);
        goto fail; /* an adapter that does not fit the model: 422 */
    }
    t_adapters = vkl_serve_now() - t_adapters;
    step_ctx sc = {s, &job, o.width, o.height};
    o.progress = on_step;
    o.progress_user = &sc;
    o.preview = on_preview;
    o.preview_user = &sc;
    for (int it = 0; it < g.n_iter && !rc && !interrupted; it++) {
        o.seed = seed + (uint64_t)it;
        job.step = 0;
        vkl_gen_result res;
        memset(&res, 0, sizeof res);
        if (vkl_sd_generate(s->model, &o, &res, &e)) {
            if (job.interrupted || job.client_gone) interrupted = 1;
            else rc = -1;
            break;
        }
        for (int b = 0; b < res.batch && !rc; b++) {
            char *text = NULL;
            char *png = encode_image(s, &g, &o, &res, b, g.prompt, &text, &e);
            if (!png) rc = -1;
            else {
                cJSON_AddItemToArray(images, cJSON_CreateString(png));
                cJSON_AddItemToArray(infotexts, cJSON_CreateString(text));
            }
            free(png);
            free(text);
        }
        t_text += res.seconds_text;
        t_sampling += res.seconds_sampling;
        t_vae += res.seconds_vae;
        vkl_gen_result_free(&res);
    }
    int gone = job.client_gone;
    serve_queue_leave(&s->q, &job);
    serve_device_check(s);
    if (gone) {
        status = 400, what = "Bad Request";
        vkl_fail(&e, "the client closed the connection");
        goto fail;
    }
    if (rc) {
        status = 500, what = "Internal Server Error";
        goto fail;
    }
    o.seed = seed;
    cJSON *out = cJSON_CreateObject();
    cJSON_AddItemToObject(out, "images", images);
    cJSON_AddItemToObject(out, "parameters", parameters_json(&g, vkl_sampler_kind_a1111_name(o.sampler.kind)));
    cJSON *ij = info_json(s, &g, &o, seed, infotexts, interrupted, job.step), *tm = cJSON_CreateObject();
    /* vklora's: where the request's time went (adapters: reading and hooking
     * in new files, or only re-weighting the same ones) */
    cJSON_AddNumberToObject(tm, "adapters", t_adapters);
    cJSON_AddNumberToObject(tm, "text", t_text);
    cJSON_AddNumberToObject(tm, "sampling", t_sampling);
    cJSON_AddNumberToObject(tm, "vae", t_vae);
    cJSON_AddItemToObject(ij, "seconds", tm);
    char *info = sj_print_free(ij);
    cJSON_AddStringToObject(out, "info", info ? info : "{}");
    free(info);
    images = infotexts = NULL;
    serve_json(r, out);
    goto done;
fail:
    serve_error(r, status, what, "%s", e.msg);
done:
    cJSON_Delete(images);
    cJSON_Delete(infotexts);
    vkl_gen_lora_free(&want, s->model);
    free(clean);
    free(init);
    gen_req_free(&g);
    cJSON_Delete(body);
    return 0;
}

int serve_txt2img(vkl_server *s, const serve_req *q, serve_resp *r)
{
    return generate(s, q, r, 0);
}

int serve_img2img(vkl_server *s, const serve_req *q, serve_resp *r)
{
    return generate(s, q, r, 1);
}
