/* The SD trainer's files: the adapter with kohya's ss_* metadata, the state
 * folder a resume reads (adapter, optimiser moments, data position,
 * settings), and the sample images of --sample-prompts. */
#include "train/sd_trainer_internal.h"
#include "io/text.h"

#include "io/dir.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "lora/lora_apply.h"
#include "sd/pipeline.h"
#include "sd/sd_folder_write.h"
#include "train/train_resume.h"

#include <stdlib.h>
#include <string.h>

/* Copies the trained tensors back into the in-memory adapter. */
static int pull_adapter(trainer *t, vkl_err *e)
{
    for (int i = 0; i < vkl_lora_set_count(t->set); i++) {
        const vkl_lora_slot *slot = vkl_lora_set_at(t->set, i);
        vkl_lora_module *m = (vkl_lora_module *)vkl_lora_find(&t->lora, slot->module);
        if (!m) return vkl_fail(e, "the network has no module %s", slot->module);
        if (vkl_lora_slot_download(t->ctx, slot, m, e)) return -1;
    }
    return 0;
}

/* Stability AI's ModelSpec keys, as kohya's sai_model_spec writes them for a
 * LoRA, which A1111/Forge and ComfyUI read for the adapter's base model.
 * modelspec.date is left out: the adapter of a resumed run is byte for byte
 * the uninterrupted run's, which a wall-clock date would break. */
static int set_modelspec(trainer *t, int v_pred, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    vkl_lora *l = &t->lora;
    char buf[1200];
    const char *arch = t->xl ? "stable-diffusion-xl-v1-base/lora"
                       : t->m->cfg->family == VKL_SD_FAMILY_SD2
                           ? (v_pred ? "stable-diffusion-v2-768-v/lora" : "stable-diffusion-v2-512/lora")
                           : "stable-diffusion-v1/lora";
    /* kohya: an SDXL LoRA is in Stability's (SGM) layout, the others in diffusers' terms */
    const char *impl = t->xl ? "https://github.com/Stability-AI/generative-models" : "diffusers";
    const char *slash = strrchr(t->stem, '/');
    if (vkl_lora_meta_set(l, "modelspec.sai_model_spec", "1.0.1", e) ||
        vkl_lora_meta_set(l, "modelspec.architecture", arch, e) ||
        vkl_lora_meta_set(l, "modelspec.implementation", impl, e) ||
        vkl_lora_meta_set(l, "modelspec.title", slash ? slash + 1 : t->stem, e) ||
        vkl_lora_meta_set(l, "modelspec.prediction_type", v_pred ? "v" : "epsilon", e))
        return -1;
    snprintf(buf, sizeof buf, "%dx%d", c->data.resolution, c->data.resolution);
    if (vkl_lora_meta_set(l, "modelspec.resolution", buf, e)) return -1;
    if (c->clip_skip > 1) {
        snprintf(buf, sizeof buf, "%d", c->clip_skip);
        if (vkl_lora_meta_set(l, "modelspec.encoder_layer", buf, e)) return -1;
    }
    return 0;
}

