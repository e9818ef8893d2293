/* The HyperLoRA network: its parameters, the emitting graph and the
 * training graph (hyperlora.h). Saving and loading: hyperlora_file.c. */
#include "lora/hyperlora_internal.h"

#include "ops.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const PARAM_NAMES[VKL_HYPERLORA_PARAMS] = {"hyper.w1", "hyper.b1", "hyper.w2", "hyper.b2"};
const char *vkl_hyperlora_param_name(int i) { return i >= 0 && i < VKL_HYPERLORA_PARAMS ? PARAM_NAMES[i] : NULL; }

void vkl_hyperlora_free(vkl_hyperlora *h)
{
    if (!h) return;
    vkl_graph_free(h->train);
    vkl_adamw_free(h->opt);
    vkl_graph_free(h->fwd);
    for (int i = 0; i < VKL_HYPERLORA_PARAMS; i++) vkl_tensor_free(h->p[i]);
    vkl_tensor_free(h->cond);
    vkl_tensor_free(h->dout);
    free(h->off);
    free(h->mean);
    free(h->cbuf);
    free(h);
}

/* The layout of o: per module its down then its up factor. */
static int layout(vkl_hyperlora *h, vkl_err *e)
{
    const vkl_lora *l = h->tmpl;
    if (l->n < 1) return vkl_fail(e, "hypernetwork: the template adapter has no module");
    h->off = calloc((size_t)l->n * 2 + 1, sizeof *h->off);
    if (!h->off) return vkl_fail(e, "out of host memory");
    int64_t p = 0;
    for (int k = 0; k < l->n; k++) {
        const vkl_lora_module *m = &l->m[k];
        if (m->kind != VKL_LORA_KIND_LORA || !m->t[VKL_LORA_DOWN].data || !m->t[VKL_LORA_UP].data ||
            m->t[VKL_LORA_MID].data)
            return vkl_fail(e, "hypernetwork: module %s is not a plain LoRA module", vkl_lora_module_label(m));
        h->off[2 * k] = p;
        p += (int64_t)vkl_lora_tensor_nelem(&m->t[VKL_LORA_DOWN]);
        h->off[2 * k + 1] = p;
        p += (int64_t)vkl_lora_tensor_nelem(&m->t[VKL_LORA_UP]);
    }
    h->off[2 * l->n] = p;
    h->P = p;
    return 0;
}

/* o = W2 tanh(W1 c + b1) + b2 appended to g; c is the device input [1, D]. */
static vkl_tensor *mlp(vkl_graph *g, vkl_hyperlora *h)
{
    vkl_tensor *z = vkl_linear(g, h->cond, h->p[0], h->p[1]);
    vkl_tensor *a = vkl_unary(g, z, VKL_UNARY_TANH, 1.0f, 0.0f);
    return vkl_linear(g, a, h->p[2], h->p[3]);
}

int vkl_hyperlora_alloc(vkl_ctx *c, const vkl_lora *tmpl, int D, int H, vkl_hyperlora **out, vkl_err *e)
{
    *out = NULL;
    if (D < 1 || H < 1 || H > 65536) return vkl_fail(e, "hypernetwork: condition size %d, hidden %d", D, H);
    vkl_hyperlora *h = calloc(1, sizeof *h);
    if (!h) return vkl_fail(e, "out of host memory");
    h->c = c;
    h->tmpl = tmpl;
    h->D = D;
    h->H = H;
    h->scale = 1.0f;
    h->mean = calloc((size_t)D, sizeof *h->mean);
    h->cbuf = malloc(sizeof(float) * (size_t)D);
    int rc = !h->mean || !h->cbuf ? vkl_fail(e, "out of host memory") : layout(h, e);
    const int64_t shapes[VKL_HYPERLORA_PARAMS][2] = {{H, D}, {H, 0}, {h->P, H}, {h->P, 0}};
    for (int i = 0; !rc && i < VKL_HYPERLORA_PARAMS; i++)
        if (!(h->p[i] = vkl_tensor_new(c, VKL_F32, shapes[i][1] ? 2 : 1, shapes[i], e))) rc = -1;
    if (!rc && (!(h->cond = vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){1, D}, e)) ||
                !(h->dout = vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){1, h->P}, e))))
        rc = -1;
    if (!rc) {
        h->fwd = vkl_graph_new(c);
        h->out = mlp(h->fwd, h);
        vkl_graph_keep(h->fwd, h->out);
        if (vkl_graph_failed(h->fwd)) rc = vkl_fail(e, "hypernetwork graph: %s", vkl_graph_error(h->fwd));
        else rc = vkl_graph_plan(h->fwd, e);
    }
    if (rc) {
        vkl_hyperlora_free(h);
        return -1;
    }
    *out = h;
    return 0;
}

