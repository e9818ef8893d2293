#include "gen_lora.h"
#include "lora_args.h"

#include "lora/lora_merge_weights.h"
#include "ops.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char *base_name(const char *path)
{
    const char *s = strrchr(path, '/');
    s = s ? s + 1 : path;
    char *n = strdup(s);
    if (!n) return NULL;
    char *dot = strrchr(n, '.');
    if (dot && dot != n) *dot = 0;
    return n;
}

static int add(vkl_gen_lora *l, const char *path, float w_unet, float w_te, vkl_err *e)
{
    if (l->n == VKL_GEN_MAX_LORAS) return vkl_fail(e, "at most %d adapters at once", VKL_GEN_MAX_LORAS);
    struct stat st;
    if (stat(path, &st) != 0) return vkl_fail(e, "adapter file %s not found", path);
    l->path[l->n] = strdup(path);
    l->name[l->n] = base_name(path);
    l->use[l->n].unet_mult = w_unet;
    l->use[l->n].te_mult = w_te;
    l->n++;
    return 0;
}

int vkl_gen_lora_add_spec(vkl_gen_lora *l, const char *spec, vkl_err *e)
{
    char path[2048];
    float w[2];
    int nw;
    /* FILE, FILE:W (both networks) or FILE:W_UNET:W_TE */
    if (vkl_app_lora_spec(spec, path, sizeof path, w, 2, &nw, e)) return -1;
    if (nw == 0) w[0] = w[1] = 1.0f;
    if (nw == 1) w[1] = w[0];
    return add(l, path, w[0], w[1], e);
}

/* The weights of <lora:NAME:...> as AUTOMATIC1111 reads them: positional
 * te[:unet] (unet defaults to te), or named te=X / unet=X. */
static int prompt_weights(char *args, const char *tag, float *wu, float *wt, vkl_err *e)
{
    int pos = 0, unet_given = 0;
    for (char *save = NULL, *p = strtok_r(args, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
        float x;
        char *eq = strchr(p, '=');
        const char *val = eq ? eq + 1 : p;
        if (vkl_app_parse_weight(val, &x))
            return vkl_fail(e, "<lora:%s>: '%s' is not a weight (a finite number, e.g. 0.8)", tag, val);
        if (eq) {
            *eq = 0;
            if (!strcmp(p, "te")) *wt = x;
            else if (!strcmp(p, "unet")) *wu = x, unet_given = 1;
            else return vkl_fail(e, "<lora:%s>: '%s=' is not a weight vklora knows (te=, unet=)", tag, p);
        } else if (pos == 0) {
            *wt = x;
            pos++;
        } else if (pos == 1) {
            *wu = x;
            unet_given = 1;
            pos++;
        } else {
            return vkl_fail(e, "<lora:%s>: more than two weights", tag);
        }
    }
    if (!unet_given) *wu = *wt;
    return 0;
}

char *vkl_gen_lora_from_prompt(vkl_gen_lora *l, const char *prompt, const char *lora_dir, vkl_err *e)
{
    size_t n = strlen(prompt);
    char *out = malloc(n + 1);
    if (!out) {
        vkl_fail(e, "out of host memory");
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        if (!strncmp(prompt + i, "<lora:", 6)) {
            const char *close = strchr(prompt + i, '>');
            if (!close) {
                vkl_fail(e, "unclosed <lora:...> in the prompt");
                free(out);
                return NULL;
            }
            char inner[1024];
            snprintf(inner, sizeof inner, "%.*s", (int)(close - prompt - i - 6), prompt + i + 6);
            char tag[1024];
            snprintf(tag, sizeof tag, "%s", inner);
            char *w1 = strchr(inner, ':');
            float wu = 1.0f, wt = 1.0f;
            if (w1) {
                *w1++ = 0;
                if (prompt_weights(w1, tag, &wu, &wt, e)) {
                    free(out);
                    return NULL;
                }
            }
            if (!lora_dir) {
                vkl_fail(e, "the prompt names <lora:%s>: give --lora-dir to say where adapters are", inner);
                free(out);
                return NULL;
            }
            char path[2048];
            snprintf(path, sizeof path, "%s/%s.safetensors", lora_dir, inner);
            if (add(l, path, wu, wt, e)) {
                free(out);
                return NULL;
            }
            i = (size_t)(close - prompt) + 1;
            continue;
        }
        out[o++] = prompt[i++];
    }
    out[o] = 0;
    return out;
}

/* The networks (VKL_SD_PART_*) a lowvram model must keep on the device for
 * these adapters: those merged into (re-reading the file would undo the
 * merge), and at run time those with DoRA modules (the adapter set reads
 * their weights again when a multiplier changes). */
static int parts_to_pin(const vkl_gen_lora *l, int merge)
{
    int parts = 0;
    for (int i = 0; i < l->n; i++)
        for (int k = 0; k < l->lora[i].n; k++) {
            const vkl_lora_module *mod = &l->lora[i].m[k];
            if (merge || mod->kind == VKL_LORA_KIND_DORA)
                parts |= strncmp(mod->name, "text_encoder", 12) ? VKL_SD_PART_UNET : VKL_SD_PART_TE;
        }
    return parts;
}

/* Folds every module of every adapter into the model's weights. */
static int merge_all(vkl_gen_lora *l, vkl_sd_model *m, vkl_err *e)
{
    if (vkl_sd_model_pin(m, parts_to_pin(l, 1), e)) return -1;
    if (vkl_lora_merge_weights(m->ctx, m->w, l->use, l->n, e)) return -1;
    l->merged = 1;
    return 0;
}

int vkl_gen_lora_apply(vkl_gen_lora *l, vkl_sd_model *m, int merge, vkl_err *e)
{
    if (!l->n) return 0;
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    if (vkl_lora_targets_from_sd(m->cfg, &tg, e)) return -1;
    int rc = 0;
    for (int i = 0; i < l->n && !rc; i++) {
        vkl_lora_opts lo = {&tg, 0, NULL, 0};
        rc = vkl_lora_load(l->path[i], &lo, &l->lora[i], e);
        l->use[i].lora = &l->lora[i];
    }
    vkl_lora_targets_free(&tg);
    if (rc) return -1;
    if (merge) return merge_all(l, m, e);
    if (vkl_sd_model_pin(m, parts_to_pin(l, 0), e) || vkl_lora_set_build_ex(m->ctx, l->use, l->n, m->w, &l->set, e))
        return -1;
    m->unet.lora = l->set;
    m->te.lora = l->set;
    return 0;
}

int vkl_gen_lora_set_weight(vkl_gen_lora *l, int i, float unet, float te, vkl_err *e)
{
    if (l->merged) return vkl_fail(e, "merged adapters cannot change weight");
    l->use[i].unet_mult = unet;
    l->use[i].te_mult = te;
    return vkl_lora_set_multipliers(l->set, l->use, l->n, e);
}

void vkl_gen_lora_free(vkl_gen_lora *l, vkl_sd_model *m)
{
    if (m) {
        m->unet.lora = NULL;
        m->te.lora = NULL;
    }
    vkl_lora_set_free(l->set);
    for (int i = 0; i < l->n; i++) {
        if (l->use[i].lora) vkl_lora_free(&l->lora[i]);
        free(l->path[i]);
        free(l->name[i]);
    }
    memset(l, 0, sizeof *l);
}
