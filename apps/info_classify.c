/* Guessing what a safetensors file holds from its tensor names: the naming
 * conventions of the tools that write them are distinctive enough that no
 * metadata is needed (most files carry none). */
#include "info.h"

#include <stdlib.h>
#include <string.h>

enum { F_KOHYA = 1, F_PEFT = 2, F_DIFFUSERS = 4, F_LOHA = 8, F_LOKR = 16, F_IA3 = 32 };

typedef struct {
    char **mods;
    int nmods, cap;
    int oom;
} module_set;

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static void add_module(module_set *ms, const char *name, size_t len)
{
    if (ms->oom) return;
    if (ms->nmods == ms->cap) {
        int cap = ms->cap ? ms->cap * 2 : 256;
        char **m = realloc(ms->mods, (size_t)cap * sizeof *m);
        if (!m) {
            ms->oom = 1;
            return;
        }
        ms->mods = m;
        ms->cap = cap;
    }
    char *s = malloc(len + 1);
    if (!s) {
        ms->oom = 1;
        return;
    }
    memcpy(s, name, len);
    s[len] = 0;
    ms->mods[ms->nmods++] = s;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void add_rank(vkl_info_class *c, int r)
{
    for (int i = 0; i < c->nranks; i++)
        if (c->ranks[i] == r) return;
    if (c->nranks == VKL_INFO_MAX_LIST) {
        c->too_many_ranks = 1;
        return;
    }
    int i = c->nranks++;
    while (i > 0 && c->ranks[i - 1] > r) {
        c->ranks[i] = c->ranks[i - 1];
        i--;
    }
    c->ranks[i] = r;
}

static void add_alpha(vkl_info_class *c, float a)
{
    for (int i = 0; i < c->nalphas; i++)
        if (c->alphas[i] == a) return;
    if (c->nalphas == VKL_INFO_MAX_LIST) {
        c->too_many_alphas = 1;
        return;
    }
    int i = c->nalphas++;
    while (i > 0 && c->alphas[i - 1] > a) {
        c->alphas[i] = c->alphas[i - 1];
        i--;
    }
    c->alphas[i] = a;
}

/* kohya and LyCORIS: lora_unet_<module>.<part>, lora_te[12]_<module>.<part>.
 * Returns 1 when t is one of theirs, 0 when not, -1 on error. */
static int kohya_tensor(const vkl_st_file *f, const vkl_st_tensor *t, vkl_info_class *c, module_set *ms,
                        int *flags, vkl_err *e)
{
    const char *n = t->name;
    if (!starts(n, "lora_unet_") && !starts(n, "lora_te")) return 0;
    const char *dot = strchr(n, '.');
    if (!dot) return 0;
    const char *part = dot + 1;
    if (!strcmp(part, "lora_down.weight")) {
        *flags |= F_KOHYA;
        if (t->ndim >= 1) add_rank(c, (int)t->shape[0]);
    } else if (!strcmp(part, "lora_up.weight")) {
        *flags |= F_KOHYA;
    } else if (!strcmp(part, "alpha")) {
        float a;
        if (t->nelem == 1) {
            if (vkl_st_read(f, t, VKL_F32, &a, e)) return -1;
            add_alpha(c, a);
        }
    } else if (starts(part, "hada_")) {
        *flags |= F_LOHA;
        if (!strcmp(part, "hada_w1_b") && t->ndim >= 1) add_rank(c, (int)t->shape[0]);
    } else if (starts(part, "lokr_")) {
        *flags |= F_LOKR;
        if ((!strcmp(part, "lokr_w1_a") || !strcmp(part, "lokr_w2_a")) && t->ndim >= 2)
            add_rank(c, (int)t->shape[1]);
    } else if (!strcmp(part, "dora_scale")) {
        c->dora = 1;
    } else {
        return 0;
    }
    add_module(ms, n, (size_t)(dot - n));
    return 1;
}

/* PEFT (<module>.lora_A.weight) and the older diffusers attention-processor
 * names (<module>.lora.down.weight, <module>.lora_linear_layer.down.weight). */
static void peft_tensor(const vkl_st_tensor *t, vkl_info_class *c, module_set *ms, int *flags)
{
    static const struct {
        const char *mark;
        int flag, is_down;
    } marks[] = {
        {".lora_A.", F_PEFT, 1},
        {".lora_B.", F_PEFT, 0},
        {".lora_embedding_A", F_PEFT, 0}, /* stored [r, vocab] but transposed in some versions */
        {".lora_embedding_B", F_PEFT, 0},
        {".lora_magnitude_vector", F_PEFT, 0},
        {".ia3_l", F_IA3, 0},
        /* AdaLoRA holds its factors as parameters: <module>.lora_A, .lora_E, .lora_B */
        {".lora_A", F_PEFT, 1},
        {".lora_B", F_PEFT, 0},
        {".lora_E", F_PEFT, 0},
        {".lora_linear_layer.down.", F_DIFFUSERS, 1},
        {".lora_linear_layer.up.", F_DIFFUSERS, 0},
        {".lora.down.", F_DIFFUSERS, 1},
        {".lora.up.", F_DIFFUSERS, 0},
        {"_lora.down.", F_DIFFUSERS, 1},
        {"_lora.up.", F_DIFFUSERS, 0},
    };
    for (size_t i = 0; i < sizeof marks / sizeof *marks; i++) {
        const char *at = strstr(t->name, marks[i].mark);
        if (!at) continue;
        *flags |= marks[i].flag;
        if (marks[i].is_down && t->ndim >= 1) add_rank(c, (int)t->shape[0]);
        if (strstr(marks[i].mark, "magnitude")) c->dora = 1;
        if (marks[i].flag == F_IA3) c->ia3 = 1;
        add_module(ms, t->name, (size_t)(at - t->name));
        return;
    }
}

static void count_modules(module_set *ms, vkl_info_class *c)
{
    qsort(ms->mods, (size_t)ms->nmods, sizeof *ms->mods, str_cmp);
    for (int i = 0; i < ms->nmods; i++) {
        if (i && !strcmp(ms->mods[i], ms->mods[i - 1])) continue;
        const char *m = ms->mods[i];
        c->modules++;
        if (starts(m, "lora_unet_") || starts(m, "unet.")) c->unet_modules++;
        else if (starts(m, "lora_te") || starts(m, "text_encoder")) c->te_modules++;
    }
}

static void set_lora_format(vkl_info_class *c, int flags)
{
    static const struct {
        int flag;
        const char *name;
    } names[] = {{F_KOHYA, "kohya"},
                 {F_PEFT, "PEFT"},
                 {F_DIFFUSERS, "diffusers"},
                 {F_LOHA, "LyCORIS LoHa"},
                 {F_LOKR, "LyCORIS LoKr"},
                 {F_IA3, "PEFT IA3"}};
    c->format[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (!(flags & names[i].flag)) continue;
        if (c->format[0]) strcat(c->format, " + ");
        strcat(c->format, names[i].name);
    }
}

static void classify_model(const vkl_st_file *f, vkl_info_class *c)
{
    int sdxl = 0, sd2 = 0, sd1 = 0;
    for (int i = 0; i < vkl_st_count(f); i++) {
        const char *n = vkl_st_at(f, i)->name;
        if (starts(n, "model.diffusion_model.")) c->unet_tensors++;
        else if (starts(n, "first_stage_model.")) c->vae_tensors++;
        else if (starts(n, "cond_stage_model.") || starts(n, "conditioner.")) c->te_tensors++;
        sdxl |= starts(n, "conditioner.embedders.");
        sd2 |= starts(n, "cond_stage_model.model.");
        sd1 |= starts(n, "cond_stage_model.transformer.");
    }
    if (c->unet_tensors || c->vae_tensors || c->te_tensors) {
        c->kind = VKL_INFO_SD_CHECKPOINT;
        strcpy(c->format, sdxl ? "SDXL" : sd2 ? "SD 2.x" : sd1 ? "SD 1.x" : "family unknown");
    } else if (vkl_st_find(f, "conv_in.weight") && vkl_st_find(f, "time_embedding.linear_1.weight")) {
        c->kind = VKL_INFO_DIFFUSERS_UNET;
    } else if (vkl_st_find(f, "encoder.conv_in.weight") || vkl_st_find(f, "decoder.conv_in.weight")) {
        c->kind = VKL_INFO_DIFFUSERS_VAE;
    } else if (vkl_st_find(f, "text_model.embeddings.token_embedding.weight")) {
        c->kind = VKL_INFO_TEXT_ENCODER;
    } else if (vkl_st_find(f, "model.embed_tokens.weight")) {
        c->kind = VKL_INFO_LANGUAGE_MODEL;
    }
}

int vkl_info_classify(const vkl_st_file *f, vkl_info_class *c, vkl_err *e)
{
    memset(c, 0, sizeof *c);
    module_set ms = {0};
    int flags = 0, rc = 0;
    for (int i = 0; i < vkl_st_count(f) && !rc; i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        int r = kohya_tensor(f, t, c, &ms, &flags, e);
        if (r < 0) rc = -1;
        else if (r == 0) peft_tensor(t, c, &ms, &flags);
    }
    if (!rc && ms.oom) rc = vkl_fail(e, "%s: out of memory", vkl_st_path(f));
    if (!rc && ms.nmods) {
        c->kind = VKL_INFO_LORA;
        set_lora_format(c, flags);
        count_modules(&ms, c);
    } else if (!rc) {
        classify_model(f, c);
    }
    for (int i = 0; i < ms.nmods; i++) free(ms.mods[i]);
    free(ms.mods);
    return rc;
}

const char *vkl_info_kind_name(vkl_info_kind k)
{
    static const char *const n[] = {"unknown", "lora", "sd-checkpoint", "diffusers-unet", "diffusers-vae",
                                    "text-encoder", "language-model"};
    return (unsigned)k < sizeof n / sizeof *n ? n[k] : "unknown";
}

const char *vkl_info_kind_title(vkl_info_kind k)
{
    static const char *const n[] = {"unknown",
                                    "LoRA adapter",
                                    "SD checkpoint",
                                    "diffusers component: UNet",
                                    "diffusers component: VAE",
                                    "diffusers component: CLIP text encoder",
                                    "language model (transformers layout)"};
    return (unsigned)k < sizeof n / sizeof *n ? n[k] : "unknown";
}
