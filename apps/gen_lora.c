#include "gen_lora.h"
#include "lora_dir.h"
#include "lora_args.h"

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
    l->unet_mult[l->n] = w_unet;
    l->te_mult[l->n] = w_te;
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
            char path[4096];
            if (vkl_lora_dir_find(lora_dir, inner, path, sizeof path, e) || add(l, path, wu, wt, e)) {
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

int vkl_gen_lora_apply(vkl_gen_lora *l, vkl_sd_model *m, int merge, vkl_err *e)
{
    return vkl_sd_adapters_apply_ex(m, (const char *const *)l->path, l->unet_mult, l->te_mult, l->n, merge, l->rank_at,
                                    &l->ad, e);
}

int vkl_gen_lora_set_weight(vkl_gen_lora *l, int i, float unet, float te, vkl_err *e)
{
    return vkl_sd_adapters_set_weight(&l->ad, i, unet, te, e);
}

void vkl_gen_lora_free(vkl_gen_lora *l, vkl_sd_model *m)
{
    (void)m;
    vkl_sd_adapters_free(&l->ad);
    for (int i = 0; i < l->n; i++) {
        free(l->path[i]);
        free(l->name[i]);
    }
    memset(l, 0, sizeof *l);
}
