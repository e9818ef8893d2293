/* The SD trainer (train/sd_trainer.h): the trainer object in parts (open,
 * step, checkpoint, sample, finish, close) and vkl_train_run, the loop over
 * them. The files it writes and reads are sd_trainer_files.c's. */
#include "train/sd_trainer_internal.h"
#include "quant.h"

#include "io/dir.h"
#include "lora/lora_apply.h"
#include "lora/lora_init.h"
#include "sd/pipeline.h"
#include "rng.h"
#include "train/train_resume.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* set from signal handlers through vkl_train_request_stop */
static volatile sig_atomic_t vkl_train_interrupt;

void vkl_train_request_stop(void)
{
    vkl_train_interrupt = 1;
}

int vkl_train_stop_requested(void)
{
    return vkl_train_interrupt != 0;
}

void vkl_train_stop_clear(void)
{
    vkl_train_interrupt = 0;
}

/* Noise and timesteps of a step come from (seed, step): streams of their own. */
enum { STREAM_NOISE = 0x7431, STREAM_TIME = 0x7432, STREAM_OFFSET = 0x7434 };

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- the network: which modules get adapters, initial values ---- */

typedef struct selection {
    const vkl_train_config *c;
    /* per text encoder: its layers below this index reach the loss (the
     * layers after the one the UNet reads train nothing; SDXL's second
     * encoder is read to its end by the pooled embedding) */
    int te_used[2];
} selection;

/* "text_model.encoder.layers.N." of an encoder module: N, else -1 */
static int encoder_layer(const char *name)
{
    const char *p = strstr(name, ".encoder.layers.");
    return p ? atoi(p + 16) : -1;
}

/* vkl_lora_select_fn: the layers the network trains (1x1 shortcut convs never). */
static int wanted(void *user, const char *name, int ndim, const int64_t *shape)
{
    const selection *sel = user;
    const vkl_train_config *c = sel->c;
    if (ndim == 4 && shape[2] == 1 && !strstr(name, "proj_")) return 0;
    /* kohya's text-encoder targets: CLIPAttention and CLIPMLP linears (SDXL: of both encoders) */
    int te2 = !strncmp(name, "text_encoder_2.", 15);
    if (!strncmp(name, "text_encoder.", 13) || te2)
        return c->train_te && encoder_layer(name) < sel->te_used[te2] &&
               (strstr(name, ".self_attn.q_proj") || strstr(name, ".self_attn.k_proj") ||
                               strstr(name, ".self_attn.v_proj") || strstr(name, ".self_attn.out_proj") ||
                               strstr(name, ".mlp.fc1") || strstr(name, ".mlp.fc2"));
    if (strncmp(name, "unet.", 5)) return 0;
    if (strstr(name, ".transformer_blocks.") &&
        (strstr(name, ".attn1.to_") || strstr(name, ".attn2.to_")))
        return 1;
    if (c->train_ff && (strstr(name, ".ff.net.0.proj") || strstr(name, ".ff.net.2") || strstr(name, ".proj_in") ||
                        strstr(name, ".proj_out")))
        return 1;
    if (c->network_conv && strstr(name, ".resnets.") && (strstr(name, ".conv1") || strstr(name, ".conv2"))) return 1;
    return 0;
}

static selection select_for(const vkl_train_config *c, const vkl_sd_model *sm)
{
    vkl_full_net_sd_rule r = vkl_full_net_sd_rule_for(sm->cfg, c->train_te, c->clip_skip);
    return (selection){c, {r.te_used[0], r.te_used[1]}};
}

/* kohya's LoRAModule / LyCORIS's module inits (lora/lora_init.h): every
 * kind's delta W starts at zero (DoRA: the magnitude is the base weight's
 * norm), so training starts from the base model. */
static int init_network(const vkl_train_config *c, const vkl_sd_model *sm, vkl_lora *l, vkl_err *e)
{
    vkl_lora_init_opts o = {c->network_kind, c->rank, c->alpha, c->lokr_factor, c->data.seed, 0};
    selection sel = select_for(c, sm);
    if (vkl_lora_init_sd_ex(sm->cfg, wanted, &sel, &o, l, e) ||
        (c->network_kind == VKL_LORA_KIND_DORA && vkl_lora_init_dora_magnitude(sm->ctx, sm->w, l, e))) {
        vkl_err_prefix(e, "the network: ");
        return -1;
    }
    return 0;
}

/* LoRA+ speeds up the factor that starts at zero (LoRA's B). */
static int up_like(vkl_lora_role r)
{
    return r == VKL_LORA_UP || r == VKL_LORA_HADA_W2A || r == VKL_LORA_LOKR_W2 || r == VKL_LORA_LOKR_W2B;
}


/* ---- data to tensors ---- */

static int encode_cb(void *user, const float *chw, int w, int h, float *latents, vkl_err *e)
{
    trainer *t = user;
    return vkl_sd_encode_image(t->m, chw, 1, h, w, latents, e);
}

/* Token ids [n, T] for n captions: 77-token rows (75 tokens at most, as
 * kohya's default max_token_length) cut to the encoder's T positions
 * (vkl_sd_text_tokens). */
