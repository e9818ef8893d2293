/* Training jobs: POST /vklora/v1/train starts `vklora train` (the library's
 * trainer, vkl_trainer_*, driven a step at a time; the same settings by the
 * same names) as a job in the device queue; GET /vklora/v1/train/ID reports its state, queue position
 * and the loss of every step so far; DELETE /vklora/v1/train/ID stops it
 * (a running one saves its state at the end of the step, as Ctrl-C does;
 * a queued one leaves the queue). The image folder lies inside --data-root,
 * or the request uploads the images (serve_upload.c);
 * the adapter is written to --lora-dir/NAME.safetensors (with NAME.json,
 * NAME.csv and NAME.state/ beside it), where <lora:NAME:W> then finds it.
 * A request's "sample_prompt" text (one prompt a line) becomes the run's
 * --sample-prompts file, NAME.samples/prompts.txt; each sample image is
 * listed in the job as it is written and served from
 * /vklora/v1/train/ID/samples/stepNNNNNN-I.png, so a page shows them live. */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include "io/dir.h"
#include "train/sd_trainer.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_JOBS 64
#define MAX_LOSSES 100000
#define MAX_SAMPLE_RUNS 1000 /* sampling steps listed per job */

typedef struct train_job {
    int id;
    char name[128];
    char output[4096];
    char state[16];      /* queued, running, done, stopped, failed */
    char error[1024];
    int step, total;
    float *loss;         /* per step */
    int nloss;
    int stop_asked;
    int sample_steps[MAX_SAMPLE_RUNS]; /* steps whose sample images are written */
    int nsample_steps;
    int nprompts;        /* images per sampling step */
    char prompts_file[4300];
    serve_job job;
    vkl_train_config cfg;
    char images[PATH_MAX];
    cJSON *settings;     /* the request, which cfg's strings point into */
    vkl_server *s;
    pthread_t thread;
    int started;
} train_job;

/* Jobs live as long as the server (a list of at most MAX_JOBS); guarded by s->q.mu. */
static train_job *jobs[MAX_JOBS];
static int njobs;

/* A settings value as the command line would spell it. */
static int value_text(const cJSON *v, char *buf, size_t n)
{
    if (cJSON_IsString(v)) snprintf(buf, n, "%s", v->valuestring);
    else if (cJSON_IsBool(v)) snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsNumber(v)) snprintf(buf, n, "%.9g", v->valuedouble);
    else return -1;
    return 0;
}

/* Settings a client may not give: the server decides what is read and
 * written (and which model trains). */
static const char *const refused[] = {"model", "output", "o", "resume", "config", "sample-prompts", "tokenizer",
                                      "model-config", "images", "force", "cache-latents-to-disk", "quiet",
                                      "interrupt-at", "kill-at"};

/* Every setting of the request but images, uploads and name, by its
 * option name (max_steps or max-steps, as a --config file takes them). */
static int set_options(vkl_train_config *c, const cJSON *body, vkl_err *e)
{
    for (const cJSON *it = body->child; it; it = it->next) {
        if (!strcmp(it->string, "images") || !strcmp(it->string, "name") || !strcmp(it->string, "uploads") ||
            !strcmp(it->string, "sample_prompt"))
            continue;
        char key[64];
        snprintf(key, sizeof key, "%s", it->string);
        for (char *p = key; *p; p++)
            if (*p == '_') *p = '-';
        for (size_t k = 0; k < sizeof refused / sizeof *refused; k++)
            if (!strcmp(key, refused[k]))
                return vkl_fail(e, "'%s' is set by the server, not by a request", it->string);
        char val[4096];
        if (value_text(it, val, sizeof val)) return vkl_fail(e, "'%s' must be a string, number or true/false", it->string);
        /* string settings are kept as pointers: into the request, which the job keeps */
        vkl_err se = {{0}};
        if (vkl_train_config_set(c, key, cJSON_IsString(it) ? it->valuestring : val, &se))
            return vkl_fail(e, "'%s': %s", it->string, se.msg);
    }
    if (c->max_steps <= 0 && c->epochs <= 0) c->max_steps = 100;
    if (c->max_steps > 100000) return vkl_fail(e, "'max-steps' %d: at most 100000", c->max_steps);
    return 0;
}

