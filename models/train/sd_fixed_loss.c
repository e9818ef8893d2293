#include "train/sd_fixed_loss.h"

#include "ops.h"
#include "sd/pipeline.h"
#include "rng.h"
#include "sd/schedule.h"
#include "sd/unet.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* its own Philox streams: no other draw of the project shares them */
enum { STREAM_FIXED_NOISE = 0x4c48 };

struct vkl_sd_fixed_loss {
    vkl_sd_model *m;
    int n_img, n_t, te_adapted, T, D;
    size_t per;               /* latent elements of one image */
    float *noisy, *target;    /* [n_img, n_t, per] */
    float *tt;                /* [n_t] */
    int32_t *ids;             /* [n_img, T] */
    float *text;              /* [n_img, T, D]: the text states (recomputed per run when te_adapted) */
    float *ctx, *pred;        /* [n_t, T, D], [n_t, per] host staging */
    vkl_graph *tg, *ug;       /* text encoder [1, T]; UNet [n_t, ...] */
    vkl_tensor *t_ids, *t_text, *u_x, *u_t, *u_ctx, *u_out;
    int have_text;
};

void vkl_sd_fixed_loss_free(vkl_sd_fixed_loss *l)
{
    if (!l) return;
    vkl_graph_free(l->tg);
    vkl_graph_free(l->ug);
    vkl_tensor_free(l->t_ids);
    vkl_tensor_free(l->u_x);
    vkl_tensor_free(l->u_t);
    vkl_tensor_free(l->u_ctx);
    free(l->noisy);
    free(l->target);
    free(l->tt);
    free(l->ids);
    free(l->text);
    free(l->ctx);
    free(l->pred);
    free(l);
}

/* latents, noise, targets and token ids of every image */
static int prepare(vkl_sd_fixed_loss *l, const vkl_dataset *d, uint64_t seed, int bw, int bh, vkl_err *e)
{
    vkl_sd_model *m = l->m;
    vkl_beta_params bp;
    vkl_noise_table table;
    memset(&table, 0, sizeof table);
    if (vkl_beta_params_from_sd(&m->cfg->sched, &bp, e) || vkl_noise_table_init(&table, &bp, VKL_ACP_F32, e)) return -1;
    for (int j = 0; j < l->n_t; j++) {
        int ts = (int)((j + 0.5) * table.n / l->n_t);
        l->tt[j] = (float)(ts < table.n ? ts : table.n - 1);
    }
    float *x0 = malloc(sizeof(float) * l->per);
    int rc = x0 ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; !rc && i < l->n_img; i++) {
        float *chw = NULL;
        int w = 0, h = 0;
        rc = vkl_dataset_load_image(d, i, 0, &chw, &w, &h, e);
        if (!rc && (w != bw || h != bh)) rc = vkl_fail(e, "%dx%d, not the common size %dx%d", w, h, bw, bh);
        if (!rc) rc = vkl_sd_encode_image(m, chw, 1, h, w, x0, e);
        free(chw);
        if (rc) {
            vkl_err_prefix(e, "%s: ", d->images[i].rel);
            break;
        }
        for (int j = 0; j < l->n_t; j++) {
            int ts = (int)l->tt[j];
            double acp = table.alphas_cumprod[ts], sa = sqrt(acp), sb = sqrt(1 - acp);
            size_t o = ((size_t)i * l->n_t + j) * l->per;
            for (size_t k = 0; k < l->per; k++) {
                double eps = vkl_rng_normal_at(seed, STREAM_FIXED_NOISE + ((uint64_t)i << 8), (uint64_t)j * l->per + k);
                l->noisy[o + k] = (float)(sa * x0[k] + sb * eps);
                l->target[o + k] = m->cfg->sched.prediction == VKL_SD_PRED_V ? (float)(sa * eps - sb * x0[k]) : (float)eps;
            }
        }
        int32_t row[VKL_CLIP_CONTEXT];
        if (vkl_clip_encode_padded(m->tok, d->images[i].caption, 0, row, NULL, e)) {
            vkl_err_prefix(e, "caption of %s: ", d->images[i].rel);
            rc = -1;
            break;
        }
        memcpy(l->ids + (size_t)l->T * i, row, sizeof *row * (size_t)l->T);
    }
    free(x0);
    vkl_noise_table_free(&table);
    return rc;
}

static int build_graphs(vkl_sd_fixed_loss *l, int lh, int lw, vkl_err *e)
{
    vkl_sd_model *m = l->m;
    vkl_ctx *c = m->ctx;
    int C = m->cfg->unet.in_channels;
    l->t_ids = vkl_tensor_new(c, VKL_I32, 2, (int64_t[]){1, l->T}, e);
    l->u_x = l->t_ids ? vkl_tensor_new(c, VKL_F32, 4, (int64_t[]){l->n_t, C, lh, lw}, e) : NULL;
    l->u_t = l->u_x ? vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){l->n_t}, e) : NULL;
    l->u_ctx = l->u_t ? vkl_tensor_new(c, VKL_F32, 3, (int64_t[]){l->n_t, l->T, l->D}, e) : NULL;
    if (!l->u_ctx) return -1;
    l->tg = vkl_graph_new(c);
    l->t_text = vkl_clip_text_forward(l->tg, &m->te, l->t_ids, 0, 1, NULL);
    vkl_graph_keep(l->tg, l->t_text);
    if (vkl_graph_failed(l->tg)) return vkl_fail(e, "text encoder graph: %s", vkl_graph_error(l->tg));
    if (vkl_graph_plan(l->tg, e)) return -1;
    l->ug = vkl_graph_new(c);
    l->u_out = vkl_unet_forward(l->ug, &m->unet, l->u_x, l->u_t, l->u_ctx, NULL);
    vkl_graph_keep(l->ug, l->u_out);
    if (vkl_graph_failed(l->ug)) return vkl_fail(e, "UNet graph: %s", vkl_graph_error(l->ug));
    return vkl_graph_plan(l->ug, e);
}