static int tokenize_captions(trainer *t, char **caps, int n, int32_t *ids, vkl_err *e)
{
    int T = vkl_sd_text_tokens(t->m);
    int32_t row[VKL_CLIP_CONTEXT];
    for (int i = 0; i < n; i++) {
        if (vkl_clip_encode_padded(t->m->tok, caps[i], 0, row, NULL, e)) return -1;
        memcpy(ids + (size_t)T * i, row, sizeof *row * (size_t)T);
    }
    return 0;
}

/* Text states [n, T, D] from the frozen encoder, outside the training graph. */
static int encode_captions(trainer *t, char **caps, int n, float *out, vkl_err *e)
{
    int32_t *ids = malloc(sizeof(int32_t) * 77 * (size_t)n);
    if (!ids) return vkl_fail(e, "out of host memory");
    if (tokenize_captions(t, caps, n, ids, e)) {
        free(ids);
        return -1;
    }
    int rc = -1;
    vkl_tensor *ti = vkl_tensor_new(t->ctx, VKL_I32, 2, (int64_t[]){n, vkl_sd_text_tokens(t->m)}, e);
    vkl_graph *g = vkl_graph_new(t->ctx);
    if (!ti || vkl_tensor_upload(t->ctx, ti, ids, VKL_I32, e)) goto done;
    vkl_tensor *y = vkl_clip_text_forward(g, &t->m->te, ti, t->c->clip_skip > 1 ? t->c->clip_skip - 1 : 0, 1, NULL);
    vkl_graph_keep(g, y);
    if (vkl_graph_plan(g, e) || vkl_graph_run(g, e) || vkl_tensor_download(t->ctx, y, out, VKL_F32, e)) goto done;
    rc = 0;
done:
    vkl_graph_free(g);
    vkl_tensor_free(ti);
    free(ids);
    return rc;
}

static vkl_sd_train_step *step_for(trainer *t, int w, int h, vkl_err *e)
{
    for (int i = 0; i < t->nsteps; i++)
        if (t->steps[i].w == w && t->steps[i].h == h) return t->steps[i].s;
    if (t->nsteps == 32) {
        vkl_fail(e, "more than 32 bucket shapes");
        return NULL;
    }
    int f = 1 << (t->m->cfg->vae.n_levels - 1);
    vkl_sd_train_shape sh = {t->c->data.batch_size, t->m->cfg->unet.in_channels, h / f, w / f, vkl_sd_text_tokens(t->m),
                             t->m->cfg->unet.cross_attention_dim, t->xl ? vkl_sd_pooled_width(t->m) : 0};
    vkl_sd_train_step *s = NULL;
    vkl_sd_train_opts o = {t->c->checkpointing, t->accum ? NULL : t->opt, t->accum,
                           1.0f / (float)(t->c->grad_accum * vkl_sd_trainer_ranks(t->c)),
                           t->c->train_te ? &t->m->te : NULL, t->c->clip_skip - 1, t->fp16, t->seed,
                           t->c->full ? t->net.params : NULL, t->c->full ? t->net.names : NULL,
                           t->c->full ? t->net.n : 0, t->xl && t->c->train_te ? &t->m->te2 : NULL};
    if (vkl_sd_train_step_new_ex(t->ctx, &t->m->unet, &sh, &o, &s, e)) return NULL;
    t->steps[t->nsteps].w = w;
    t->steps[t->nsteps].h = h;
    t->steps[t->nsteps++].s = s;
    return s;
}

static void trainer_free(trainer *t)
{
    for (int i = 0; i < t->nsteps; i++) vkl_sd_train_step_free(t->steps[i].s);
    vkl_graph_free(t->update);
    vkl_tensor_free(t->seed);
    vkl_grad_accum_free(t->accum);
    vkl_adamw_free(t->opt);
    vkl_dylora_free(t->dy);
    free(t->params);
    vkl_full_net_free(&t->net);
    vkl_lora_set_free(t->set);
    vkl_lora_free(&t->lora);
    vkl_latent_cache_free(t->cache);
    vkl_dataset_free(t->ds);
    vkl_noise_table_free(&t->table);
    vkl_sdxl_text_cache_free(t->text_cache);
    free(t->text_disk);
    if (t->m) t->m->unet.lora = t->m->te.lora = t->m->te2.lora = NULL;
    vkl_sd_model_free(t->m);
    cJSON_Delete(t->changes);
    if (t->csv) fclose(t->csv);
    if (t->caps)
        for (int i = 0; i < t->c->data.batch_size; i++) free(t->caps[i]);
    free(t->caps);
    free(t->img_paths);
    free(t->x0); free(t->noise); free(t->noisy); free(t->target); free(t->text); free(t->tt); free(t->wts);
    free(t->ids); free(t->pooled); free(t->tids);
    vkl_ds_iter_free(&t->it);
}


/* ---- the trainer object: open, step, checkpoint, sample, finish ---- */