/* Prompt lines as the sample renderer counts them (blank and # lines skipped). */
static int count_prompts(const char *text)
{
    int n = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\t') p++;
        if (*p && *p != '\n' && *p != '#') n++;
        p = strchr(p, '\n');
        if (!p) break;
        p++;
    }
    return n;
}

/* "sample_prompt" checked (write 0), then written (write 1) as the run's
 * --sample-prompts file in NAME.samples/; without "sample_every" the
 * samples come at the last step. */
static int sample_prompts(vkl_server *s, const cJSON *body, const char *name, train_job *j, int write, vkl_err *e)
{
    const char *text = NULL;
    if (sj_str(body, "sample_prompt", 16384, &text, e)) return -1;
    if (!text) return 0;
    j->nprompts = count_prompts(text);
    if (!j->nprompts) return vkl_fail(e, "'sample_prompt' has no prompt (one a line; # lines are comments)");
    if (j->nprompts > 16) return vkl_fail(e, "'sample_prompt' has %d prompts: at most 16", j->nprompts);
    vkl_train_config *c = &j->cfg;
    if (!c->sample_every) {
        if (c->max_steps <= 0) return vkl_fail(e, "'sample_prompt' without 'max_steps' needs 'sample_every'");
        c->sample_every = c->max_steps;
    }
    if (!write) return 0;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s.samples", s->lora_dir, name);
    snprintf(j->prompts_file, sizeof j->prompts_file, "%s/prompts.txt", dir);
    if (vkl_mkdir_p(dir)) return vkl_fail(e, "cannot make %s: %s", dir, strerror(errno));
    FILE *f = fopen(j->prompts_file, "w");
    int bad = !f || fputs(text, f) < 0;
    if (f && fclose(f)) bad = 1;
    if (bad) return vkl_fail(e, "cannot write %s: %s", j->prompts_file, strerror(errno));
    c->sample_prompts = j->prompts_file;
    return 0;
}

static int build_config(vkl_server *s, const cJSON *body, train_job *j, vkl_err *e)
{
    vkl_train_config *c = &j->cfg;
    vkl_train_config_default(c);
    c->model = s->model_path;
    c->tokenizer = s->tokenizer;
    c->model_config = s->model_config;
    c->quiet = 1;
    const char *images = NULL, *name = NULL;
    if (sj_str(body, "images", 4096, &images, e) || sj_str(body, "name", 100, &name, e)) return -1;
    const cJSON *uploads = cJSON_GetObjectItemCaseSensitive(body, "uploads");
    if (!images && !uploads)
        return vkl_fail(e, "'images' (a folder inside the server's --data-root) or 'uploads' (a list of images) is required");
    if (images && uploads) return vkl_fail(e, "give 'images' or 'uploads', not both");
    if (!name) return vkl_fail(e, "'name' is required: the adapter's name in --lora-dir");
    if (!name[0] || name[0] == '.' || strpbrk(name, "/\\:<>"))
        return vkl_fail(e, "'name' \"%s\": a file name without folders, ':' or '<>', not starting with '.'", name);
    struct stat st;
    snprintf(j->output, sizeof j->output, "%s/%s.safetensors", s->lora_dir, name);
    if (!stat(j->output, &st)) return vkl_fail(e, "'name' \"%s\": %s exists already", name, j->output);
    /* the settings are checked before any upload is written */
    if (set_options(c, body, e) || sample_prompts(s, body, name, j, 0, e)) return -1;
    char uploaded[512];
    if (uploads) {
        if (serve_train_uploads(s, uploads, name, uploaded, sizeof uploaded, e)) return -1;
        images = uploaded;
    }
    /* the folder, resolved, must lie inside the data root */
    char joined[PATH_MAX * 2], root[PATH_MAX];
    snprintf(joined, sizeof joined, "%s/%s", s->data_root, images);
    if (!realpath(s->data_root, root)) return vkl_fail(e, "the server's --data-root cannot be read");
    if (images[0] == '/' || !realpath(joined, j->images))
        return vkl_fail(e, "'images' \"%s\" is not a folder inside --data-root", images);
    size_t rl = strlen(root);
    if (strncmp(j->images, root, rl) || (j->images[rl] != '/' && j->images[rl] != 0))
        return vkl_fail(e, "'images' \"%s\" lies outside --data-root", images);
    if (stat(j->images, &st) || !S_ISDIR(st.st_mode)) return vkl_fail(e, "'images' \"%s\" is not a folder", images);
    c->data.images_dir = j->images;
    if (sample_prompts(s, body, name, j, 1, e)) return -1;
    snprintf(j->name, sizeof j->name, "%s", name);
    c->output = j->output;
    return 0;
}

