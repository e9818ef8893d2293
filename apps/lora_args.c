#include "lora_args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int vkl_app_lora_load(const char *path, const vkl_lora_targets *targets, const char *config, vkl_lora *l)
{
    vkl_lora_opts o = {.targets = targets, .config_path = config};
    vkl_err e;
    if (vkl_lora_load(path, &o, l, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return -1;
    }
    return 0;
}

int vkl_app_lora_save(const vkl_lora *l, const char *to, const char *out, int force)
{
    vkl_err e;
    int rc;
    if (!strcmp(to, "kohya")) {
        rc = vkl_lora_save_kohya(l, out, &e);
    } else {
        char cfg[4096];
        const char *slash = strrchr(out, '/');
        int dl = slash ? (int)(slash - out) : 0;
        snprintf(cfg, sizeof cfg, "%.*s%sadapter_config.json", dl, out, slash ? "/" : "");
        struct stat st;
        if (!force && stat(cfg, &st) == 0) {
            vkl_log(VKL_LOG_ERROR, "%s exists; the PEFT config goes there (use --force to replace it)", cfg);
            return -1;
        }
        rc = vkl_lora_save_peft(l, out, cfg, &e);
    }
    if (rc) vkl_log(VKL_LOG_ERROR, "%s", e.msg);
    return rc;
}

static int exists(const char *p)
{
    struct stat st;
    return !stat(p, &st);
}

int vkl_app_parse_weight(const char *s, float *w)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(x) || fabs(x) > 1e6) return -1;
    *w = (float)x;
    return 0;
}

int vkl_app_lora_spec(const char *spec, char *path, size_t size, float *w, int maxw, int *nw, vkl_err *e)
{
    if (strlen(spec) >= size) return vkl_fail(e, "adapter path too long: %.80s...", spec);
    snprintf(path, size, "%s", spec);
    float tail[4];
    int n = 0;
    while (n < maxw && n < 4 && !exists(path)) {
        char *colon = strrchr(path, ':');
        if (!colon || colon == path) break;
        float x;
        if (vkl_app_parse_weight(colon + 1, &x)) {
            /* a bad weight when some shorter prefix names the file */
            int before = 0;
            for (char *q = colon; q && !before; q = memrchr(path, ':', (size_t)(q - path))) {
                *q = 0;
                before = exists(path);
                *q = ':';
            }
            if (before)
                return vkl_fail(e, "%s: the weight '%s' is not a finite number (e.g. 0.8)", spec, colon + 1);
            break;
        }
        tail[n++] = x;
        *colon = 0;
    }
    /* the weights were taken from the end */
    for (int i = 0; i < n; i++) w[i] = tail[n - 1 - i];
    *nw = n;
    return 0;
}

int vkl_app_arg_lora(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_app_lora_list *l = dest;
    if (l->n >= l->max) {
        fprintf(stderr, "vklora %s: %s '%s': at most %d may be given\n", cmd, opt, v, l->max);
        return 1;
    }
    vkl_err pe = {{0}};
    int nw;
    l->w[l->n] = 1.0f;
    if (vkl_app_lora_spec(v, l->path[l->n], sizeof l->path[l->n], &l->w[l->n], 1, &nw, &pe)) {
        fprintf(stderr, "vklora %s: %s %s\n", cmd, opt, pe.msg); /* the message quotes the value */
        return 1;
    }
    l->n++;
    return 0;
}