/* Settings the run cannot start with, before anything is loaded. */
static int check_config(const vkl_train_config *c, vkl_err *e)
{
    if (!c->model || !c->data.images_dir || !c->output)
        return vkl_fail(e, "training needs --model, --images and -o/--output");
    vkl_lr_kind kind;
    if (vkl_lr_kind_parse(c->lr_schedule, &kind))
        return vkl_fail(e, "unknown --lr-schedule '%s' (constant, linear, cosine, cosine_with_restarts)", c->lr_schedule);
    if (c->dylora && !c->full) {
        if (c->rank % c->dylora_unit)
            return vkl_fail(e, "--rank %d (the DyLoRA dim) is not a multiple of --dylora-unit %d", c->rank, c->dylora_unit);
        if (c->optim_bits == 8) return vkl_fail(e, "--network dylora trains by rank blocks with f32 AdamW state, not adamw8bit");
    }
    const vkl_caption_opts *co = &c->data.caption;
    /* kohya refuses these with cache_text_encoder_outputs too: an entry
     * holds one caption's states per image */
    if (c->cache_te_to_disk && (c->train_te || c->full))
        return vkl_fail(e, "--cache-text-embeddings-to-disk keeps the outputs of frozen text encoders; %s trains them",
                        c->full ? "--network full" : "--train-te");
    if (c->cache_te_to_disk && (co->shuffle || co->dropout_rate > 0 || co->tag_dropout_rate > 0))
        return vkl_fail(e, "--cache-text-embeddings-to-disk needs each image's caption fixed; --shuffle-caption, "
                           "--caption-dropout-rate and --caption-tag-dropout-rate change it from epoch to epoch");
    if (vkl_dtype_is_quant(c->weight_dtype) && (c->full || c->network_kind == VKL_LORA_KIND_DORA))
        return vkl_fail(e, "--weights %s (a QLoRA base) trains LoRA, LoCon, LoHa or LoKr adapters; %s needs f16 or f32 "
                           "weights", vkl_dtype_name(c->weight_dtype), c->full ? "--network full" : "DoRA");
    if (c->full) {
        struct stat st, so;
        if (!stat(c->output, &so) && !stat(c->model, &st) && so.st_ino == st.st_ino && so.st_dev == st.st_dev)
            return vkl_fail(e, "-o %s is the model being trained; write the trained model to another folder", c->output);
        if (stat(c->model, &st) || !S_ISDIR(st.st_mode))
            return vkl_fail(e, "--network full trains a diffusers model folder (vklora init-model --configs makes "
                               "one); %s is not a folder", c->model);
    }
    return 0;
}

/* --cache-text-embeddings-to-disk: every image's caption states read from
 * beside it, or encoded and written there, before the first step. */
static int open_text_disk(trainer *t, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    if (!t->xl)
        return vkl_fail(e, "--cache-text-embeddings-to-disk is for SDXL; %s has one text encoder, which vklora runs "
                           "in each step", c->model);
    int skip = c->clip_skip > 1 ? c->clip_skip - 1 : 0, n = t->ds->nimages, rc = -1;
    char **caps = calloc((size_t)n + 1, sizeof *caps), **paths = calloc((size_t)n + 1, sizeof *paths);
    if (!caps || !paths || !(t->text_disk = calloc(1, sizeof *t->text_disk))) {
        vkl_fail(e, "out of host memory");
        goto done;
    }
    if (vkl_sdxl_text_disk_init(t->text_disk, t->m, skip, e)) goto done;
    for (int i = 0; i < n; i++) {
        paths[i] = t->ds->images[i].path;
        /* fixed captions (check_config): the same at every epoch and slot */
        if (vkl_caption_process(&c->data.caption, t->ds->images[i].caption, c->data.seed, 0, 0, &caps[i], e))
            goto done;
    }
    if (vkl_sdxl_text_disk_prepare(t->text_disk, t->m, t->text_cache, paths, caps, n, c->data.batch_size, e)) goto done;
    vkl_sdxl_text_cache_set_disk(t->text_cache, t->text_disk);
    /* every caption is cached now: the encoders leave the device, as kohya
     * moves them to the CPU (a caption encoded again or a sample image
     * brings them back through vkl_sd_model_acquire) */
    uint64_t before = vkl_weights_bytes(t->m->w);
    vkl_weights_drop_prefix(t->m->w, "text_encoder");
    t->m->resident &= ~VKL_SD_PART_TE;
    const vkl_sdxl_text_disk *d = t->text_disk;
    vkl_log(VKL_LOG_INFO,
            "text cache: %d of %d images' caption states read from disk, %d encoded (%d written; %d stale, "
            "%d unreadable); the text encoders' %.1f MiB leave the device", d->read, n, n - d->read, d->written,
            d->stale, d->corrupt, (double)(before - vkl_weights_bytes(t->m->w)) / 1048576.0);
    rc = 0;
done:
    for (int i = 0; caps && i < n; i++) free(caps[i]);
    free(caps);
    free(paths);
    return rc;
}

