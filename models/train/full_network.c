#include "train/full_network.h"

#include "io/safetensors.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>

vkl_full_net_sd_rule vkl_full_net_sd_rule_for(const vkl_sd_config *cfg, int train_te, int clip_skip)
{
    /* SD 1.x/2.x read layer n-1-skip through the final norm; SDXL the first
     * encoder's penultimate layer (before the norm) and the second to its end */
    int skip = clip_skip > 1 ? clip_skip - 1 : 0, xl = cfg->n_text_encoders > 1;
    return (vkl_full_net_sd_rule){train_te, {cfg->te[0].layers - skip - xl, cfg->te[1].layers - (xl ? 0 : skip)}, xl};
}

/* "....encoder.layers.N....": N, else -1 */
static int encoder_layer(const char *name)
{
    const char *p = strstr(name, ".encoder.layers.");
    return p ? atoi(p + 16) : -1;
}

int vkl_full_net_sd_wanted(void *rule, const char *name)
{
    const vkl_full_net_sd_rule *r = rule;
    if (!strncmp(name, "unet.", 5)) return 1;
    int te2 = !strncmp(name, "text_encoder_2.", 15);
    if (!r->train_te || (!te2 && strncmp(name, "text_encoder.", 13))) return 0;
    int layer = encoder_layer(name);
    if (layer >= 0) return layer < r->te_used[te2];
    return te2 || !r->xl || !strstr(name, ".final_layer_norm.");
}

int vkl_full_net_init(vkl_ctx *c, const vkl_weights *w, vkl_full_net_wanted_fn wanted, void *user, float ema_decay,
                      vkl_full_net *f, vkl_err *e)
{
    memset(f, 0, sizeof *f);
    f->ctx = c;
    f->ema_decay = ema_decay;
    if (!(ema_decay >= 0 && ema_decay < 1)) return vkl_fail(e, "--ema-decay %g must be in [0, 1)", (double)ema_decay);
    int nw = vkl_weights_count(w);
    f->params = calloc((size_t)nw + 1, sizeof *f->params);
    f->names = calloc((size_t)nw + 1, sizeof *f->names);
    if (!f->params || !f->names) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < nw; i++) {
        const char *name;
        vkl_tensor *t = vkl_weights_at(w, i, &name);
        if (wanted ? !wanted(user, name) : strncmp(name, "unet.", 5)) continue;
        if (t->dtype != VKL_F32) {
            vkl_full_net_free(f);
            return vkl_fail(e, "full training needs f32 weights, %s is %s", name, vkl_dtype_name(t->dtype));
        }
        f->params[f->n] = t;
        f->names[f->n++] = name;
    }
    if (!f->n) return vkl_fail(e, "the model has no UNet weights to train");
    if (ema_decay <= 0) return 0;
    /* the average starts at the weights and is updated by one replayed graph */
    f->ema = calloc((size_t)f->n, sizeof *f->ema);
    if (!f->ema) return vkl_fail(e, "out of host memory");
    f->ema_rate = vkl_tensor_new(c, VKL_F32, 1, (int64_t[]){1}, e);
    if (!f->ema_rate) goto fail;
    vkl_graph *g = vkl_graph_new(c);
    f->ema_graph = g;
    vkl_graph *init = vkl_graph_new(c);
    for (int i = 0; i < f->n; i++) {
        vkl_tensor *p = f->params[i];
        if (!(f->ema[i] = vkl_tensor_new(c, VKL_F32, p->ndim, p->shape, e))) {
            vkl_graph_free(init);
            goto fail;
        }
        vkl_copy_into(init, p, f->ema[i]);
        vkl_tensor *d = vkl_mul(g, vkl_sub(g, p, f->ema[i]), f->ema_rate);
        vkl_copy_into(g, vkl_add(g, f->ema[i], d), f->ema[i]);
    }
    int rc = vkl_graph_plan(init, e) || vkl_graph_run(init, e);
    vkl_graph_free(init);
    if (rc || vkl_graph_plan(g, e)) goto fail;
    return 0;