int vkl_hyperlora_new(vkl_ctx *c, const vkl_lora *tmpl, int D, int H, uint64_t seed, vkl_hyperlora **out, vkl_err *e)
{
    vkl_hyperlora *h;
    if (vkl_hyperlora_alloc(c, tmpl, D, H, &h, e)) return -1;
    size_t n1 = (size_t)H * D, n2 = (size_t)h->P * H;
    size_t big = n1 > n2 ? n1 : n2;
    float *buf = calloc(big > (size_t)h->P ? big : (size_t)h->P, sizeof *buf);
    int rc = buf ? 0 : vkl_fail(e, "out of host memory");
    /* W1 ~ N(0, 1/D): tanh's input has unit spread for a unit-spread (centred, scaled) condition */
    for (size_t i = 0; !rc && i < n1; i++) buf[i] = vkl_rng_normal_at(seed, 0x6879706572ull, i) / sqrtf((float)D);
    rc = rc || vkl_tensor_upload(c, h->p[0], buf, VKL_F32, e);
    if (!rc) memset(buf, 0, sizeof(float) * big);
    rc = rc || vkl_tensor_upload(c, h->p[1], buf, VKL_F32, e) || vkl_tensor_upload(c, h->p[2], buf, VKL_F32, e);
    for (int k = 0; !rc && k < tmpl->n; k++)
        for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++) {
            int64_t o = vkl_hyperlora_offset(h, k, r);
            memcpy(buf + o, tmpl->m[k].t[r].data, sizeof(float) * (size_t)vkl_lora_tensor_nelem(&tmpl->m[k].t[r]));
        }
    rc = rc || vkl_tensor_upload(c, h->p[3], buf, VKL_F32, e);
    free(buf);
    if (rc) {
        vkl_hyperlora_free(h);
        return -1;
    }
    *out = h;
    return 0;
}

int vkl_hyperlora_set_centre(vkl_hyperlora *h, const float *mean, float scale, vkl_err *e)
{
    if (!(scale > 0) || !isfinite(scale)) return vkl_fail(e, "hypernetwork: condition scale %g", (double)scale);
    for (int i = 0; i < h->D; i++)
        if (!isfinite(mean[i])) return vkl_fail(e, "hypernetwork: condition centre [%d] is not finite", i);
    memcpy(h->mean, mean, sizeof(float) * (size_t)h->D);
    h->scale = scale;
    return 0;
}

void vkl_hyperlora_centre_of(const float *conds, int n, int D, float *mean, float *scale)
{
    double ss = 0;
    for (int d = 0; d < D; d++) {
        double s = 0;
        for (int i = 0; i < n; i++) s += conds[(size_t)i * D + d];
        mean[d] = (float)(s / n);
        for (int i = 0; i < n; i++) {
            double x = conds[(size_t)i * D + d] - mean[d];
            ss += x * x;
        }
    }
    /* the mean squared distance per condition, spread over D: each centred
     * component then has about unit size, as W1's N(0, 1/D) expects */
    double rms = sqrt(ss / ((double)n * D));
    *scale = rms > 1e-12 ? (float)rms : 1.0f;
}

int64_t vkl_hyperlora_outputs(const vkl_hyperlora *h) { return h->P; }

int64_t vkl_hyperlora_offset(const vkl_hyperlora *h, int module, int role)
{
    if (module < 0 || module >= h->tmpl->n || (role != VKL_LORA_DOWN && role != VKL_LORA_UP)) return -1;
    return h->off[2 * module + (role == VKL_LORA_UP)];
}