/* The model, the data (with its latent cache) and the trainable network. */
static int open_model(trainer *t, vkl_err *e)
{
    vkl_sd_model_opts mo;
    vkl_sd_model_opts_default(&mo);
    mo.tokenizer = t->cfg.tokenizer;
    mo.yaml = t->cfg.model_config;
    mo.weight_dtype = t->cfg.full ? VKL_F32 : t->cfg.weight_dtype;
    if (vkl_sd_model_load(t->ctx, t->cfg.model, &mo, &t->m, e)) return -1;
    t->xl = t->m->cfg->n_text_encoders > 1;
    if (t->xl && t->m->cfg->unet.add_text_time != 1)
        return vkl_fail(e, "%s has two text encoders but its UNet takes no added conditioning", t->cfg.model);
    if (t->xl && !t->cfg.resolution_given && t->cfg.data.resolution != 1024) {
        /* the effective setting is what the settings file and state record */
        t->cfg.data.resolution = 1024;
        vkl_log(VKL_LOG_INFO, "SDXL: resolution 1024 (SDXL's default; --resolution sets another)");
    }
    const vkl_train_config *c = t->c;
    /* frozen encoders: each caption's states are kept (up to 1 GiB) */
    if (t->xl && !c->train_te && !(t->text_cache = vkl_sdxl_text_cache_new((size_t)1 << 30)))
        return vkl_fail(e, "out of host memory");
    char cache_id[300];
    const char *sl = strrchr(c->model, '/');
    snprintf(t->model_name, sizeof t->model_name, "%s", sl && sl[1] ? sl + 1 : c->model);
    snprintf(t->base_hash, sizeof t->base_hash, "unknown");
    /* the family is part of the latent cache key: an SD 1.x entry is never
     * read for SDXL (another VAE scaling) even under the same file name */
    snprintf(cache_id, sizeof cache_id, "%s:%s:%.9g", vkl_sd_family_name(t->m->cfg->family), t->model_name,
             t->m->cfg->vae.scaling_factor);
    if (vkl_dataset_open(&c->data, &t->ds, e)) return -1;
    vkl_beta_params bp;
    if (vkl_beta_params_from_sd(&t->m->cfg->sched, &bp, e) || vkl_noise_table_init(&t->table, &bp, VKL_ACP_F32, e))
        return -1;
    vkl_latent_cache_opts co = {encode_cb, t, cache_id, t->m->cfg->vae.latent_channels,
                                1 << (t->m->cfg->vae.n_levels - 1), 1, c->cache_to_disk};
    if (vkl_latent_cache_new(&co, t->ds, &t->cache, e) || (c->cache_te_to_disk && open_text_disk(t, e))) return -1;
    if (c->full) {
        vkl_full_net_sd_rule rule = vkl_full_net_sd_rule_for(t->m->cfg, c->train_te, c->clip_skip);
        if (vkl_full_net_init(t->ctx, t->m->w, vkl_full_net_sd_wanted, &rule, c->ema_decay, &t->net, e)) return -1;
        t->np = t->net.n;
        if (!(t->params = malloc(sizeof *t->params * (size_t)t->np))) return vkl_fail(e, "out of host memory");
        memcpy(t->params, t->net.params, sizeof *t->params * (size_t)t->np);
        return 0;
    }
    if (init_network(c, t->m, &t->lora, e)) return -1;
    if (vkl_lora_set_build_train(t->ctx, &t->lora, &t->set, e) || vkl_sd_train_params(t->set, &t->params, &t->np, e))
        return -1;
    t->m->unet.lora = t->set;
    if (c->train_te) t->m->te.lora = t->set;
    if (c->train_te && t->xl) t->m->te2.lora = t->set;
    return 0;
}

/* AdamW over the parameters (per-parameter rate multipliers: the text
 * encoder's rate, LoRA+), gradient sums across micro-batches or ranks, and
 * the loss scaler of mixed precision. */
static int open_optimiser(trainer *t, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    /* one schedule drives both rates: the text encoder's is a fixed multiple */
    float te_lr = c->te_lr >= 0 ? c->te_lr : c->lr;
    if (c->train_te && c->lr <= 0 && te_lr != c->lr)
        return vkl_fail(e, "--te-lr needs a positive --lr (the text encoder's rate follows the UNet's schedule)");
    float *mult = malloc(sizeof(float) * (size_t)(t->np ? t->np : 1));
    if (!mult) return vkl_fail(e, "out of host memory");
    for (int i = 0; c->full && i < t->np; i++)
        mult[i] = !strncmp(t->net.names[i], "text_encoder.", 13) && c->lr > 0 ? te_lr / c->lr : 1.0f;
    for (int i = 0, k = 0; !c->full && i < vkl_lora_set_count(t->set); i++) {
        const vkl_lora_slot *slot = vkl_lora_set_at(t->set, i);
        vkl_tensor *pt[VKL_LORA_ROLES];
        vkl_lora_role roles[VKL_LORA_ROLES];
        int te = !strncmp(slot->module, "text_encoder", 12), n = vkl_lora_slot_params(slot, pt, roles);
        for (int j = 0; j < n; j++, k++)
            mult[k] = (te && c->lr > 0 ? te_lr / c->lr : 1.0f) * (up_like(roles[j]) ? c->loraplus_ratio : 1.0f);
    }
    vkl_adamw_opts ao;
    vkl_adamw_opts_default(&ao);
    ao.lr = c->lr;
    ao.weight_decay = c->weight_decay;
    ao.max_grad_norm = c->max_grad_norm;
    ao.state_bits = c->optim_bits;
    t->opt = vkl_adamw_new(t->ctx, t->params, t->np, mult, &ao, e);
    free(mult);
    if (!t->opt) return -1;
    if (c->dylora && (vkl_dylora_new(t->ctx, t->set, &t->lora, c->dylora_unit, c->data.seed, &t->dy, e) ||
                      vkl_dylora_gate(t->dy, t->opt, t->params, t->np, e)))
        return -1;
    /* several ranks: the gradients go through buffers that are summed across
     * ranks between the backward pass and the optimiser step */
    if (c->grad_accum > 1 || t->P > 1) {
        t->accum = vkl_grad_accum_new(t->ctx, t->params, t->np, e);
        t->update = t->accum ? vkl_grad_accum_update_graph(t->accum, t->opt, e) : NULL;
        if (!t->update) return -1;
    }
    if (c->mixed_precision) {
        const vkl_caps *caps = vkl_ctx_caps(t->ctx);
        t->fp16 = vkl_sd_train_fp16_supported(t->ctx);
        if (!t->fp16)
            vkl_log(VKL_LOG_WARN, "mixed precision: %s (profile %s) has no fp16 arithmetic or 16-bit storage; "
                    "training in f32", caps->name, caps->profile);
        else
            vkl_log(VKL_LOG_INFO, "mixed precision: f16 activations, dynamic loss scaling");
    }
    vkl_loss_scaler_init(&t->scaler);
    if (t->fp16 && !(t->seed = vkl_tensor_new(t->ctx, VKL_F32, 1, (int64_t[]){1}, e))) return -1;
    return 0;
}

