/* The small AUTOMATIC1111 endpoints: progress, interrupt, the model, adapter,
 * sampler and scheduler lists, and the options. Field names and shapes are
 * A1111's (modules/api/models.py), so its clients read them unchanged. */
#include "serve/serve.h"
#include "lora_dir.h"
#include "sd/sampler.h"
#include "serve/serve_json.h"

#include "io/safetensors.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int serve_progress(vkl_server *s, const serve_req *q, serve_resp *r)
{
    serve_queue *qu = &s->q;
    pthread_mutex_lock(&qu->mu);
    int running = qu->head != NULL, step = qu->step, steps = qu->steps, waiting = qu->waiting, no = qu->job_no;
    int interrupted = running && qu->head->interrupted;
    const char *kind = running && qu->head->kind ? qu->head->kind : "";
    double started = qu->started;
    char stamp[32];
    snprintf(stamp, sizeof stamp, "%s", qu->job_timestamp);
    /* the latest preview of the running job, or of the last job once it ended
     * (until another starts); ?skip_current_image=true leaves it out, as A1111 */
    const char *skip = serve_query(q, "skip_current_image");
    int wants = !(skip && !strcasecmp(skip, "true"));
    if (wants) s->preview_asked = vkl_serve_now(); /* someone watches: previews are made */
    char *preview = s->preview && s->preview_job_no == no && wants ? strdup(s->preview) : NULL;
    pthread_mutex_unlock(&qu->mu);
    double progress = running && steps ? (double)step / steps : 0.0;
    double elapsed = vkl_serve_now() - started;
    /* A1111's estimate: time so far over progress so far, minus time so far */
    double eta = progress > 0 ? elapsed / progress - elapsed : 0.0;
    cJSON *o = cJSON_CreateObject(), *st = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "progress", progress);
    cJSON_AddNumberToObject(o, "eta_relative", eta);
    cJSON_AddBoolToObject(st, "skipped", 0);
    cJSON_AddBoolToObject(st, "interrupted", interrupted);
    cJSON_AddStringToObject(st, "job", kind);
    cJSON_AddNumberToObject(st, "job_count", waiting);
    cJSON_AddStringToObject(st, "job_timestamp", stamp);
    cJSON_AddNumberToObject(st, "job_no", running ? no - 1 : no);
    cJSON_AddNumberToObject(st, "sampling_step", running ? step : 0);
    cJSON_AddNumberToObject(st, "sampling_steps", running ? steps : 0);
    cJSON_AddNumberToObject(st, "queued", waiting > 0 ? waiting - 1 : 0);
    cJSON_AddItemToObject(o, "state", st);
    if (preview) cJSON_AddStringToObject(o, "current_image", preview);
    else cJSON_AddNullToObject(o, "current_image");
    free(preview);
    cJSON_AddNullToObject(o, "textinfo");
    return serve_json(r, o);
}

int serve_interrupt(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)q;
    serve_queue_interrupt(&s->q);
    return serve_json(r, cJSON_CreateObject());
}

int serve_sd_models(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)q;
    cJSON *a = cJSON_CreateArray(), *m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "title", s->model_name);
    cJSON_AddStringToObject(m, "model_name", s->model_name);
    cJSON_AddNullToObject(m, "hash");
    cJSON_AddNullToObject(m, "sha256");
    cJSON_AddStringToObject(m, "filename", s->model_path);
    cJSON_AddNullToObject(m, "config");
    cJSON_AddItemToArray(a, m);
    return serve_json(r, a);
}

/* The safetensors files of --lora-dir and its subfolders, as <lora:NAME:W>
 * finds them (lora_dir.h). */
int serve_loras(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)q;
    vkl_lora_dir_entry *l = NULL;
    int n = 0;
    vkl_err e = {{0}};
    if (s->lora_dir && vkl_lora_dir_list(s->lora_dir, &l, &n, &e))
        return serve_error(r, 500, "Internal Server Error", "%s", e.msg);
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *o = cJSON_CreateObject(), *meta = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", l[i].name);
        cJSON_AddStringToObject(o, "alias", l[i].name);
        cJSON_AddStringToObject(o, "path", l[i].path);
        /* the training metadata (ss_* keys), as A1111 shows it */
        vkl_st_file *f = NULL;
        if (!vkl_st_open(l[i].path, &f, &e)) {
            for (int k = 0; k < vkl_st_meta_count(f); k++)
                cJSON_AddStringToObject(meta, vkl_st_meta_key(f, k), vkl_st_meta_value(f, k));
            vkl_st_close(f);
        }
        cJSON_AddItemToObject(o, "metadata", meta);
        cJSON_AddItemToArray(a, o);
    }
    vkl_lora_dir_free(l, n);
    return serve_json(r, a);
}

