/* (IA)^3 vectors of a LLaMA (llama.h): built from PEFT IA3 adapters, made
 * fresh (ones, as PEFT initialises them) for training, and read back for
 * saving. The forward applies them in llama_forward.c. */
#include "llama/llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PROJ[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                   "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
#define N_PROJ 7

void vkl_llama_ia3_free(vkl_llama_ia3 *d)
{
    if (!d) return;
    for (int i = 0; i < d->n; i++) {
        free(d->v[i].module);
        vkl_tensor_free(d->v[i].vec);
    }
    free(d->v);
    free(d);
}

/* The model's weight of an IA3 module, checked against the vector. */
static const vkl_tensor *weight_for(const vkl_llama *m, const vkl_lora_module *mo, vkl_err *e)
{
    if (mo->kind != VKL_LORA_KIND_IA3 || !mo->name) {
        vkl_fail(e, "adapter module %s is not an IA3 module (an IA3 adapter cannot be mixed with other kinds)",
                 vkl_lora_module_label(mo));
        return NULL;
    }
    char wn[256];
    snprintf(wn, sizeof wn, "%s.weight", mo->name);
    const vkl_tensor *w = vkl_weights_find(m->w, wn);
    int is_proj = 0;
    for (int k = 0; k < N_PROJ && w; k++) {
        size_t a = strlen(mo->name), b = strlen(PROJ[k]);
        is_proj |= a > b && !strcmp(mo->name + a - b, PROJ[k]) && !strncmp(mo->name, "model.layers.", 13);
    }
    if (!w || !is_proj) {
        vkl_fail(e, "IA3 module %s is not a projection of the model", mo->name);
        return NULL;
    }
    int64_t want = mo->on_input ? w->shape[1] : w->shape[0];
    if ((int64_t)vkl_lora_tensor_nelem(&mo->t[VKL_LORA_IA3]) != want) {
        vkl_fail(e, "IA3 module %s has %llu elements but %s has %lld %s", mo->name,
                 (unsigned long long)vkl_lora_tensor_nelem(&mo->t[VKL_LORA_IA3]), wn, (long long)want,
                 mo->on_input ? "inputs" : "outputs");
        return NULL;
    }
    return w;
}

int vkl_llama_ia3_build(const vkl_llama *m, const vkl_lora_use *uses, int n, vkl_llama_ia3 **out, vkl_err *e)
{
    *out = NULL;
    int cap = 1;
    for (int i = 0; i < n; i++) cap += uses[i].lora->n;
    vkl_llama_ia3 *d = calloc(1, sizeof *d);
    if (d) d->v = calloc((size_t)cap, sizeof *d->v);
    if (!d || !d->v) {
        free(d);
        return vkl_fail(e, "out of host memory");
    }
    int rc = 0;
    float *h = NULL;
    for (int i = 0; i < n && !rc; i++)
        for (int k = 0; k < uses[i].lora->n && !rc; k++) {
            const vkl_lora_module *mo = &uses[i].lora->m[k];
            if (!weight_for(m, mo, e)) {
                rc = -1;
                break;
            }
            int seen = 0;
            for (int j = 0; j < d->n && !seen; j++) seen = !strcmp(d->v[j].module, mo->name);
            if (seen) continue;
            vkl_llama_ia3_mod *x = &d->v[d->n++];
            x->module = strdup(mo->name);
            x->on_input = mo->on_input;
            int64_t len = (int64_t)vkl_lora_tensor_nelem(&mo->t[VKL_LORA_IA3]);
            free(h);
            h = malloc(sizeof(float) * (size_t)len);
            if (!x->module || !h) {
                rc = vkl_fail(e, "out of host memory");
                break;
            }
            for (int64_t q = 0; q < len; q++) h[q] = 1.0f;
            /* every adapter that has the module, from this one on */
            for (int a = i; a < n && !rc; a++) {
                const vkl_lora_module *o = a == i ? mo : vkl_lora_find(uses[a].lora, mo->name);
                if (!o) continue;
                if (a != i && o->on_input != mo->on_input)
                    rc = vkl_fail(e, "IA3 module %s scales the input in one adapter and the output in another",
                                  mo->name);
                if (rc || (a != i && !weight_for(m, o, e))) {
                    rc = -1;
                    break;
                }
                double mult = uses[a].unet_mult;
                const float *l = o->t[VKL_LORA_IA3].data;
                for (int64_t q = 0; q < len; q++)
                    h[q] *= mult == 1.0 ? l[q] : (float)(1.0 + mult * ((double)l[q] - 1.0));
            }
            if (rc) break;
            x->vec = vkl_tensor_new(m->ctx, VKL_F32, 1, &len, e);
            if (!x->vec || vkl_tensor_upload(m->ctx, x->vec, h, VKL_F32, e)) rc = -1;
        }
    free(h);
    if (rc) {
        vkl_llama_ia3_free(d);
        return -1;
    }
    *out = d;
    return 0;
}