/* Rank 0: the settings file (with the changes of resumes) and the loss log,
 * continued at the step a resume starts from. */
static int open_log(trainer *t, vkl_err *e)
{
    char path[1200];
    snprintf(path, sizeof path, "%s.json", t->stem);
    char *js = vkl_train_config_json(t->c, path);
    cJSON *j = js ? cJSON_Parse(js) : NULL;
    free(js);
    js = NULL;
    if (j && cJSON_GetArraySize(t->changes))
        cJSON_AddItemToObject(j, "resumed-with-changes", cJSON_Duplicate(t->changes, 1));
    if (j) js = cJSON_Print(j);
    cJSON_Delete(j);
    int bad = !js ? vkl_fail(e, "out of host memory") : vkl_write_text_atomic(path, js, e);
    free(js);
    if (bad) return -1;
    t->csv = fopen(t->csv_path, t->step ? "a" : "w");
    if (!t->csv) return vkl_fail(e, "cannot write %s: %s", t->csv_path, strerror(errno));
    if (!t->step) fprintf(t->csv, "step,epoch,loss,lr,grad_norm,skipped,seconds\n");
    return 0;
}

/* One micro-batch's host buffers, sized for the largest bucket. */
static int alloc_buffers(trainer *t, vkl_err *e)
{
    int B = t->c->data.batch_size, D = t->m->cfg->unet.cross_attention_dim, f = 1 << (t->m->cfg->vae.n_levels - 1);
    int maxw = 0, maxh = 0;
    for (int b = 0; b < t->ds->nbuckets; b++) {
        if (t->ds->buckets[b].reso.w > maxw) maxw = t->ds->buckets[b].reso.w;
        if (t->ds->buckets[b].reso.h > maxh) maxh = t->ds->buckets[b].reso.h;
    }
    size_t maxper = (size_t)t->m->cfg->unet.in_channels * (maxw / f) * (maxh / f);
    t->x0 = malloc(sizeof(float) * maxper * B);
    t->noise = malloc(sizeof(float) * maxper * B);
    t->noisy = malloc(sizeof(float) * maxper * B);
    t->target = malloc(sizeof(float) * maxper * B);
    t->text = malloc(sizeof(float) * 77 * (size_t)D * B);
    t->pooled = malloc(sizeof(float) * ((size_t)vkl_sd_pooled_width(t->m) + 1) * B);
    t->tids = malloc(sizeof(float) * 6 * B);
    t->tt = malloc(sizeof(float) * B);
    t->wts = malloc(sizeof(float) * B);
    t->caps = calloc((size_t)B, sizeof *t->caps);
    t->img_paths = calloc((size_t)B, sizeof *t->img_paths);
    t->ids = malloc(sizeof(int32_t) * 2 * 77 * (size_t)B); /* SDXL: both tokenizers' rows */
    if (!t->x0 || !t->noise || !t->noisy || !t->target || !t->text || !t->tt || !t->wts || !t->caps || !t->ids ||
        !t->pooled || !t->tids || !t->img_paths)
        return vkl_fail(e, "out of host memory");
    return 0;
}