static int set_meta(trainer *t, int step, int epoch, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    char buf[64];
    vkl_lora *l = &t->lora;
#define M(k, v) if (vkl_lora_meta_set(l, k, v, e)) return -1
    int lyco = c->network_kind != VKL_LORA_KIND_LORA;
    M("ss_network_module", lyco ? "lycoris.kohya" : c->dylora ? VKL_DYLORA_MODULE : "networks.lora");
    snprintf(buf, sizeof buf, "%d", c->rank);
    M("ss_network_dim", buf);
    snprintf(buf, sizeof buf, "%g", c->alpha);
    M("ss_network_alpha", buf);
    if (c->dylora) {
        /* kohya's DyLoRA arguments: unit, and conv_dim (= network_dim) when 3x3 convolutions are trained */
        char args[128];
        if (c->network_conv)
            snprintf(args, sizeof args, "{\"unit\": \"%d\", \"conv_dim\": \"%d\", \"conv_alpha\": \"%g\"}",
                     c->dylora_unit, c->rank, c->alpha);
        else snprintf(args, sizeof args, "{\"unit\": \"%d\"}", c->dylora_unit);
        M("ss_network_args", args);
    } else if (lyco || c->network_conv) {
        /* kohya writes network_args as a JSON object of strings; LyCORIS reads
         * algo, conv_dim/conv_alpha (0: no conv modules), factor, dora_wd */
        char args[256] = "{", item[96];
        if (lyco) {
            const char *algo = c->network_kind == VKL_LORA_KIND_DORA ? (c->network_conv ? "locon" : "lora")
                                                                     : vkl_lora_kind_name(c->network_kind);
            snprintf(item, sizeof item, "\"algo\": \"%s\", ", algo);
            strcat(args, item);
        }
        snprintf(item, sizeof item, "\"conv_dim\": \"%d\", \"conv_alpha\": \"%g\"", c->network_conv ? c->rank : 0,
                 c->network_conv ? c->alpha : 0.0f);
        strcat(args, item);
        if (c->network_kind == VKL_LORA_KIND_LOKR) {
            snprintf(item, sizeof item, ", \"factor\": \"%d\"", c->lokr_factor);
            strcat(args, item);
        }
        if (c->network_kind == VKL_LORA_KIND_DORA) strcat(args, ", \"dora_wd\": \"True\"");
        strcat(args, "}");
        M("ss_network_args", args);
    }
    M("ss_sd_model_name", t->model_name);
    M("ss_sd_model_hash", t->base_hash);
    M("ss_v2", t->m->cfg->family == VKL_SD_FAMILY_SD2 ? "True" : "False");
    /* kohya: sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0, else
     * model_util.get_model_version_str_for_sd1_sd2 */
    int v_pred = t->m->cfg->sched.prediction == VKL_SD_PRED_V;
    M("ss_base_model_version", t->xl ? "sdxl_base_v1-0"
                               : t->m->cfg->family == VKL_SD_FAMILY_SD2 ? (v_pred ? "sd_v2_v" : "sd_v2")
                                                                        : (v_pred ? "sd_v1_v" : "sd_v1"));
    snprintf(buf, sizeof buf, "(%d, %d)", c->data.resolution, c->data.resolution);
    M("ss_resolution", buf);
    snprintf(buf, sizeof buf, "%d", t->total);
    M("ss_max_train_steps", buf);
    if (set_modelspec(t, v_pred, e)) return -1;
    snprintf(buf, sizeof buf, "%d", step);
    M("ss_steps", buf);
    /* kohya's ss_epoch counts finished epochs, not the one in progress */
    (void)epoch;
    snprintf(buf, sizeof buf, "%d", t->epochs_done);
    M("ss_epoch", buf);
    snprintf(buf, sizeof buf, "%g", c->lr);
    M("ss_learning_rate", buf);
    M("ss_unet_lr", buf);
    M("ss_network_train_unet_only", c->train_te ? "False" : "True");
    if (c->train_te) {
        snprintf(buf, sizeof buf, "%g", c->te_lr >= 0 ? c->te_lr : c->lr);
        M("ss_text_encoder_lr", buf);
    }
    snprintf(buf, sizeof buf, "%d", c->grad_accum);
    M("ss_gradient_accumulation_steps", buf);
    /* kohya writes str() of each argument: Python's True/False */
    M("ss_gradient_checkpointing", c->checkpointing ? "True" : "False");
    M("ss_mixed_precision", c->mixed_precision ? "fp16" : "no");
    M("ss_cache_latents", "True"); /* latents are always encoded once */
    snprintf(buf, sizeof buf, "%d", c->warmup);
    M("ss_lr_warmup_steps", buf);
    snprintf(buf, sizeof buf, "%g", c->max_grad_norm);
    M("ss_max_grad_norm", buf);
    snprintf(buf, sizeof buf, "%d", c->clip_skip);
    M("ss_clip_skip", buf);
    M("ss_lr_scheduler", c->lr_schedule);
    snprintf(buf, sizeof buf, "%d", c->data.batch_size);
    M("ss_batch_size_per_device", buf);
    snprintf(buf, sizeof buf, "%d", t->ds->nimages);
    M("ss_num_train_images", buf);
    snprintf(buf, sizeof buf, "%g", c->min_snr_gamma);
    if (c->min_snr_gamma > 0) M("ss_min_snr_gamma", buf);
    snprintf(buf, sizeof buf, "%g", c->noise_offset);
    M("ss_noise_offset", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c->data.seed);
    M("ss_seed", buf);
    /* kohya writes the optimizer's module.class */
    M("ss_optimizer", c->optim_bits == 8 ? "bitsandbytes.optim.adamw.AdamW8bit" : "AdamW");
    M("ss_training_comment", "trained with vklora");
    const vkl_dataset_opts *dso = &t->ds->opts;
    M("ss_enable_bucket", dso->bucket ? "True" : "False");
    M("ss_bucket_no_upscale", dso->bucket_no_upscale ? "True" : "False");
    snprintf(buf, sizeof buf, "%d", dso->min_bucket);
    M("ss_min_bucket_reso", buf);
    snprintf(buf, sizeof buf, "%d", dso->max_bucket);
    M("ss_max_bucket_reso", buf);
    char *tf = vkl_dataset_tag_frequency_json(t->ds), *dd = vkl_dataset_dirs_json(t->ds);
    char *bi = vkl_dataset_bucket_info_json(t->ds);
    int bad = (tf && vkl_lora_meta_set(l, "ss_tag_frequency", tf, e)) || (dd && vkl_lora_meta_set(l, "ss_dataset_dirs", dd, e)) ||
              (bi && vkl_lora_meta_set(l, "ss_bucket_info", bi, e));
    free(tf);
    free(dd);
    free(bi);
#undef M
    return bad ? -1 : 0;
}

