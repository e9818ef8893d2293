/* Run-time PEFT adapters of a LLaMA by kind (lm_adapters.h). */
#include "lm_adapters.h"

#include <stdlib.h>
#include <string.h>

vkl_app_lm_kind vkl_app_lm_adapter_kind(const vkl_lora *l)
{
    if (l->n > 0 && l->m[0].kind == VKL_LORA_KIND_IA3) return VKL_APP_LM_IA3;
    for (int k = 0; k < l->n; k++)
        if (l->m[k].kind == VKL_LORA_KIND_DORA) return VKL_APP_LM_DORA;
    return VKL_APP_LM_LORA;
}

const char *vkl_app_lm_kind_name(vkl_app_lm_kind k)
{
    return k == VKL_APP_LM_IA3 ? "IA3" : k == VKL_APP_LM_DORA ? "DoRA" : "LoRA";
}

int vkl_app_lm_adapters_build(const vkl_llama *m, const vkl_lora_use *uses, int n, vkl_app_lm_adapters *out,
                              vkl_err *e)
{
    memset(out, 0, sizeof *out);
    int is_dora = 0, nia3 = 0, nother = 0;
    vkl_lora_use *ia3 = malloc(sizeof *ia3 * (size_t)(2 * n + 1)), *other = ia3 ? ia3 + n : NULL;
    if (!ia3) return vkl_fail(e, "out of host memory");
    for (int i = 0; i < n; i++) {
        vkl_app_lm_kind k = vkl_app_lm_adapter_kind(uses[i].lora);
        is_dora |= k == VKL_APP_LM_DORA;
        if (k == VKL_APP_LM_IA3) ia3[nia3++] = uses[i];
        else other[nother++] = uses[i];
    }
    int rc = is_dora && nother > 1 ? vkl_fail(e, "a DoRA adapter cannot be combined with other adapters") : 0;
    if (!rc && nia3) rc = vkl_llama_ia3_build(m, ia3, nia3, &out->ia3, e);
    if (!rc && is_dora) rc = vkl_llama_dora_build(m, other[0].lora, other[0].unet_mult, &out->dora, e);
    else if (!rc && nother) rc = vkl_lora_set_build(m->ctx, other, nother, &out->set, e);
    free(ia3);
    if (rc) vkl_app_lm_adapters_free(out);
    return rc;
}

void vkl_app_lm_adapters_free(vkl_app_lm_adapters *a)
{
    vkl_lora_set_free(a->set);
    vkl_llama_dora_free(a->dora);
    vkl_llama_ia3_free(a->ia3);
    memset(a, 0, sizeof *a);
}