/* Everything before the first step; 2: a finished state to resume (nothing to do). */
static int trainer_open(trainer *t, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    if (check_config(c, e)) return -1;
    vkl_sd_trainer_stem(c->output, t->stem, sizeof t->stem);
    snprintf(t->state_dir, sizeof t->state_dir, "%s.state", t->stem);
    snprintf(t->csv_path, sizeof t->csv_path, "%s.csv", t->stem);
    t->sched = (vkl_lr_schedule){VKL_LR_CONSTANT, c->lr, c->warmup, 0, c->cycles};
    vkl_lr_kind_parse(c->lr_schedule, &t->sched.kind);
    vkl_dist *dist = c->dist;
    t->root = vkl_dist_is_root(dist);
    t->P = vkl_sd_trainer_ranks(c);
    t->R = t->root ? 0 : dist->rank;
    if (!c->resume && t->root) {
        /* an earlier run's adapter, log and state are hours of work */
        const char *earlier[] = {c->output, t->csv_path, t->state_dir};
        if (vkl_train_refuse_existing(earlier, 3, c->force, t->state_dir, e)) return -1;
        if (c->force && vkl_dir_remove(t->state_dir, e)) return -1;
    }
    if (open_model(t, e) || open_optimiser(t, e) || vkl_ds_iter_init(&t->it, t->ds, e)) return -1;
    t->N = c->grad_accum;
    /* G micro-batches per optimiser step over all ranks; this rank's are [R*N, R*N + N) */
    t->G = t->N * t->P;
    /* neither --max-steps nor --epochs: one epoch, as lm train */
    int epochs = c->epochs ? c->epochs : 1;
    t->total = c->max_steps ? c->max_steps : (epochs * t->ds->batches_per_epoch + t->N - 1) / t->N;
    if (!c->max_steps && !c->epochs)
        vkl_log(VKL_LOG_INFO, "no --max-steps or --epochs: one epoch, %d steps", t->total);
    t->sched.total = t->total;
    if (c->resume) {
        if (vkl_sd_trainer_load_state(t, c->resume, &t->step, &t->it, e)) return -1;
        if (t->dy) vkl_dylora_skip(t->dy, t->step); /* the ranks the saved steps drew */
        t->epochs_done = (int)t->it.epoch + (t->it.batch >= t->ds->batches_per_epoch);
        struct stat st;
        if (t->step >= t->total && !stat(c->output, &st)) {
            /* every rank sees the same files: they all stop here */
            vkl_log(VKL_LOG_INFO, "the state in %s is at step %d of %d and %s is written: nothing to do", c->resume,
                    t->step, t->total, c->output);
            return 2;
        }
        vkl_log(VKL_LOG_INFO, "resuming from step %d of %d (%s)", t->step, t->total, c->resume);
        /* rows a killed run logged after its last state are written again */
        double logged = 0;
        if (t->root && vkl_train_log_cut(t->csv_path, t->step, &logged, e)) return -1;
        t->seconds0 = t->elapsed >= 0 ? t->elapsed : logged;
    }
    if ((t->root && open_log(t, e)) || alloc_buffers(t, e)) return -1;
    t->t0 = now_s() - t->seconds0;
    t->saved_step = -1;
    return 0;
}

int vkl_trainer_open(vkl_ctx *ctx, const vkl_train_config *c, vkl_trainer **out, vkl_err *e)
{
    *out = NULL;
    trainer *t = calloc(1, sizeof *t);
    if (!t) return vkl_fail(e, "out of host memory");
    t->ctx = ctx;
    t->cfg = *c;
    t->c = &t->cfg;
    int rc = trainer_open(t, e);
    if (rc) {
        vkl_trainer_close(t);
        return rc;
    }
    *out = t;
    return 0;
}

void vkl_trainer_position(const vkl_trainer *t, int *step, int *total)
{
    *step = t->step;
    *total = t->total;
}

/* One micro-batch of this rank: the batch's latents, captions (encoded, or
 * tokens when the text encoder trains), noise and timesteps (a function of
 * the seed and the micro-batch's number only), then the forward and
 * backward pass; *loss its loss. */
static int micro_batch(trainer *t, const vkl_ds_sample *smp, int bucket, uint64_t key, float lr, float *loss, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    int B = c->data.batch_size, f = 1 << (t->m->cfg->vae.n_levels - 1);
    int bw = t->ds->buckets[bucket].reso.w, bh = t->ds->buckets[bucket].reso.h;
    size_t per = (size_t)t->m->cfg->unet.in_channels * (bh / f) * (bw / f);
    float *x0 = t->x0, *noise = t->noise;
    for (int i = 0; i < B; i++) {
        if (vkl_latent_cache_get(t->cache, smp[i].image, smp[i].flip, x0 + per * i, e)) {
            vkl_err_prefix(e, "%s: ", t->ds->images[smp[i].image].path);
            return -1;
        }
        free(t->caps[i]);
        t->caps[i] = NULL;
        if (vkl_caption_process(&c->data.caption, t->ds->images[smp[i].image].caption, c->data.seed, t->epoch,
                                smp[i].slot, &t->caps[i], e))
            return -1;
        const vkl_ds_image *im = &t->ds->images[smp[i].image];
        t->img_paths[i] = im->path;
        vkl_sdxl_time_ids(im->width, im->height, bw, bh, smp[i].flip, t->tids + 6 * i);
    }
    if (t->xl && c->train_te ? vkl_sdxl_tokenize_captions(t->m, t->caps, B, t->ids, e)
        : t->xl ? vkl_sdxl_encode_captions(t->m, t->text_cache, t->caps, t->img_paths, B,
                                           c->clip_skip > 1 ? c->clip_skip - 1 : 0, t->text, t->pooled, e)
        : c->train_te ? tokenize_captions(t, t->caps, B, t->ids, e) : encode_captions(t, t->caps, B, t->text, e))
        return -1;
    for (size_t k = 0; k < per * B; k++) noise[k] = vkl_rng_normal_at(c->data.seed, STREAM_NOISE + (key << 8), k);
    if (c->noise_offset > 0) {
        int C = t->m->cfg->unet.in_channels;
        for (int b = 0; b < B; b++)
            for (int ch = 0; ch < C; ch++) {
                float o = c->noise_offset * vkl_rng_normal_at(c->data.seed, STREAM_OFFSET + (key << 8),
                                                              (uint64_t)(b * C + ch));
                for (size_t k = 0; k < per / C; k++) noise[b * per + ch * (per / C) + k] += o;
            }
    }
    int v_pred = t->m->cfg->sched.prediction == VKL_SD_PRED_V;
    for (int b = 0; b < B; b++) {
        float u = 0.5f * (1.0f + (float)erf(vkl_rng_normal_at(c->data.seed, STREAM_TIME + (key << 8), b) / sqrt(2.0)));
        int ts = (int)(u * t->table.n);
        if (ts >= t->table.n) ts = t->table.n - 1;
        t->tt[b] = (float)ts;
        double acp = t->table.alphas_cumprod[ts], sa = sqrt(acp), sb = sqrt(1 - acp);
        for (size_t k = 0; k < per; k++) {
            size_t j = b * per + k;
            t->noisy[j] = (float)(sa * x0[j] + sb * noise[j]);
            t->target[j] = v_pred ? (float)(sa * noise[j] - sb * x0[j]) : noise[j];
        }
        double snr = acp / (1 - acp);
        t->wts[b] = 1.0f;
        if (c->min_snr_gamma > 0)
            t->wts[b] = (float)(v_pred ? fmin(snr, c->min_snr_gamma) / (snr + 1) : fmin(snr, c->min_snr_gamma) / snr);
    }
    vkl_sd_train_step *s = step_for(t, bw, bh, e);
    if (!s) return -1;
    vkl_sd_train_batch tb = {t->noisy, t->tt, t->text, t->target, t->wts, t->ids, t->pooled, t->tids};
    return vkl_sd_train_step_run_batch(s, &tb, t->step + 1, lr, loss, e);
}