static int save_adapter(trainer *t, const char *path, int step, int epoch, vkl_err *e)
{
    if (pull_adapter(t, e) || set_meta(t, step, epoch, e)) return -1;
    return vkl_lora_save_kohya(&t->lora, path, e);
}

/* What a run produces: the adapter, or (full training) the model folder with
 * the trained parts (their weights' average when there is one). */
int vkl_sd_trainer_save_output(trainer *t, const char *path, int step, int epoch, vkl_err *e)
{
    if (!t->c->full) return save_adapter(t, path, step, epoch, e);
    static const char *const parts[] = {"unet", "text_encoder", "text_encoder_2"};
    int nparts = !t->c->train_te ? 1 : t->xl ? 3 : 2;
    /* every weight of the written parts: the trained ones (or their average),
     * and the ones that do not reach the loss (encoder layers after the one
     * the UNet reads) as loaded */
    int nw = vkl_weights_count(t->m->w);
    const char **names = calloc((size_t)nw + 1, sizeof *names);
    vkl_tensor **ts = calloc((size_t)nw + 1, sizeof *ts);
    if (!names || !ts) {
        free(names);
        free(ts);
        return vkl_fail(e, "out of host memory");
    }
    vkl_tensor *const *out = vkl_full_net_output(&t->net);
    for (int i = 0; i < nw; i++) {
        ts[i] = vkl_weights_at(t->m->w, i, &names[i]);
        for (int k = 0; k < t->net.n; k++)
            if (t->net.params[k] == ts[i]) ts[i] = out[k];
    }
    int rc = vkl_sd_write_trained_folder(t->ctx, t->c->model, names, ts, nw, parts, nparts, path, t->c->save_dtype, 1, e);
    free(names);
    free(ts);
    return rc;
}

/* Output path without its .safetensors extension, for the files written beside it. */
void vkl_sd_trainer_stem(const char *output, char *stem, size_t n)
{
    snprintf(stem, n, "%s", output);
    size_t len = strlen(stem);
    if (len > 12 && !strcmp(stem + len - 12, ".safetensors")) stem[len - 12] = 0;
}

/* The state of step `step` (adapter.safetensors, or the full network's
 * weights and EMA; optimizer.safetensors; state.json) goes into
 * base/step-NNNNNN/, whole or not at all
 * (vkl_train_state_commit); base/latest names it once it is complete, so a
 * kill or a full disk at any moment leaves `latest` naming a whole state. */
