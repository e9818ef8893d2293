/* Fresh PEFT-style LoRA / DoRA adapters for a LLaMA (llama_lora_init.h). */
#include "llama/llama_lora_init.h"

#include "lora/lora_init.h"
#include "rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const PROJ[] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                   "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};
#define N_PROJ 7

static int ends_dotted(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a > b && !strcmp(s + a - b, suffix) && s[a - b - 1] == '.';
}

/* One module: A uniform from its own RNG stream (so a module's values do not
 * depend on which other targets were chosen), B zero, DoRA magnitude allocated. */
static int add_module(vkl_lora *l, const char *name, const vkl_tensor *w, const vkl_llama_lora_opts *o,
                      uint64_t stream, vkl_err *e)
{
    vkl_lora_module *mo = vkl_lora_add_module(l, e);
    if (!mo) return -1;
    mo->name = strdup(name);
    mo->source = strdup(name);
    mo->kname = malloc(strlen(name) + 16);
    if (!mo->name || !mo->source || !mo->kname) return vkl_fail(e, "out of host memory");
    if (vkl_lora_kohya_name(name, 0, mo->kname, strlen(name) + 16)) return vkl_fail(e, "module name too long: %s", name);
    int64_t out = w->shape[0], in = w->shape[1], r = o->rank;
    float *a = vkl_lora_tensor_alloc(&mo->t[VKL_LORA_DOWN], 2, (int64_t[]){r, in}, e);
    float *b = a ? vkl_lora_tensor_alloc(&mo->t[VKL_LORA_UP], 2, (int64_t[]){out, r}, e) : NULL;
    float *g = b && o->dora ? vkl_lora_tensor_alloc(&mo->t[VKL_LORA_MAG], 1, &out, e) : b;
    if (!g) return -1;
    mo->t[VKL_LORA_DOWN].dtype = mo->t[VKL_LORA_UP].dtype = mo->t[VKL_LORA_MAG].dtype = VKL_F32;
    float bound = 1.0f / sqrtf((float)in);
    /* U(-b, b) from a standard normal z: erf(z / sqrt 2) is uniform in (-1, 1) */
    for (int64_t i = 0; i < r * in; i++) a[i] = bound * (float)erf(vkl_rng_normal_at(o->seed, stream, (uint64_t)i) / sqrt(2.0));
    mo->alpha = o->alpha;
    mo->has_alpha = 1;
    mo->alpha_dtype = VKL_F32;
    vkl_lora_target t = {.name = (char *)name, .kname = mo->kname, .ndim = 2, .shape = {out, in}};
    if (vkl_lora_module_finish(mo, &t, e)) return -1;
    if (o->rslora) mo->scale = o->alpha / sqrt((double)o->rank);
    return 0;
}

int vkl_llama_lora_init(const vkl_llama *m, const vkl_llama_lora_opts *o, vkl_lora *out, vkl_err *e)
{
    static const char *const def[] = {"q_proj", "v_proj"};
    const char *const *targets = o->targets ? o->targets : def;
    int nt = o->targets ? o->nt : 2;
    memset(out, 0, sizeof *out);
    if (o->rank < 1) return vkl_fail(e, "LoRA rank %d: must be at least 1", o->rank);
    out->format = VKL_LORA_FMT_PEFT;
    out->has_config = 1;
    out->rslora = o->rslora;
    int rc = 0;
    for (int l = 0; l < m->cfg.layers && !rc; l++)
        for (int p = 0; p < N_PROJ && !rc; p++) {
            char name[96], wn[128];
            snprintf(name, sizeof name, "model.layers.%d.%s", l, PROJ[p]);
            int t = 0;
            for (int i = 0; i < nt; i++) t |= ends_dotted(name, targets[i]);
            if (!t) continue;
            snprintf(wn, sizeof wn, "%s.weight", name);
            const vkl_tensor *w = vkl_weights_find(m->w, wn);
            if (!w || w->ndim != 2) rc = vkl_fail(e, "the model has no matrix %s", wn);
            else rc = add_module(out, name, w, o, 0x11a40000ull + (uint64_t)(l * N_PROJ + p), e);
        }
    if (!rc && !out->n) rc = vkl_fail(e, "no projection of the model matches the LoRA target modules");
    if (!rc && o->dora) rc = vkl_lora_init_dora_magnitude(m->ctx, m->w, out, e);
    if (rc) vkl_lora_free(out);
    return rc;
}

int vkl_llama_lora_check(const vkl_llama *m, const vkl_lora *l, const char *what, vkl_err *e)
{
    int bad = 0, first = -1;
    for (int i = 0; i < l->n; i++) {
        const vkl_lora_module *mo = &l->m[i];
        int proj = 0;
        for (int k = 0; k < N_PROJ && mo->name; k++)
            proj |= ends_dotted(mo->name, PROJ[k]) && !strncmp(mo->name, "model.layers.", 13);
        char wn[300];
        snprintf(wn, sizeof wn, "%s.weight", mo->name ? mo->name : "");
        const vkl_tensor *w = proj ? vkl_weights_find(m->w, wn) : NULL;
        if (!w) {
            if (first < 0) first = i;
            bad++;
            continue;
        }
        /* the factors' shape against the weight's (IA3 knows one axis only) */
        if (mo->wndim == 2 && ((mo->wshape[0] && mo->wshape[0] != w->shape[0]) ||
                               (mo->wshape[1] && mo->wshape[1] != w->shape[1])))
            return vkl_fail(e, "%s: module %s changes a [%lld, %lld] weight but the model's %s is [%lld, %lld] "
                               "(an adapter for another size of model)", what, mo->name, (long long)mo->wshape[0],
                            (long long)mo->wshape[1], wn, (long long)w->shape[0], (long long)w->shape[1]);
    }
    if (bad)
        return vkl_fail(e, "%s: %d of its %d modules match no projection of this model (e.g. %s); it was made for "
                           "another model", what, bad, l->n, vkl_lora_module_label(&l->m[first]));
    return 0;
}
