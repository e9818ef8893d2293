#include "train/vae_train_step.h"

#include "ops.h"
#include "sd/sd_layout.h"

#include <stdlib.h>
#include <string.h>

int vkl_vae_loss_parse(const char *name, vkl_vae_loss_kind *k)
{
    if (!strcmp(name, "l1")) *k = VKL_VAE_LOSS_L1;
    else if (!strcmp(name, "mse")) *k = VKL_VAE_LOSS_MSE;
    else return -1;
    return 0;
}

const char *vkl_vae_loss_name(vkl_vae_loss_kind k) { return k == VKL_VAE_LOSS_MSE ? "mse" : "l1"; }

int vkl_vae_train_params(const vkl_vae *vae, vkl_tensor ***params, int *n, vkl_err *e)
{
    vkl_sd_params ps;
    *params = NULL;
    *n = 0;
    if (vkl_sd_vae_params_build(vae->cfg, &ps, e)) return -1;
    vkl_tensor **p = calloc((size_t)ps.n + 1, sizeof *p);
    int rc = p ? 0 : vkl_fail(e, "out of host memory");
    for (int i = 0; i < ps.n && !rc; i++) {
        p[i] = vkl_weights_find(vae->w, ps.v[i].name);
        if (!p[i]) rc = vkl_fail(e, "the VAE has no weight %s", ps.v[i].name);
        else if (p[i]->dtype != VKL_F32 || p[i]->graph)
            rc = vkl_fail(e, "VAE weight %s must be a persistent f32 tensor to be trained", ps.v[i].name);
    }
    if (rc) {
        free(p);
    } else {
        *params = p;
        *n = ps.n;
    }
    vkl_sd_params_free(&ps);
    return rc;
}

struct vkl_vae_train_step {
    vkl_ctx *ctx;
    vkl_graph *g;
    vkl_tensor *images, *eps, *loss, *rec, *kl;
    vkl_tensor **params, **grads;
    int np;
    vkl_adamw *opt;
};

void vkl_vae_train_step_free(vkl_vae_train_step *s)
{
    if (!s) return;
    vkl_graph_free(s->g);
    vkl_tensor_free(s->images);
    vkl_tensor_free(s->eps);
    free(s->params);
    free(s->grads);
    free(s);
}

/* clamp(x, lo, hi) from ReLUs, whose backward rules give clamp's gradient (1
 * inside, 0 outside): max(x, lo) = lo + relu(x - lo), min(y, hi) = hi -
 * relu(hi - y). The shifts round x to the grid of |lo| (a few 1e-6 for
 * diffusers' [-30, 20]), far below what the log-variance means. */
static vkl_tensor *clamp_(vkl_graph *g, vkl_tensor *x, float lo, float hi)
{
    vkl_tensor *r = vkl_unary(g, x, VKL_UNARY_RELU, 1.0f, -lo);       /* max(x, lo) - lo */
    vkl_tensor *s = vkl_unary(g, r, VKL_UNARY_RELU, -1.0f, hi - lo);  /* hi - min(x', hi) */
    return vkl_unary(g, s, VKL_UNARY_IDENTITY, -1.0f, hi);
}

/* Mean of every element of x, as [1, 1]: rows of the last two dims first,
 * then those sums, so no single reduction row is the whole tensor. */
static vkl_tensor *mean_all(vkl_graph *g, vkl_tensor *x)
{
    if (!x) return NULL;
    int64_t n = vkl_tensor_nelem(x), inner = x->ndim >= 2 ? x->shape[x->ndim - 1] * x->shape[x->ndim - 2] : n;
    vkl_tensor *r = vkl_sum_rows(g, vkl_reshape(g, x, 2, (int64_t[]){n / inner, inner}));
    r = vkl_sum_rows(g, vkl_reshape(g, r, 2, (int64_t[]){1, n / inner}));
    return vkl_scale(g, r, 1.0f / (float)n);
}

/* The two halves of moments [B, 2Z, h, w] along the channels: views, so the
 * encoder's output is not copied (their gradients pad back with zeros). */