int vkl_trainer_step(vkl_trainer *t, vkl_train_report *r, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    vkl_dist *dist = c->dist;
    if (t->step >= t->total) return vkl_fail(e, "the training is at its last step (%d)", t->total);
    /* one optimiser step: N micro-batches (N = 1 without accumulation) */
    float lr = vkl_lr_at(&t->sched, t->step), loss, gn = 0;
    double loss_sum = 0;
    /* DyLoRA: one rank per module for the whole optimiser step (every rank draws the same) */
    if (t->dy && vkl_dylora_draw(t->dy, e)) return -1;
    /* S is fixed for a whole accumulation cycle; the update unscales once */
    if (t->fp16 && (vkl_tensor_upload(t->ctx, t->seed, &t->scaler.scale, VKL_F32, e) ||
                    vkl_adamw_set_grad_scale(t->opt, t->scaler.scale, e)))
        return -1;
    for (int micro = 0; micro < t->G;) {
        const vkl_ds_sample *smp;
        int cnt, bucket;
        if (vkl_ds_iter_next(&t->it, &smp, &cnt, &bucket, &t->epoch, e)) return -1;
        if (cnt != c->data.batch_size) continue; /* a short batch (only at the end of a bucket): kohya drops it too */
        /* every rank walks the whole global order; another rank's batch is only counted */
        if (micro / t->N != t->R) {
            micro++;
            continue;
        }
        /* noise and timesteps: a function of (seed, micro-batch number) */
        uint64_t key = (uint64_t)t->step * (uint64_t)t->G + (uint64_t)micro;
        if (micro_batch(t, smp, bucket, key, lr, &loss, e)) return -1;
        loss_sum += loss;
        micro++;
    }
    if (t->P > 1) {
        /* the summed gradient (mean over the global batch: each micro-batch
         * counted 1/G) on every rank, and the global mean loss */
        if (vkl_dist_sum_tensors(dist, t->ctx, vkl_grad_accum_buffers(t->accum), t->np, 1.0f, 0, e) ||
            vkl_dist_sum_f64(dist, &loss_sum, 1, e))
            return -1;
    }
    if (t->update && (vkl_adamw_prepare(t->opt, t->step + 1, lr, e) || vkl_graph_run(t->update, e))) return -1;
    int skipped = 0;
    if (vkl_adamw_result(t->opt, &gn, &skipped, e)) return -1;
    /* every rank must have taken the same step (or skipped it) */
    double same[2] = {skipped, gn};
    if (vkl_dist_check_same(dist, same, 2, "the gradient norm and NaN skip of a step", e)) return -1;
    if (c->full && vkl_full_net_ema_update(&t->net, t->step + 1, e)) return -1;
    loss = (float)(loss_sum / t->G);
    int step = ++t->step;
    t->steps_run++;
    t->epochs_done = (int)t->it.epoch + (t->it.batch >= t->ds->batches_per_epoch);
    float old_scale = t->scaler.scale;
    if (t->fp16 && vkl_loss_scaler_update(&t->scaler, skipped)) {
        /* an overflow of the scaled gradient: a smaller scale cures it, so
         * it is not a divergence and does not count towards the stop */
        vkl_log(VKL_LOG_INFO, "step %d: the gradient overflowed at loss scale %g; the update was skipped, "
                "loss scale now %g", step, old_scale, t->scaler.scale);
    } else if (skipped) {
        t->skipped_run++;
        vkl_log(VKL_LOG_WARN, "step %d: the gradient was not finite%s; the update was skipped", step,
                t->fp16 ? " at the minimum loss scale" : "");
        if (t->skipped_run >= 10)
            return vkl_fail(e, "10 steps in a row had non-finite gradients; stopping (try a lower --lr)");
    } else {
        t->skipped_run = 0;
    }
    t->avg = t->navg < 20 ? (t->avg * t->navg + loss) / (t->navg + 1) : t->avg * 0.95 + loss * 0.05;
    t->navg++;
    if (t->csv) {
        fprintf(t->csv, "%d,%u,%.7g,%.7g,%.7g,%d,%.3f\n", step, t->epoch, loss, lr, gn, skipped, now_s() - t->t0);
        fflush(t->csv);
    }
    vkl_mem_stats ms;
    vkl_mem_get_stats(t->ctx, &ms);
    *r = (vkl_train_report){step, t->total, (int)t->epoch, loss, (float)t->avg, lr, gn, skipped, now_s() - t->t0,
                            ms.total_current, 0, 0};
    r->save_due = t->root && c->save_every && step % c->save_every == 0 && step < t->total;
    r->sample_due = t->root && c->sample_prompts && c->sample_every && step % c->sample_every == 0;
    return 0;
}