/* After a step: its loss for GET, and the GETs waiting for it woken. */
static void record_step(train_job *j, const vkl_train_report *r)
{
    serve_queue *q = &j->s->q;
    pthread_mutex_lock(&q->mu);
    j->step = r->step;
    j->total = r->total;
    if (j->nloss < MAX_LOSSES && j->loss) j->loss[j->nloss++] = r->loss;
    q->step = r->step;
    q->steps = r->total;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* After a sampling step: its images are on disk, listed for GET. */
static void record_samples(train_job *j, int step)
{
    serve_queue *q = &j->s->q;
    pthread_mutex_lock(&q->mu);
    if (j->nsample_steps < MAX_SAMPLE_RUNS) j->sample_steps[j->nsample_steps++] = step;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

/* A DELETE, or the server stopping. */
static int stop_asked(train_job *j)
{
    pthread_mutex_lock(&j->s->q.mu);
    int stop = j->stop_asked || j->job.interrupted;
    pthread_mutex_unlock(&j->s->q.mu);
    return stop;
}

/* The job's training, a step at a time (vkl_train_run's loop): between
 * steps the generation requests that came during one run (the device is
 * idle then), and a stop ends it at the step's end with the state saved.
 * Returns 0 done, 1 stopped (state saved), 2 nothing to do, -1 (e set). */
static int run_training(train_job *j, vkl_err *e)
{
    vkl_server *s = j->s;
    vkl_trainer *t;
    int rc = vkl_trainer_open(s->ctx, &j->cfg, &t, e);
    if (rc) return rc;
    int step, total;
    vkl_trainer_position(t, &step, &total);
    pthread_mutex_lock(&s->q.mu);
    /* the job's length is known (GET, /sdapi/v1/progress) before its first step ends */
    j->step = s->q.step = step;
    j->total = s->q.steps = total;
    pthread_mutex_unlock(&s->q.mu);
    int stop = stop_asked(j);
    rc = -1;
    while (step < total && !stop) {
        vkl_train_report r;
        if (vkl_trainer_step(t, &r, e)) goto done;
        record_step(j, &r);
        if ((r.save_due && vkl_trainer_checkpoint(t, e)) || (r.sample_due && vkl_trainer_sample(t, e))) goto done;
        if (r.sample_due) record_samples(j, r.step);
        serve_queue_yield(&s->q, &j->job);
        stop = stop_asked(j);
        vkl_trainer_position(t, &step, &total);
    }
    if (stop) {
        if (vkl_trainer_checkpoint(t, e)) goto done;
        vkl_fail(e, "stopped at step %d; the state is in %s", step, vkl_trainer_state_dir(t));
        rc = 1;
    } else {
        rc = vkl_trainer_finish(t, e) ? -1 : 0;
    }
done:
    vkl_trainer_close(t);
    return rc;
}

static void *train_thread(void *p)
{
    train_job *j = p;
    vkl_server *s = j->s;
    vkl_err e = {{0}};
    j->job.fd = -1;
    j->job.kind = "train";
    int entered = !serve_queue_enter(&s->q, &j->job);
    pthread_mutex_lock(&s->q.mu);
    int stop_first = j->stop_asked;
    if (entered && !stop_first) snprintf(j->state, sizeof j->state, "running");
    pthread_mutex_unlock(&s->q.mu);
    int rc = -1;
    if (!entered) vkl_fail(&e, "the server is stopping");
    else if (stop_first) rc = 1, vkl_fail(&e, "stopped before it started");
    else rc = run_training(j, &e);
    if (entered) {
        serve_queue_leave(&s->q, &j->job);
        serve_device_check(s);
    }
    pthread_mutex_lock(&s->q.mu);
    snprintf(j->state, sizeof j->state, "%s", rc == 0 || rc == 2 ? "done" : rc == 1 ? "stopped" : "failed");
    if (rc != 0 && rc != 2) snprintf(j->error, sizeof j->error, "%s", e.msg);
    pthread_cond_broadcast(&s->q.cv);
    pthread_mutex_unlock(&s->q.mu);
    return NULL;
}

static cJSON *job_json(vkl_server *s, train_job *j)
{
    cJSON *o = cJSON_CreateObject(), *l = cJSON_CreateArray();
    cJSON_AddNumberToObject(o, "id", j->id);
    cJSON_AddStringToObject(o, "name", j->name);
    cJSON_AddStringToObject(o, "state", j->state);
    /* place in the device queue: 0 running, 1 next, ...; -1 not queued */
    int pos = -1, k = 0;
    for (serve_job *it = s->q.head; it; it = it->next, k++)
        if (it == &j->job) pos = k;
    cJSON_AddNumberToObject(o, "queue_position", pos);
    cJSON_AddNumberToObject(o, "step", j->step);
    cJSON_AddNumberToObject(o, "total", j->total);
    for (int i = 0; i < j->nloss; i++) cJSON_AddItemToArray(l, cJSON_CreateNumber(j->loss[i]));
    cJSON_AddItemToObject(o, "loss", l);
    cJSON *samples = cJSON_AddArrayToObject(o, "samples");
    for (int i = 0; i < j->nsample_steps; i++)
        for (int k = 0; k < j->nprompts; k++) {
            cJSON *it = cJSON_CreateObject();
            char url[128];
            snprintf(url, sizeof url, "/vklora/v1/train/%d/samples/step%06d-%d.png", j->id, j->sample_steps[i], k);
            cJSON_AddNumberToObject(it, "step", j->sample_steps[i]);
            cJSON_AddNumberToObject(it, "index", k);
            cJSON_AddStringToObject(it, "url", url);
            cJSON_AddItemToArray(samples, it);
        }
    if (j->error[0]) cJSON_AddStringToObject(o, "error", j->error);
    else cJSON_AddNullToObject(o, "error");
    cJSON_AddStringToObject(o, "adapter", j->output);
    return o;
}

int serve_train_start(vkl_server *s, const serve_req *q, serve_resp *r)
{
    if (!s->data_root || !s->lora_dir)
        return serve_error(r, 404, "Not Found", "training needs the server started with --data-root and --lora-dir");
    cJSON *body = serve_parse_object(q, r);
    if (!body) return 0;
    train_job *j = calloc(1, sizeof *j);
    vkl_err e = {{0}};
    if (!j || !(j->loss = malloc(sizeof(float) * MAX_LOSSES))) {
        if (j) free(j);
        cJSON_Delete(body);
        return serve_error(r, 500, "Internal Server Error", "out of host memory");
    }
    j->s = s;
    j->settings = body;
    if (build_config(s, body, j, &e)) {
        serve_error(r, strstr(e.msg, "exists already") ? 409 : 422,
                    strstr(e.msg, "exists already") ? "Conflict" : "Unprocessable Entity", "%s", e.msg);
        free(j->loss);
        free(j);
        cJSON_Delete(body);
        return 0;
    }
    pthread_mutex_lock(&s->q.mu);
    int full = njobs == MAX_JOBS;
    if (!full) {
        j->id = njobs + 1;
        jobs[njobs++] = j;
        snprintf(j->state, sizeof j->state, "queued");
    }
    pthread_mutex_unlock(&s->q.mu);
    if (full) {
        free(j->loss);
        free(j);
        cJSON_Delete(body);
        return serve_error(r, 429, "Too Many Requests", "this server has run %d training jobs; restart it for more",
                           MAX_JOBS);
    }
    int bad = pthread_create(&j->thread, NULL, train_thread, j);
    j->started = !bad;
    if (bad) {
        pthread_mutex_lock(&s->q.mu);
        snprintf(j->state, sizeof j->state, "failed");
        snprintf(j->error, sizeof j->error, "cannot start a thread");
        pthread_mutex_unlock(&s->q.mu);
    }
    pthread_mutex_lock(&s->q.mu);
    cJSON *o = job_json(s, j);
    pthread_mutex_unlock(&s->q.mu);
    serve_json(r, o);
    r->status = 202;
    return 0;
}

/* GET /vklora/v1/train/ID/samples/stepNNNNNN-I.png: a sample image the job
 * has listed (so only whole files, and only its own, are read). */
static int sample_file(vkl_server *s, const serve_req *q, long id, const char *rest, serve_resp *r)
{
    int step = -1, idx = -1, used = 0;
    char again[64];
    if (sscanf(rest, "/samples/step%d-%d.png%n", &step, &idx, &used) != 2 || rest[used] || step < 0 || idx < 0 ||
        (snprintf(again, sizeof again, "/samples/step%06d-%d.png", step, idx), strcmp(again, rest)))
        return serve_error(r, 404, "Not Found", "%s: not a sample of a training job", q->url);
    char path[4400];
    int listed = 0;
    pthread_mutex_lock(&s->q.mu);
    train_job *j = id <= njobs ? jobs[id - 1] : NULL;
    if (j) {
        for (int i = 0; i < j->nsample_steps; i++) listed |= j->sample_steps[i] == step;
        listed &= idx < j->nprompts;
        snprintf(path, sizeof path, "%s/%s.samples%s", s->lora_dir, j->name, again + strlen("/samples"));
    }
    pthread_mutex_unlock(&s->q.mu);
    if (!j || !listed) return serve_error(r, 404, "Not Found", "%s: no such sample (yet)", q->url);
    FILE *f = fopen(path, "rb");
    if (!f) return serve_error(r, 404, "Not Found", "%s: %s", path, strerror(errno));
    char *b = NULL;
    long n = -1;
    if (!fseek(f, 0, SEEK_END) && (n = ftell(f)) >= 0 && !fseek(f, 0, SEEK_SET) && (b = malloc((size_t)n + 1)) &&
        fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (!b) return serve_error(r, 500, "Internal Server Error", "cannot read %s", path);
    b[n] = 0;
    r->status = 200;
    r->body = b;
    r->len = (size_t)n;
    r->type = "image/png";
    return 0;
}

/* /vklora/v1/train/ID: GET the state, DELETE to stop; ID/samples/...: GET an image. */
int serve_train_job(vkl_server *s, const serve_req *q, serve_resp *r)
{
    const char *idtext = q->url + strlen("/vklora/v1/train/");
    char *end;
    long id = strtol(idtext, &end, 10);
    if (*idtext && id >= 1 && !strncmp(end, "/samples/", 9)) {
        if (strcmp(q->method, "GET") && strcmp(q->method, "HEAD"))
            return serve_error(r, 405, "Method Not Allowed", "%s %s: this path takes GET", q->method, q->url);
        return sample_file(s, q, id, end, r);
    }
    if (!*idtext || *end || id < 1) return serve_error(r, 404, "Not Found", "%s: no such training job", q->url);
    /* ?after=N: wait (up to 20 s) until the job has more than N losses, new
     * samples or has ended, so a page follows the steps without polling */
    const char *after_text = serve_query(q, "after");
    long after = -1;
    if (after_text) {
        after = strtol(after_text, &end, 10);
        if (!*after_text || *end || after < 0)
            return serve_error(r, 422, "Unprocessable Entity", "'after' must be a step count, not \"%s\"", after_text);
    }
    pthread_mutex_lock(&s->q.mu);
    train_job *j = id <= njobs ? jobs[id - 1] : NULL;
    if (j && !strcmp(q->method, "DELETE")) {
        j->stop_asked = 1;
        j->job.interrupted = 1;
    } else if (j && after >= 0) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20;
        int sampled = j->nsample_steps;
        while (j->nloss <= after && j->nsample_steps == sampled && (!strcmp(j->state, "queued") || !strcmp(j->state, "running")) &&
               !s->q.stopping && !serve_client_gone(q->fd))
            if (pthread_cond_timedwait(&s->q.cv, &s->q.mu, &until)) break;
    }
    cJSON *o = j ? job_json(s, j) : NULL;
    pthread_mutex_unlock(&s->q.mu);
    if (!j) return serve_error(r, 404, "Not Found", "%s: no such training job", q->url);
    return serve_json(r, o);
}

void serve_train_free_all(void)
{
    for (int i = 0; i < njobs; i++) {
        if (jobs[i]->started) pthread_join(jobs[i]->thread, NULL);
        free(jobs[i]->loss);
        cJSON_Delete(jobs[i]->settings);
        free(jobs[i]);
    }
    njobs = 0;
}