static void split_moments(vkl_graph *g, vkl_tensor *m, vkl_tensor **mean, vkl_tensor **logvar)
{
    *mean = *logvar = NULL;
    if (!m) return;
    int64_t shape[4] = {m->shape[0], m->shape[1] / 2, m->shape[2], m->shape[3]};
    *mean = vkl_view(g, m, 4, shape, m->stride, 0);
    *logvar = vkl_view(g, m, 4, shape, m->stride, shape[1] * m->stride[1]);
}

int vkl_vae_train_step_new(vkl_ctx *c, const vkl_vae *vae, int batch, int height, int width,
                           const vkl_vae_train_opts *o, vkl_vae_train_step **out, vkl_err *e)
{
    *out = NULL;
    const vkl_sd_vae_config *cfg = vae->cfg;
    int f = 1 << (cfg->n_levels - 1), Z = cfg->latent_channels;
    if (batch < 1 || height < f || width < f || height % f || width % f)
        return vkl_fail(e, "VAE training: %dx%d images in batches of %d; sides must be positive multiples of %d", width,
                        height, batch, f);
    vkl_vae_train_step *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of host memory");
    s->ctx = c;
    if (vkl_vae_train_params(vae, &s->params, &s->np, e)) goto fail;
    s->grads = calloc((size_t)s->np, sizeof *s->grads);
    if (!s->grads) {
        vkl_fail(e, "out of host memory");
        goto fail;
    }
    s->images = vkl_tensor_new(c, VKL_F32, 4, (int64_t[]){batch, cfg->in_channels, height, width}, e);
    s->eps = s->images ? vkl_tensor_new(c, VKL_F32, 4, (int64_t[]){batch, Z, height / f, width / f}, e) : NULL;
    if (!s->eps) goto fail;
    vkl_graph *g = s->g = vkl_graph_new(c);
    vkl_tensor *mean, *logvar;
    split_moments(g, vkl_vae_encode(g, vae, s->images), &mean, &logvar);
    vkl_tensor *lv = clamp_(g, logvar, -30.0f, 20.0f);
    vkl_tensor *z = vkl_add(g, mean, vkl_mul(g, vkl_unary(g, lv, VKL_UNARY_EXP, 0.5f, 0.0f), s->eps));
    vkl_tensor *rec = vkl_vae_decode(g, vae, z);
    vkl_tensor *d = vkl_sub(g, rec, s->images);
    if (o->loss == VKL_VAE_LOSS_MSE) d = vkl_mul(g, d, d);
    else d = vkl_add(g, vkl_unary(g, d, VKL_UNARY_RELU, 1.0f, 0.0f), vkl_unary(g, d, VKL_UNARY_RELU, -1.0f, 0.0f));
    s->rec = mean_all(g, d);
    /* 0.5 (mean^2 + exp(logvar) - logvar) averaged, minus 0.5 */
    vkl_tensor *t = vkl_sub(g, vkl_add(g, vkl_mul(g, mean, mean), vkl_unary(g, lv, VKL_UNARY_EXP, 1.0f, 0.0f)), lv);
    s->kl = vkl_unary(g, mean_all(g, t), VKL_UNARY_IDENTITY, 0.5f, -0.5f);
    s->loss = vkl_add(g, s->rec, vkl_scale(g, s->kl, o->kl_weight));
    vkl_graph_keep(g, s->loss);
    vkl_graph_keep(g, s->rec);
    vkl_graph_keep(g, s->kl);
    if (vkl_graph_failed(g)) {
        vkl_fail(e, "%s", vkl_graph_error(g));
        goto fail;
    }
    if (vkl_graph_backward(g, s->loss, NULL, s->params, s->np, s->grads, e)) goto fail;
    for (int i = 0; i < s->np; i++)
        if (!s->grads[i]) {
            vkl_fail(e, "VAE weight %s does not affect the loss", s->params[i]->name);
            goto fail;
        }
    if (o->opt) {
        s->opt = o->opt;
        if (vkl_adamw_append(s->opt, g, s->grads, e)) goto fail;
    } else {
        for (int i = 0; i < s->np; i++) vkl_graph_keep(g, s->grads[i]);
    }
    if (vkl_graph_plan(g, e)) goto fail;
    *out = s;
    return 0;
fail:
    vkl_err_prefix(e, "VAE training step: ");
    vkl_vae_train_step_free(s);
    return -1;
}