static int upload_cond(vkl_hyperlora *h, const float *cond, vkl_err *e)
{
    for (int i = 0; i < h->D; i++) {
        if (!isfinite(cond[i])) return vkl_fail(e, "hypernetwork: condition [%d] is not finite", i);
        h->cbuf[i] = (cond[i] - h->mean[i]) / h->scale;
    }
    return vkl_tensor_upload(h->c, h->cond, h->cbuf, VKL_F32, e);
}

int vkl_hyperlora_emit(vkl_hyperlora *h, const float *cond, float *out, vkl_lora *l, vkl_err *e)
{
    if (upload_cond(h, cond, e) || vkl_graph_run(h->fwd, e)) return -1;
    float *o = out ? out : malloc(sizeof(float) * (size_t)h->P);
    if (!o) return vkl_fail(e, "out of host memory");
    int rc = vkl_tensor_download(h->c, h->out, o, VKL_F32, e);
    for (int k = 0; !rc && l && k < l->n; k++)
        for (int r = VKL_LORA_DOWN; r <= VKL_LORA_UP; r++) {
            int64_t n = (int64_t)vkl_lora_tensor_nelem(&l->m[k].t[r]);
            if (k >= h->tmpl->n || !l->m[k].t[r].data || h->off[2 * k + r + 1] - h->off[2 * k + r] != n) {
                rc = vkl_fail(e, "hypernetwork: adapter module %d is not shaped as the network's", k);
                break;
            }
            memcpy(l->m[k].t[r].data, o + h->off[2 * k + r], sizeof(float) * (size_t)n);
        }
    if (!out) free(o);
    return rc;
}

int vkl_hyperlora_train_begin(vkl_hyperlora *h, const vkl_adamw_opts *o, vkl_err *e)
{
    if (h->train) return vkl_fail(e, "hypernetwork: training already begun");
    if (!(h->opt = vkl_adamw_new(h->c, h->p, VKL_HYPERLORA_PARAMS, NULL, o, e))) return -1;
    h->train = vkl_graph_new(h->c);
    vkl_tensor *out = mlp(h->train, h);
    if (vkl_graph_failed(h->train)) return vkl_fail(e, "hypernetwork graph: %s", vkl_graph_error(h->train));
    /* the seed is dL/do: the backward pass is then dL/d(parameters) by the chain rule */
    if (vkl_graph_backward(h->train, out, h->dout, h->p, VKL_HYPERLORA_PARAMS, h->g, e)) return -1;
    for (int i = 0; i < VKL_HYPERLORA_PARAMS; i++) {
        if (!h->g[i]) return vkl_fail(e, "hypernetwork: no gradient for %s", PARAM_NAMES[i]);
        vkl_graph_keep(h->train, h->g[i]);
    }
    return vkl_adamw_append(h->opt, h->train, h->g, e) || vkl_graph_plan(h->train, e) ? -1 : 0;
}

int vkl_hyperlora_train_step(vkl_hyperlora *h, const float *cond, const float *dout, int t, float lr, vkl_err *e)
{
    if (!h->train) return vkl_fail(e, "hypernetwork: training not begun");
    for (int64_t i = 0; i < h->P; i++)
        if (!isfinite(dout[i])) return vkl_fail(e, "hypernetwork: the adapter's gradient [%lld] is not finite", (long long)i);
    return upload_cond(h, cond, e) || vkl_tensor_upload(h->c, h->dout, dout, VKL_F32, e) ||
                   vkl_adamw_prepare(h->opt, t, lr, e) || vkl_graph_run(h->train, e)
               ? -1
               : 0;
}

vkl_tensor *vkl_hyperlora_param(const vkl_hyperlora *h, int i) { return i >= 0 && i < VKL_HYPERLORA_PARAMS ? h->p[i] : NULL; }
vkl_tensor *vkl_hyperlora_grad(const vkl_hyperlora *h, int i) { return i >= 0 && i < VKL_HYPERLORA_PARAMS ? h->g[i] : NULL; }