int vkl_trainer_checkpoint(vkl_trainer *t, vkl_err *e)
{
    const vkl_train_config *c = t->c;
    if (!t->root || t->saved_step == t->step) return 0;
    t->elapsed = now_s() - t->t0;
    if (t->step > 0 && c->save_every && t->step % c->save_every == 0 && t->step < t->total) {
        /* --save-every: the adapter of this step beside the output, the
         * --keep-last newest of them kept */
        char path[1200];
        const char *ext = c->full ? "" : ".safetensors";
        snprintf(path, sizeof path, "%s-step%06d%s", t->stem, t->step, ext);
        if (vkl_sd_trainer_save_output(t, path, t->step, (int)t->epoch, e)) return -1;
        int old = t->step - c->keep_last * c->save_every;
        if (c->keep_last > 0 && old > 0) {
            snprintf(path, sizeof path, "%s-step%06d%s", t->stem, old, ext);
            vkl_err e2;
            if (c->full) vkl_dir_remove(path, &e2);
            else unlink(path);
        }
    }
    if (vkl_sd_trainer_save_state(t, t->state_dir, t->step, (int)t->epoch, &t->it, e)) return -1;
    t->saved_step = t->step;
    return 0;
}

int vkl_trainer_sample(vkl_trainer *t, vkl_err *e)
{
    if (!t->root || !t->c->sample_prompts) return 0;
    /* DyLoRA samples with every rank row (the file's full rank) */
    if (t->dy && vkl_dylora_full(t->dy, e)) return -1;
    return vkl_sd_trainer_render_samples(t, t->step, e);
}

int vkl_trainer_finish(vkl_trainer *t, vkl_err *e)
{
    if (t->step < t->total) return vkl_fail(e, "the training is at step %d of %d: not finished", t->step, t->total);
    if (vkl_trainer_checkpoint(t, e)) return -1;
    return t->root ? vkl_sd_trainer_save_output(t, t->c->output, t->step, (int)t->epoch, e) : 0;
}

const char *vkl_trainer_state_dir(const vkl_trainer *t) { return t->state_dir; }

void vkl_trainer_close(vkl_trainer *t)
{
    if (!t) return;
    vkl_dist *dist = t->c->dist;
    if (t->P > 1 && t->steps_run) {
        double run = now_s() - t->t0 - t->seconds0;
        vkl_log(VKL_LOG_INFO, "%d ranks: the gradient sums took %.2f s of this run's %.2f s of steps (%.1f%%; %.2f s in "
                "the transport, %.1f MB)", t->P, dist->sync_seconds, run, 100.0 * dist->sync_seconds / fmax(1e-9, run),
                dist->comm_seconds, dist->comm_bytes / 1e6);
    }
    trainer_free(t);
    free(t);
}

int vkl_train_run(vkl_ctx *ctx, const vkl_train_config *c, vkl_train_progress_fn progress, void *user, vkl_err *e)
{
    vkl_trainer *t;
    int rc = vkl_trainer_open(ctx, c, &t, e);
    if (rc) return rc;
    rc = -1;
    /* a stop must be agreed, or a rank would leave the others in a collective */
    int stop = 0;
    if (vkl_dist_any(c->dist, vkl_train_interrupt, &stop, e)) goto done;
    while (t->step < t->total && !stop) {
        vkl_train_report r;
        if (vkl_trainer_step(t, &r, e)) goto done;
        if (progress && t->root) progress(user, &r);
        if ((r.save_due && vkl_trainer_checkpoint(t, e)) || (r.sample_due && vkl_trainer_sample(t, e))) goto done;
        /* tests stand in for Ctrl-C at an exact step */
        int stop_here = vkl_train_interrupt || c->interrupt_at == r.step;
        /* and for a kill between saves (the log has rows past the last state) */
        if (c->kill_at == r.step) {
            vkl_log(VKL_LOG_WARN, "killed after step %d (test hook)", r.step);
            raise(SIGKILL);
        }
        if (vkl_dist_any(c->dist, stop_here, &stop, e)) goto done;
    }
    if (stop) {
        if (vkl_trainer_checkpoint(t, e)) goto done;
        vkl_fail(e, "interrupted at step %d; the state is in %s (continue with --resume %s)", t->step, t->state_dir,
                 t->state_dir);
        rc = 1;
    } else {
        rc = vkl_trainer_finish(t, e) ? -1 : 0;
    }
done:
    vkl_trainer_close(t);
    return rc;
}