fail:
    vkl_err_prefix(e, "weight average: ");
    vkl_full_net_free(f);
    return -1;
}

void vkl_full_net_free(vkl_full_net *f)
{
    vkl_graph_free(f->ema_graph);
    for (int i = 0; f->ema && i < f->n; i++) vkl_tensor_free(f->ema[i]);
    free(f->ema);
    vkl_tensor_free(f->ema_rate);
    free(f->params);
    free(f->names);
    memset(f, 0, sizeof *f);
}

int vkl_full_net_ema_update(vkl_full_net *f, int step, vkl_err *e)
{
    if (!f->ema_graph) return 0;
    double warm = (1.0 + step) / (10.0 + step), d = warm < f->ema_decay ? warm : f->ema_decay;
    float rate = (float)(1.0 - d);
    if (vkl_tensor_upload(f->ctx, f->ema_rate, &rate, VKL_F32, e)) return -1;
    return vkl_graph_run(f->ema_graph, e);
}

vkl_tensor *const *vkl_full_net_output(const vkl_full_net *f) { return f->ema ? f->ema : f->params; }

static int save_set(const vkl_full_net *f, vkl_tensor *const *t, const char *path, vkl_err *e)
{
    vkl_st_writer *w = vkl_st_writer_new();
    float **keep = calloc((size_t)f->n, sizeof *keep);
    int rc = (!w || !keep) ? vkl_fail(e, "out of host memory") : 0;
    for (int i = 0; i < f->n && !rc; i++) {
        size_t n = (size_t)vkl_tensor_nelem(t[i]);
        keep[i] = malloc(sizeof(float) * (n ? n : 1));
        rc = !keep[i] ? vkl_fail(e, "out of host memory")
                      : vkl_tensor_download(f->ctx, t[i], keep[i], VKL_F32, e) ||
                            vkl_st_writer_add_ref(w, f->names[i], VKL_F32, t[i]->ndim, t[i]->shape, keep[i], e);
    }
    if (!rc) rc = vkl_st_writer_finish(w, path, e);
    vkl_st_writer_free(w);
    for (int i = 0; keep && i < f->n; i++) free(keep[i]);
    free(keep);
    return rc;
}

static int load_set(const vkl_full_net *f, vkl_tensor *const *t, const char *path, vkl_err *e)
{
    vkl_st_file *sf;
    if (vkl_st_open(path, &sf, e)) return -1;
    int rc = 0;
    for (int i = 0; i < f->n && !rc; i++) {
        const vkl_st_tensor *x = vkl_st_find(sf, f->names[i]);
        uint64_t n = (uint64_t)vkl_tensor_nelem(t[i]);
        if (!x || x->nelem != n) {
            rc = vkl_fail(e, "%s: %s is missing or has another size (a state of another model?)", path, f->names[i]);
            break;
        }
        float *buf = malloc(sizeof(float) * (n ? n : 1));
        rc = !buf ? vkl_fail(e, "out of host memory")
                  : vkl_st_read(sf, x, VKL_F32, buf, e) || vkl_tensor_upload(f->ctx, t[i], buf, VKL_F32, e);
        free(buf);
    }
    vkl_st_close(sf);
    return rc;
}

int vkl_full_net_save_state(const vkl_full_net *f, const char *dir, vkl_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if (save_set(f, f->params, path, e)) return -1;
    if (!f->ema) return 0;
    snprintf(path, sizeof path, "%s/ema.safetensors", dir);
    return save_set(f, f->ema, path, e);
}

int vkl_full_net_load_state(vkl_full_net *f, const char *dir, vkl_err *e)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if (load_set(f, f->params, path, e)) return -1;
    if (!f->ema) return 0;
    snprintf(path, sizeof path, "%s/ema.safetensors", dir);
    return load_set(f, f->ema, path, e);
}