static int save_state_files(trainer *t, const char *dir, int step, int epoch, const vkl_ds_iter *it, vkl_err *e);

typedef struct state_job {
    trainer *t;
    int step, epoch;
    const vkl_ds_iter *it;
} state_job;

static int write_state(void *user, const char *dir, vkl_err *e)
{
    state_job *j = user;
    return save_state_files(j->t, dir, j->step, j->epoch, j->it, e);
}

int vkl_sd_trainer_save_state(trainer *t, const char *base, int step, int epoch, const vkl_ds_iter *it, vkl_err *e)
{
    state_job j = {t, step, epoch, it};
    return vkl_train_state_commit(base, step, write_state, &j, e);
}

static int save_state_files(trainer *t, const char *dir, int step, int epoch, const vkl_ds_iter *it, vkl_err *e)
{
    char path[1400];
    snprintf(path, sizeof path, "%.1200s/adapter.safetensors", dir);
    if (t->c->full ? vkl_full_net_save_state(&t->net, dir, e) : save_adapter(t, path, step, epoch, e)) return -1;
    /* per parameter i: m.i and v.i (f32 moments) or codes.i and absmax.i
     * (8-bit state), each in its own dtype, so a resume restores them exactly */
    snprintf(path, sizeof path, "%.1200s/optimizer.safetensors", dir);
    if (vkl_adamw_state_save(t->opt, t->ctx, t->np, path, e)) return -1;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "format", "vklora-train-state");
    cJSON_AddNumberToObject(j, "version", 1);
    cJSON_AddNumberToObject(j, "step", step);
    cJSON_AddNumberToObject(j, "epoch", epoch);
    cJSON_AddNumberToObject(j, "params", t->np);
    cJSON_AddNumberToObject(j, "grad_accum", t->c->grad_accum);
    cJSON_AddNumberToObject(j, "ranks", vkl_sd_trainer_ranks(t->c));
    cJSON_AddStringToObject(j, "optimizer", vkl_train_optimizer_name(t->c));
    cJSON_AddNumberToObject(j, "seconds", t->elapsed);
    char *settings = vkl_train_config_json(t->c, NULL);
    cJSON_AddItemToObject(j, "settings", settings ? cJSON_Parse(settings) : cJSON_CreateNull());
    free(settings);
    cJSON_AddItemToObject(j, "changes", cJSON_Duplicate(t->changes, 1));
    if (t->fp16) {
        cJSON_AddNumberToObject(j, "loss_scale", t->scaler.scale);
        cJSON_AddNumberToObject(j, "loss_scale_good_steps", t->scaler.good);
    }
    return vkl_train_state_json_save(dir, j, it, e);
}