int vkl_sd_fixed_loss_new(vkl_sd_model *m, const vkl_dataset *d, int n_t, uint64_t seed, int te_adapted,
                          vkl_sd_fixed_loss **out, vkl_err *e)
{
    *out = NULL;
    if (m->cfg->n_text_encoders != 1) return vkl_fail(e, "the fixed-noise loss is for SD 1.x / 2.x models (one text encoder)");
    if (n_t < 1 || n_t > 1000) return vkl_fail(e, "%d timesteps per image (1 to 1000)", n_t);
    if (d->nimages < 1 || d->nbuckets != 1)
        return vkl_fail(e, "the images must share one size (%d sizes found)", d->nbuckets);
    int f = 1 << (m->cfg->vae.n_levels - 1);
    int w = d->buckets[0].reso.w, h = d->buckets[0].reso.h;
    if (w % f || h % f) return vkl_fail(e, "images of %dx%d are not a multiple of the VAE's factor %d", w, h, f);
    vkl_sd_fixed_loss *l = calloc(1, sizeof *l);
    if (!l) return vkl_fail(e, "out of host memory");
    l->m = m;
    l->n_img = d->nimages;
    l->n_t = n_t;
    l->te_adapted = te_adapted;
    l->T = vkl_sd_text_tokens(m);
    l->D = m->cfg->unet.cross_attention_dim;
    int lh = h / f, lw = w / f;
    l->per = (size_t)m->cfg->unet.in_channels * lh * lw;
    size_t all = (size_t)l->n_img * n_t * l->per;
    l->noisy = malloc(sizeof(float) * all);
    l->target = malloc(sizeof(float) * all);
    l->tt = malloc(sizeof(float) * (size_t)n_t);
    l->ids = malloc(sizeof(int32_t) * (size_t)l->n_img * l->T);
    l->text = malloc(sizeof(float) * (size_t)l->n_img * l->T * l->D);
    l->ctx = malloc(sizeof(float) * (size_t)n_t * l->T * l->D);
    l->pred = malloc(sizeof(float) * (size_t)n_t * l->per);
    if (!l->noisy || !l->target || !l->tt || !l->ids || !l->text || !l->ctx || !l->pred) {
        vkl_sd_fixed_loss_free(l);
        return vkl_fail(e, "out of host memory");
    }
    if (prepare(l, d, seed, w, h, e) || build_graphs(l, lh, lw, e)) {
        vkl_sd_fixed_loss_free(l);
        return -1;
    }
    *out = l;
    return 0;
}

static int text_states(vkl_sd_fixed_loss *l, vkl_err *e)
{
    vkl_ctx *c = l->m->ctx;
    size_t row = (size_t)l->T * l->D;
    for (int i = 0; i < l->n_img; i++)
        if (vkl_tensor_upload(c, l->t_ids, l->ids + (size_t)l->T * i, VKL_I32, e) || vkl_graph_run(l->tg, e) ||
            vkl_tensor_download(c, l->t_text, l->text + row * i, VKL_F32, e))
            return -1;
    l->have_text = 1;
    return 0;
}

int vkl_sd_fixed_loss_run(vkl_sd_fixed_loss *l, double *loss, vkl_err *e)
{
    vkl_ctx *c = l->m->ctx;
    if ((l->te_adapted || !l->have_text) && text_states(l, e)) return -1;
    size_t row = (size_t)l->T * l->D, n = (size_t)l->n_t * l->per;
    double sum = 0;
    if (vkl_tensor_upload(c, l->u_t, l->tt, VKL_F32, e)) return -1;
    for (int i = 0; i < l->n_img; i++) {
        for (int j = 0; j < l->n_t; j++) memcpy(l->ctx + row * j, l->text + row * i, sizeof(float) * row);
        const float *noisy = l->noisy + (size_t)i * n, *target = l->target + (size_t)i * n;
        if (vkl_tensor_upload(c, l->u_x, noisy, VKL_F32, e) || vkl_tensor_upload(c, l->u_ctx, l->ctx, VKL_F32, e) ||
            vkl_graph_run(l->ug, e) || vkl_tensor_download(c, l->u_out, l->pred, VKL_F32, e))
            return -1;
        double s = 0;
        for (size_t k = 0; k < n; k++) {
            double dlt = (double)l->pred[k] - target[k];
            s += dlt * dlt;
        }
        sum += s / (double)n;
    }
    *loss = sum / l->n_img;
    return 0;
}
