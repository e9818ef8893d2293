/* The state of a VAE training run (vae_trainer_internal.h): saved whole at
 * a step, found again, and restored for --resume. */
#include "train/vae_trainer_internal.h"

#include "io/dir.h"
#include "io/text.h"
#include "sd/vae_folder.h"
#include "train/train_resume.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The state's files into dir: the weights as a VAE folder of their own
 * (f32, exact), the moments, the position in the data. */
static int write_state(void *user, const char *dir, vkl_err *e)
{
    vkl_vae_trainer *t = user;
    char path[1300];
    if (vkl_vae_folder_save(t->ctx, dir, &t->cfg, t->w, VKL_F32, e)) return -1;
    snprintf(path, sizeof path, "%.1200s/optimizer.safetensors", dir);
    if (vkl_adamw_state_save(t->opt, t->ctx, t->np, path, e)) return -1;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "vklora-vae-train-state");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", t->step);
    cJSON_AddNumberToObject(j, "seconds", vkl_vae_trainer_seconds(t));
    cJSON_AddNumberToObject(j, "params", t->np);
    cJSON_AddNumberToObject(j, "size", t->c->size);
    cJSON_AddNumberToObject(j, "batch", t->c->batch);
    cJSON_AddStringToObject(j, "loss", vkl_vae_loss_name(t->c->loss));
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->c->seed);
    cJSON_AddStringToObject(j, "seed", seed);
    return vkl_train_state_json_save(dir, j, &t->it, e);
}

int vkl_vae_state_save(vkl_vae_trainer *t, vkl_err *e)
{
    return vkl_train_state_commit(t->state_dir, t->step, write_state, t, e);
}

int vkl_vae_state_latest(const vkl_vae_trainer *t, char *dir, size_t n)
{
    char path[1200], name[64] = "";
    snprintf(path, sizeof path, "%.1100s/latest", t->state_dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    if (!fgets(name, sizeof name, f)) name[0] = 0;
    fclose(f);
    name[strcspn(name, "\n")] = 0;
    if (!name[0] || strchr(name, '/')) return -1;
    snprintf(dir, n, "%.1100s/%.60s", t->state_dir, name);
    return 0;
}

/* state.json of dir: step, seconds and the data iterator; checks that the
 * run is the same one (image size, batch, seed, loss). */
static int load_state_json(vkl_vae_trainer *t, const char *dir, vkl_err *e)
{
    char path[1300];
    snprintf(path, sizeof path, "%.1200s/state.json", dir);
    char *text = NULL;
    if (vkl_read_text_file(path, 1 << 20, &text, NULL, e)) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    const cJSON *fmt = cJSON_GetObjectItem(j, "format"), *st = cJSON_GetObjectItem(j, "step");
    const cJSON *np = cJSON_GetObjectItem(j, "params"), *data = cJSON_GetObjectItem(j, "data");
    const cJSON *sz = cJSON_GetObjectItem(j, "size"), *bt = cJSON_GetObjectItem(j, "batch");
    const cJSON *ls = cJSON_GetObjectItem(j, "loss"), *sd = cJSON_GetObjectItem(j, "seed");
    const cJSON *sec = cJSON_GetObjectItem(j, "seconds");
    int rc = 0;
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)t->c->seed);
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "vklora-vae-train-state") || !cJSON_IsNumber(st) ||
        !cJSON_IsNumber(np) || !cJSON_IsObject(data) || !cJSON_IsNumber(sz) || !cJSON_IsNumber(bt) ||
        !cJSON_IsString(ls) || !cJSON_IsString(sd))
        rc = vkl_fail(e, "%s is not a vklora VAE training state", path);
    else if (np->valueint != t->np)
        rc = vkl_fail(e, "%s holds %d tensors, this VAE has %d", path, np->valueint, t->np);
    else if (sz->valueint != t->c->size || bt->valueint != t->c->batch || strcmp(ls->valuestring, vkl_vae_loss_name(t->c->loss)) ||
             strcmp(sd->valuestring, seed))
        rc = vkl_fail(e, "%s was saved with --size %d --batch %d --loss %s --seed %s; resume with the same values "
                         "(this run has --size %d --batch %d --loss %s --seed %s)",
                      path, sz->valueint, bt->valueint, ls->valuestring, sd->valuestring, t->c->size, t->c->batch,
                      vkl_vae_loss_name(t->c->loss), seed);
    if (!rc) {
        t->step = st->valueint;
        t->seconds0 = cJSON_IsNumber(sec) ? sec->valuedouble : 0;
        char *dj = cJSON_PrintUnformatted(data);
        rc = dj ? vkl_ds_iter_restore(&t->it, dj, e) : vkl_fail(e, "out of host memory");
        free(dj);
        if (rc) vkl_err_prefix(e, "%s: ", path);
    }
    cJSON_Delete(j);
    return rc;
}

int vkl_vae_state_load(vkl_vae_trainer *t, const char *dir, vkl_err *e)
{
    if (load_state_json(t, dir, e)) return -1;
    char path[1300];
    snprintf(path, sizeof path, "%.1200s/optimizer.safetensors", dir);
    return vkl_adamw_state_load(t->opt, t->ctx, t->np, path, e);
}