int vkl_sd_trainer_load_state(trainer *t, const char *base, int *step, vkl_ds_iter *it, vkl_err *e)
{
    char path[1400], dirbuf[1400];
    const char *dir = base;
    snprintf(path, sizeof path, "%.1200s/latest", base);
    FILE *lf = fopen(path, "r");
    if (lf) {
        char name[64] = "";
        if (!fgets(name, sizeof name, lf)) name[0] = 0;
        fclose(lf);
        name[strcspn(name, "\n")] = 0;
        snprintf(dirbuf, sizeof dirbuf, "%.1200s/%.60s", base, name);
        dir = dirbuf;
    }
    snprintf(path, sizeof path, "%.1200s/state.json", dir);
    char *text = NULL;
    if (vkl_read_text_file(path, 1 << 20, &text, NULL, e)) return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *st = j ? cJSON_GetObjectItem(j, "step") : NULL, *np = j ? cJSON_GetObjectItem(j, "params") : NULL;
    cJSON *data = j ? cJSON_GetObjectItem(j, "data") : NULL;
    if (!cJSON_IsNumber(st) || !cJSON_IsNumber(np) || !cJSON_IsObject(data)) {
        cJSON_Delete(j);
        return vkl_fail(e, "%s is not a vklora training state", path);
    }
    /* the run's defining settings first: they explain a mismatch best */
    cJSON *saved_set = cJSON_GetObjectItem(j, "settings"), *changes = cJSON_GetObjectItem(j, "changes");
    cJSON_Delete(t->changes);
    t->changes = cJSON_IsArray(changes) ? cJSON_Duplicate(changes, 1) : cJSON_CreateArray();
    cJSON *ga = cJSON_GetObjectItem(j, "grad_accum"), *rk = cJSON_GetObjectItem(j, "ranks");
    int saved_accum = cJSON_IsNumber(ga) ? ga->valueint : 1, saved_ranks = cJSON_IsNumber(rk) ? rk->valueint : 1;
    int ranks = vkl_sd_trainer_ranks(t->c);
    if (saved_accum * saved_ranks != t->c->grad_accum * ranks) {
        cJSON_Delete(j);
        /* the micro-batches of a step and their noise depend on how many there are */
        return vkl_fail(e, "%s was saved with %d rank(s) x --grad-accum %d = %d micro-batches per step, this run has "
                        "%d x %d = %d (choose --grad-accum so that ranks x grad-accum = %d)", path, saved_ranks,
                        saved_accum, saved_accum * saved_ranks, ranks, t->c->grad_accum, t->c->grad_accum * ranks,
                        saved_accum * saved_ranks);
    }
    /* another split of the same global batch continues the same run */
    if (saved_ranks != ranks && cJSON_IsObject(saved_set) && cJSON_GetObjectItem(saved_set, "grad-accum")) {
        vkl_log(VKL_LOG_INFO, "resuming a %d-rank state on %d rank(s): --grad-accum %d here, %d there", saved_ranks,
                ranks, t->c->grad_accum, saved_accum);
        cJSON_ReplaceItemInObject(saved_set, "grad-accum", cJSON_CreateNumber(t->c->grad_accum));
    }
    if (cJSON_IsObject(saved_set)) {
        char *js = vkl_train_config_json(t->c, NULL);
        cJSON *now = js ? cJSON_Parse(js) : NULL;
        free(js);
        int bad = !now ? vkl_fail(e, "out of host memory") : vkl_train_check_resume(saved_set, now, st->valueint, t->changes, e);
        cJSON_Delete(now);
        if (bad) {
            cJSON_Delete(j);
            vkl_err_prefix(e, "%s: ", path);
            return -1;
        }
    } else {
        vkl_log(VKL_LOG_WARN, "%s records no settings (saved by an older vklora): they are not compared", path);
    }
    cJSON *secs = cJSON_GetObjectItem(j, "seconds");
    t->elapsed = cJSON_IsNumber(secs) ? secs->valuedouble : -1;
    if (np->valueint != t->np) {
        cJSON_Delete(j);
        return vkl_fail(e, "%s holds %d adapter tensors, this run trains %d (different rank or targets?)", path,
                        np->valueint, t->np);
    }
    /* states from before the 8-bit option hold f32 moments */
    cJSON *op = cJSON_GetObjectItem(j, "optimizer");
    const char *saved_opt = cJSON_IsString(op) ? op->valuestring : "adamw";
    if (strcmp(saved_opt, vkl_train_optimizer_name(t->c))) {
        vkl_fail(e, "%s was saved with --optimizer %.20s, this run has --optimizer %s (the optimiser state cannot "
                    "be carried over)", path, saved_opt, vkl_train_optimizer_name(t->c));
        cJSON_Delete(j);
        return -1;
    }
    *step = st->valueint;
    /* the loss scale continues where it was (a state saved without mixed
     * precision leaves the initial scale) */
    cJSON *ls = cJSON_GetObjectItem(j, "loss_scale"), *lg = cJSON_GetObjectItem(j, "loss_scale_good_steps");
    if (t->fp16 && cJSON_IsNumber(ls)) {
        if (!(ls->valuedouble >= t->scaler.min_scale && ls->valuedouble <= t->scaler.max_scale)) {
            cJSON_Delete(j);
            return vkl_fail(e, "%s: loss_scale %g is outside [%g, %g]", path, ls->valuedouble, t->scaler.min_scale,
                            t->scaler.max_scale);
        }
        t->scaler.scale = (float)ls->valuedouble;
        t->scaler.good = cJSON_IsNumber(lg) && lg->valueint >= 0 ? lg->valueint : 0;
    }
    char *dj = cJSON_PrintUnformatted(data);
    cJSON_Delete(j);
    int rc = vkl_ds_iter_restore(it, dj, e);
    free(dj);
    if (rc) return -1;
    /* adapter (or weights) and optimiser moments */
    if (t->c->full) {
        if (vkl_full_net_load_state(&t->net, dir, e)) return -1;
        goto moments;
    }
    vkl_lora saved;
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    if (vkl_lora_targets_from_sd(t->m->cfg, &tg, e)) return -1;
    vkl_lora_opts lo = {&tg, 0, NULL, 0};
    snprintf(path, sizeof path, "%.1200s/adapter.safetensors", dir);
    rc = vkl_lora_load(path, &lo, &saved, e);
    vkl_lora_targets_free(&tg);
    if (rc) return -1;
    for (int i = 0; i < vkl_lora_set_count(t->set) && !rc; i++) {
        const vkl_lora_slot *slot = vkl_lora_set_at(t->set, i);
        const vkl_lora_module *m = vkl_lora_find(&saved, slot->module), *mine = vkl_lora_find(&t->lora, slot->module);
        if (!m || !mine || m->kind != mine->kind)
            rc = vkl_fail(e, "%s does not match this run's network at %s (%s)", path, slot->module,
                          m ? vkl_lora_kind_name(m->kind) : "missing");
        else if (vkl_lora_slot_upload(t->ctx, slot, m, e)) {
            vkl_err_prefix(e, "%s does not match this run's network: ", path);
            rc = -1;
        }
    }
    vkl_lora_free(&saved);
    if (rc) return -1;
moments:
    snprintf(path, sizeof path, "%.1200s/optimizer.safetensors", dir);
    rc = vkl_adamw_state_load(t->opt, t->ctx, t->np, path, e);
    return rc ? -1 : 0;
}

