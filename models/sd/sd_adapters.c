#include "sd/sd_adapters.h"

#include "lora/lora_dylora.h"
#include "lora/lora_merge_weights.h"

#include <string.h>

/* The networks (VKL_SD_PART_*) a lowvram model must keep on the device for
 * these adapters: those merged into (re-reading the file would undo the
 * merge), and at run time those with DoRA modules (the adapter set reads
 * their weights again when a multiplier changes). */
static int parts_to_pin(const vkl_sd_adapters *a, int merge)
{
    int parts = 0;
    for (int i = 0; i < a->n; i++)
        for (int k = 0; k < a->lora[i].n; k++) {
            const vkl_lora_module *mod = &a->lora[i].m[k];
            if (merge || mod->kind == VKL_LORA_KIND_DORA)
                parts |= strncmp(mod->name, "text_encoder", 12) ? VKL_SD_PART_UNET : VKL_SD_PART_TE;
        }
    return parts;
}

int vkl_sd_adapters_apply(vkl_sd_model *m, const char *const *paths, const float *unet_mult, const float *te_mult,
                          int n, int merge, vkl_sd_adapters *a, vkl_err *e)
{
    return vkl_sd_adapters_apply_ex(m, paths, unet_mult, te_mult, n, merge, 0, a, e);
}

int vkl_sd_adapters_apply_ex(vkl_sd_model *m, const char *const *paths, const float *unet_mult, const float *te_mult,
                             int n, int merge, int rank_at, vkl_sd_adapters *a, vkl_err *e)
{
    memset(a, 0, sizeof *a);
    a->m = m;
    if (n < 0 || n > VKL_SD_MAX_ADAPTERS) return vkl_fail(e, "at most %d adapters at once", VKL_SD_MAX_ADAPTERS);
    if (!n) return 0;
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    if (vkl_lora_targets_from_sd(m->cfg, &tg, e)) return -1;
    int rc = 0;
    for (; a->n < n && !rc; a->n++) {
        vkl_lora_opts lo = {&tg, 0, NULL, 0};
        rc = vkl_lora_load(paths[a->n], &lo, &a->lora[a->n], e);
        if (rc) break;
        if (rank_at && vkl_dylora_cut(&a->lora[a->n], rank_at, e)) {
            vkl_err_prefix(e, "%s: --rank-at-inference %d: ", paths[a->n], rank_at);
            vkl_lora_free(&a->lora[a->n]);
            rc = -1;
            break;
        }
        a->use[a->n] = (vkl_lora_use){&a->lora[a->n], unet_mult[a->n], te_mult[a->n]};
    }
    vkl_lora_targets_free(&tg);
    if (rc) return -1;
    if (merge) {
        if (vkl_sd_model_pin(m, parts_to_pin(a, 1), e) || vkl_lora_merge_weights(m->ctx, m->w, a->use, a->n, e))
            return -1;
        a->merged = 1;
        return 0;
    }
    if (vkl_sd_model_pin(m, parts_to_pin(a, 0), e) || vkl_lora_set_build_ex(m->ctx, a->use, a->n, m->w, &a->set, e))
        return -1;
    m->unet.lora = a->set;
    m->te.lora = a->set;
    m->te2.lora = a->set; /* SDXL's text_encoder_2 modules; unused otherwise */
    return 0;
}

int vkl_sd_adapters_set_weight(vkl_sd_adapters *a, int i, float unet_mult, float te_mult, vkl_err *e)
{
    if (a->merged) return vkl_fail(e, "merged adapters cannot change weight");
    if (i < 0 || i >= a->n) return vkl_fail(e, "no adapter %d (%d applied)", i, a->n);
    a->use[i].unet_mult = unet_mult;
    a->use[i].te_mult = te_mult;
    return vkl_lora_set_multipliers(a->set, a->use, a->n, e);
}

void vkl_sd_adapters_free(vkl_sd_adapters *a)
{
    if (a->m && a->set) {
        a->m->unet.lora = NULL;
        a->m->te.lora = NULL;
        a->m->te2.lora = NULL;
    }
    vkl_lora_set_free(a->set);
    for (int i = 0; i < a->n; i++) vkl_lora_free(&a->lora[i]);
    memset(a, 0, sizeof *a);
}