size_t vkl_vae_train_step_eps_count(const vkl_vae_train_step *s) { return (size_t)vkl_tensor_nelem(s->eps); }

int vkl_vae_train_step_run(vkl_vae_train_step *s, const float *images, const float *eps, int step, float lr,
                           vkl_vae_losses *out, vkl_err *e)
{
    if (vkl_tensor_upload(s->ctx, s->images, images, VKL_F32, e) || vkl_tensor_upload(s->ctx, s->eps, eps, VKL_F32, e))
        return -1;
    if (s->opt && vkl_adamw_prepare(s->opt, step, lr, e)) return -1;
    if (vkl_graph_run(s->g, e)) return -1;
    if (!out) return 0;
    return vkl_tensor_download(s->ctx, s->loss, &out->loss, VKL_F32, e) ||
                   vkl_tensor_download(s->ctx, s->rec, &out->rec, VKL_F32, e) ||
                   vkl_tensor_download(s->ctx, s->kl, &out->kl, VKL_F32, e)
               ? -1
               : 0;
}

int vkl_vae_train_step_param_count(const vkl_vae_train_step *s) { return s->np; }
vkl_tensor *vkl_vae_train_step_param(const vkl_vae_train_step *s, int i) { return s->params[i]; }
vkl_tensor *vkl_vae_train_step_grad(const vkl_vae_train_step *s, int i) { return s->opt ? NULL : s->grads[i]; }

/* ---- evaluation ---- */

struct vkl_vae_recon {
    vkl_ctx *ctx;
    vkl_graph *g;
    vkl_tensor *images, *mean, *rec;
};

void vkl_vae_recon_free(vkl_vae_recon *r)
{
    if (!r) return;
    vkl_graph_free(r->g);
    vkl_tensor_free(r->images);
    free(r);
}

int vkl_vae_recon_new(vkl_ctx *c, const vkl_vae *vae, int batch, int height, int width, vkl_vae_recon **out,
                      vkl_err *e)
{
    *out = NULL;
    const vkl_sd_vae_config *cfg = vae->cfg;
    vkl_vae_recon *r = calloc(1, sizeof *r);
    if (!r) return vkl_fail(e, "out of host memory");
    r->ctx = c;
    r->images = vkl_tensor_new(c, VKL_F32, 4, (int64_t[]){batch, cfg->in_channels, height, width}, e);
    if (!r->images) goto fail;
    vkl_graph *g = r->g = vkl_graph_new(c);
    vkl_tensor *mean, *logvar;
    split_moments(g, vkl_vae_encode(g, vae, r->images), &mean, &logvar);
    r->mean = vkl_contiguous(g, mean);
    r->rec = vkl_vae_decode(g, vae, r->mean);
    vkl_graph_keep(g, r->mean);
    vkl_graph_keep(g, r->rec);
    if (vkl_graph_plan(g, e)) goto fail;
    *out = r;
    return 0;
fail:
    vkl_err_prefix(e, "VAE reconstruction: ");
    vkl_vae_recon_free(r);
    return -1;
}

int vkl_vae_recon_run(vkl_vae_recon *r, const float *images, float *means, float *rec, vkl_err *e)
{
    if (vkl_tensor_upload(r->ctx, r->images, images, VKL_F32, e) || vkl_graph_run(r->g, e)) return -1;
    if (means && vkl_tensor_download(r->ctx, r->mean, means, VKL_F32, e)) return -1;
    if (rec && vkl_tensor_download(r->ctx, r->rec, rec, VKL_F32, e)) return -1;
    return 0;
}