int serve_samplers(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)s, (void)q;
    /* every sampler kind, by A1111's name with vklora's (ComfyUI's) as alias */
    cJSON *a = cJSON_CreateArray();
    for (int k = VKL_SAMPLER_EULER; k <= VKL_SAMPLER_DPMPP_SDE; k++) {
        cJSON *o = cJSON_CreateObject(), *al = cJSON_CreateArray();
        cJSON_AddStringToObject(o, "name", vkl_sampler_kind_a1111_name((vkl_sampler_kind)k));
        cJSON_AddItemToArray(al, cJSON_CreateString(vkl_sampler_kind_name((vkl_sampler_kind)k)));
        cJSON_AddItemToObject(o, "aliases", al);
        cJSON_AddItemToObject(o, "options", cJSON_CreateObject());
        cJSON_AddItemToArray(a, o);
    }
    return serve_json(r, a);
}

int serve_schedulers(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)s, (void)q;
    static const char *const names[][2] = {
        {"automatic", "Automatic"}, {"karras", "Karras"}, {"exponential", "Exponential"}, {"sgm_uniform", "SGM Uniform"}};
    cJSON *a = cJSON_CreateArray();
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", names[i][0]);
        cJSON_AddStringToObject(o, "label", names[i][1]);
        cJSON_AddItemToArray(a, o);
    }
    return serve_json(r, a);
}

int serve_options_get(vkl_server *s, const serve_req *q, serve_resp *r)
{
    (void)q;
    pthread_mutex_lock(&s->opt_mu);
    int clip_skip = s->clip_skip, every = s->preview_every;
    pthread_mutex_unlock(&s->opt_mu);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "sd_model_checkpoint", s->model_name);
    cJSON_AddNumberToObject(o, "CLIP_stop_at_last_layers", clip_skip);
    cJSON_AddNumberToObject(o, "show_progress_every_n_steps", every);
    cJSON_AddBoolToObject(o, "live_previews_enable", every != 0);
    cJSON_AddStringToObject(o, "samples_format", "png");
    return serve_json(r, o);
}

/* The options vklora has. Setting the checkpoint to the loaded model is
 * accepted (clients send it before every request); another model is not
 * (this server loads one), and an option vklora does not have is named. */
int serve_options_set(vkl_server *s, const serve_req *q, serve_resp *r)
{
    cJSON *o = serve_parse_object(q, r);
    if (!o) return 0;
    vkl_err e = {{0}};
    const char *ckpt = NULL, *fmt = NULL;
    long long clip_skip = -1, every = -2;
    int live = -1;
    int bad = sj_str(o, "sd_model_checkpoint", 4096, &ckpt, &e) ||
              sj_int(o, "CLIP_stop_at_last_layers", 1, 12, &clip_skip, &e) ||
              sj_int(o, "show_progress_every_n_steps", -1, 100000, &every, &e) ||
              sj_bool(o, "live_previews_enable", &live, &e) ||
              sj_str(o, "samples_format", 16, &fmt, &e);
    /* the name, or A1111's title "name [hash]" */
    size_t nl = strlen(s->model_name);
    if (!bad && ckpt && strcmp(ckpt, s->model_name) && (strncmp(ckpt, s->model_name, nl) || strncmp(ckpt + nl, " [", 2)))
        bad = vkl_fail(&e, "'sd_model_checkpoint' \"%s\": this server has loaded \"%s\" only", ckpt, s->model_name);
    if (!bad && fmt && strcasecmp(fmt, "png")) bad = vkl_fail(&e, "'samples_format' \"%s\": vklora writes png only", fmt);
    for (const cJSON *it = o->child; !bad && it; it = it->next)
        if (strcmp(it->string, "sd_model_checkpoint") && strcmp(it->string, "CLIP_stop_at_last_layers") &&
            strcmp(it->string, "samples_format") && strcmp(it->string, "show_progress_every_n_steps") &&
            strcmp(it->string, "live_previews_enable"))
            bad = vkl_fail(&e, "'%s' is not an option of vklora serve (sd_model_checkpoint, CLIP_stop_at_last_layers, "
                               "samples_format, show_progress_every_n_steps, live_previews_enable)", it->string);
    cJSON_Delete(o);
    if (bad) return serve_error(r, 422, "Unprocessable Entity", "%s", e.msg);
    pthread_mutex_lock(&s->opt_mu);
    if (clip_skip > 0) s->clip_skip = (int)clip_skip;
    /* live_previews_enable false turns them off; true brings back A1111's period where they were off */
    if (every >= -1) s->preview_every = (int)every;
    if (live == 0) s->preview_every = 0;
    else if (live == 1 && !s->preview_every) s->preview_every = 10;
    pthread_mutex_unlock(&s->opt_mu);
    return serve_json(r, cJSON_CreateObject());
}