static int ends_dotted(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a > b && !strcmp(s + a - b, suffix) && s[a - b - 1] == '.';
}

int vkl_llama_ia3_init(const vkl_llama *m, const char *const *targets, int nt, const char *const *feedforward, int nf,
                       vkl_lora *out, vkl_err *e)
{
    static const char *const def_t[] = {"k_proj", "v_proj", "down_proj"}, *const def_f[] = {"down_proj"};
    if (!targets) {
        targets = def_t;
        nt = 3;
        feedforward = def_f;
        nf = 1;
    }
    memset(out, 0, sizeof *out);
    out->format = VKL_LORA_FMT_PEFT;
    out->has_config = 1;
    int rc = 0;
    for (int l = 0; l < m->cfg.layers && !rc; l++)
        for (int p = 0; p < N_PROJ && !rc; p++) {
            char name[96], wn[128];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, PROJ[p]);
            int t = 0, f = 0;
            for (int i = 0; i < nt; i++) t |= ends_dotted(name, targets[i]);
            for (int i = 0; i < nf; i++) f |= ends_dotted(name, feedforward[i]);
            if (!t) continue;
            snprintf(wn, sizeof wn, "%s.weight", name);
            const vkl_tensor *w = vkl_weights_find(m->w, wn);
            vkl_lora_module *mo = w ? vkl_lora_add_module(out, e) : NULL;
            if (!mo) {
                rc = w ? -1 : vkl_fail(e, "the model has no weight %s", wn);
                break;
            }
            mo->name = strdup(name);
            mo->source = strdup(name);
            mo->kname = malloc(sizeof name + 16);
            mo->kind = VKL_LORA_KIND_IA3;
            mo->scale = 1;
            mo->on_input = f;
            mo->wndim = 2;
            mo->wshape[0] = w->shape[0];
            mo->wshape[1] = w->shape[1];
            int64_t shape[2] = {f ? 1 : w->shape[0], f ? w->shape[1] : 1};
            float *v = mo->name && mo->source && mo->kname
                           ? vkl_lora_tensor_alloc(&mo->t[VKL_LORA_IA3], 2, shape, e)
                           : (vkl_fail(e, "out of host memory"), NULL);
            if (!v || vkl_lora_kohya_name(name, 0, mo->kname, sizeof name + 16)) {
                rc = v ? vkl_fail(e, "module name too long: %s", name) : -1;
                break;
            }
            for (int64_t q = 0; q < shape[0] * shape[1]; q++) v[q] = 1.0f;
        }
    if (!rc && !out->n) rc = vkl_fail(e, "no projection of the model matches the IA3 target modules");
    if (rc) vkl_lora_free(out);
    return rc;
}

int vkl_llama_ia3_store(const vkl_llama *m, const vkl_llama_ia3 *d, vkl_lora *l, vkl_err *e)
{
    for (int i = 0; i < d->n; i++) {
        const vkl_llama_ia3_mod *x = &d->v[i];
        vkl_lora_module *mo = NULL;
        for (int k = 0; k < l->n && !mo; k++)
            if (l->m[k].name && !strcmp(l->m[k].name, x->module)) mo = &l->m[k];
        if (!mo || mo->kind != VKL_LORA_KIND_IA3 || mo->on_input != x->on_input ||
            (int64_t)vkl_lora_tensor_nelem(&mo->t[VKL_LORA_IA3]) != vkl_tensor_nelem(x->vec))
            return vkl_fail(e, "the adapter has no IA3 module %s of %lld elements to store into", x->module,
                            (long long)vkl_tensor_nelem(x->vec));
        if (vkl_tensor_download(m->ctx, x->vec, mo->t[VKL_LORA_IA3].data, VKL_F32, e))
            return vkl_err_prefix(e, "IA3 module %s: ", x->module), -1;
    }
    return 0;
}