int vkl_sd_trainer_render_samples(trainer *t, int step, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    char *text = NULL;
    if (vkl_read_text_file(c->sample_prompts, 1 << 20, &text, NULL, e)) return -1;
    char dir[1100];
    char stem[1100];
    vkl_sd_trainer_stem(c->output, stem, sizeof stem);
    snprintf(dir, sizeof dir, "%.1000s.samples", stem);
    if (vkl_mkdir_p(dir)) {
        free(text);
        return vkl_fail(e, "cannot create %s", dir);
    }
    int idx = 0, rc = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line && !rc; line = strtok_r(NULL, "\n", &save)) {
        while (*line == ' ' || *line == '\t') line++;
        if (!*line || *line == '#') continue;
        vkl_gen_opts o;
        vkl_gen_opts_default(&o);
        o.prompt = line;
        o.width = o.height = c->data.resolution;
        o.seed = c->data.seed + (uint64_t)idx;
        o.sampler.steps = c->sample_steps;
        vkl_gen_result r;
        rc = vkl_sd_generate(t->m, &o, &r, e);
        if (!rc) {
            vkl_image im;
            rc = vkl_image_alloc(&im, r.width, r.height, 3, VKL_PIX_U8, e);
            if (!rc) {
                size_t hw = (size_t)r.width * r.height;
                for (size_t i = 0; i < hw; i++)
                    for (int ch = 0; ch < 3; ch++) {
                        float v = r.images[ch * hw + i] * 0.5f + 0.5f;
                        vkl_image_u8(&im)[i * 3 + ch] = (uint8_t)((v < 0 ? 0 : v > 1 ? 1 : v) * 255.0f + 0.5f);
                    }
                char path[1300];
                snprintf(path, sizeof path, "%s/step%06d-%d.png", dir, step, idx);
                vkl_png_text pt = {"parameters", line};
                rc = vkl_png_write(path, &im, &pt, 1, e);
                vkl_image_free(&im);
            }
            vkl_gen_result_free(&r);
        }
        idx++;
    }
    free(text);
    return rc;
}
