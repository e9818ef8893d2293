#include "lora/lora_init.h"

#include "sd/rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int vkl_lora_select_unet_attention(void *user, const char *module, int ndim, const int64_t *shape)
{
    (void)user;
    (void)shape;
    return ndim == 2 && !strncmp(module, "unet.", 5) && strstr(module, ".transformer_blocks.") &&
           (strstr(module, ".attn1.to_") || strstr(module, ".attn2.to_"));
}

/* U(-b, b) from a standard normal z: erf(z / sqrt 2) is uniform in (-1, 1). */
static float uniform(uint64_t seed, uint64_t stream, uint64_t k, float b)
{
    return b * (float)erf(vkl_rng_normal_at(seed, stream, k) / sqrt(2.0));
}

int vkl_lora_init_sd(const vkl_sd_config *cfg, vkl_lora_select_fn select, void *user, int rank, float alpha,
                     uint64_t seed, int random_up, vkl_lora *l, vkl_err *e)
{
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    memset(l, 0, sizeof *l);
    if (vkl_lora_targets_from_sd(cfg, &tg, e)) return -1;
    int rc = -1;
    uint64_t stream = 0x10a10000ull;
    for (int i = 0; i < tg.n; i++) {
        const vkl_lora_target *t = &tg.v[i];
        if ((t->ndim != 2 && t->ndim != 4) || !select(user, t->name, t->ndim, t->shape)) continue;
        vkl_lora_module *m = vkl_lora_add_module(l, e);
        if (!m) goto done;
        m->name = strdup(t->name);
        m->kname = strdup(t->kname);
        m->source = strdup(t->kname);
        m->kind = VKL_LORA_KIND_LORA;
        m->alpha = alpha;
        m->has_alpha = 1;
        m->alpha_dtype = VKL_F32;
        int64_t in = t->shape[1], out = t->shape[0], r = rank;
        int64_t kh = t->ndim == 4 ? t->shape[2] : 1, kw = t->ndim == 4 ? t->shape[3] : 1;
        int64_t ds[4] = {r, in, kh, kw}, us[4] = {out, r, 1, 1};
        float *down = vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], t->ndim, ds, e);
        float *up = down ? vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], t->ndim, us, e) : NULL;
        if (!up || !m->name || !m->kname || !m->source) goto done;
        m->t[VKL_LORA_DOWN].dtype = m->t[VKL_LORA_UP].dtype = VKL_F32;
        float bound = 1.0f / sqrtf((float)(in * kh * kw));
        for (int64_t k = 0; k < r * in * kh * kw; k++) down[k] = uniform(seed, stream, (uint64_t)k, bound);
        if (random_up)
            for (int64_t k = 0; k < out * r; k++) up[k] = uniform(seed, stream + 1, (uint64_t)k, 1.0f / sqrtf((float)r));
        stream += 2;
        if (vkl_lora_module_finish(m, t, e)) goto done;
    }
    if (!l->n) {
        vkl_fail(e, "no layer of the model was selected for adapters");
        goto done;
    }
    rc = 0;
done:
    vkl_lora_targets_free(&tg);
    return rc;
}
