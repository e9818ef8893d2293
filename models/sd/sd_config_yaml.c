/* The original repositories describe a checkpoint with a yaml file (A1111 and
 * ComfyUI look for <checkpoint>.yaml next to it). It says what shapes cannot:
 * heads, parameterization, scale factor, betas. Only the block-style subset of
 * YAML those files use is read: nested "key: value" mappings and "- item"
 * lists; flow collections are kept as text. */
#include "sd/sd_config.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define YAML_MAX_DEPTH 32

typedef struct {
    char path[320];
    char value[160];
} yaml_entry;

typedef struct {
    yaml_entry *v;
    int n, cap;
} yaml_doc;

static int yaml_add(yaml_doc *d, const char *path, const char *value)
{
    if (d->n == d->cap) {
        int cap = d->cap ? 2 * d->cap : 64;
        yaml_entry *v = realloc(d->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        d->v = v;
        d->cap = cap;
    }
    snprintf(d->v[d->n].path, sizeof d->v[d->n].path, "%s", path);
    snprintf(d->v[d->n].value, sizeof d->v[d->n].value, "%s", value);
    d->n++;
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && isspace((unsigned char)s[n - 1])) s[--n] = 0;
    if (n >= 2 && ((s[0] == '"' && s[n - 1] == '"') || (s[0] == '\'' && s[n - 1] == '\''))) {
        s[n - 1] = 0;
        s++;
    }
    return s;
}

static void strip_comment(char *s)
{
    char q = 0;
    for (char *p = s; *p; p++) {
        if (q) {
            if (*p == q) q = 0;
        } else if (*p == '"' || *p == '\'') {
            q = *p;
        } else if (*p == '#' && (p == s || p[-1] == ' ' || p[-1] == '\t')) {
            *p = 0;
            return;
        }
    }
}

static int yaml_parse(const char *text, const char *label, yaml_doc *d, vkl_err *e)
{
    /* item: the frame is a mapping that is a list item ("- key: value"),
     * named by its index; the next "-" at its indentation ends it */
    struct { int indent; char key[96]; int items; int item; } st[YAML_MAX_DEPTH];
    int depth = 0, lineno = 0;
    const char *p = text;
    char line[1024];
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        if (len >= sizeof line) return vkl_fail(e, "%s:%d: line too long", label, lineno);
        memcpy(line, p, len);
        line[len] = 0;
        p += len + (nl ? 1 : 0);
        size_t lead = strspn(line, " \t");
        if (memchr(line, '\t', lead) && line[lead] && line[lead] != '#')
            return vkl_fail(e, "%s:%d: tab indentation", label, lineno);
        strip_comment(line);
        int indent = (int)strspn(line, " ");
        char *c = line + indent;
        size_t n = strlen(c);
        while (n && isspace((unsigned char)c[n - 1])) c[--n] = 0;
        if (!n || !strcmp(c, "---")) continue;
        int item = c[0] == '-' && (c[1] == ' ' || c[1] == 0);
        if (item) {
            /* Items may sit at their parent key's indentation. */
            while (depth && (st[depth - 1].indent > indent || (st[depth - 1].item && st[depth - 1].indent >= indent)))
                depth--;
            if (!depth) return vkl_fail(e, "%s:%d: list item outside a mapping", label, lineno);
            int idx = st[depth - 1].items++;
            char *body = c + 1;
            body += strspn(body, " ");
            int is_map = (strstr(body, ": ") || (*body && body[strlen(body) - 1] == ':')) && body[0] != '"' &&
                         body[0] != '\'' && body[0] != '{' && body[0] != '[';
            if (!is_map) {
                char path[320] = "";
                for (int i = 0; i < depth; i++)
                    snprintf(path + strlen(path), sizeof path - strlen(path), "%s%s", i ? "." : "", st[i].key);
                snprintf(path + strlen(path), sizeof path - strlen(path), ".%d", idx);
                if (yaml_add(d, path, trim(body))) return vkl_fail(e, "%s: out of memory", label);
                continue;
            }
            /* "- key: value": a mapping item; its keys sit at the body's column */
            if (depth == YAML_MAX_DEPTH)
                return vkl_fail(e, "%s:%d: nested more than %d levels", label, lineno, YAML_MAX_DEPTH);
            st[depth].indent = indent;
            st[depth].items = 0;
            st[depth].item = 1;
            snprintf(st[depth].key, sizeof st[depth].key, "%d", idx);
            depth++;
            indent = (int)(body - line);
            c = body;
        }
        char *colon = strstr(c, ": ");
        if (!colon) {
            size_t n = strlen(c);
            if (n && c[n - 1] == ':') colon = c + n - 1;
        }
        if (!colon) return vkl_fail(e, "%s:%d: expected \"key: value\"", label, lineno);
        *colon = 0;
        char *key = trim(c), *value = trim(colon + 1);
        while (depth && st[depth - 1].indent >= indent) depth--;
        if (!*value) {
            if (depth == YAML_MAX_DEPTH)
                return vkl_fail(e, "%s:%d: nested more than %d levels", label, lineno,
                                YAML_MAX_DEPTH);
            st[depth].indent = indent;
            st[depth].items = 0;
            st[depth].item = 0;
            snprintf(st[depth].key, sizeof st[depth].key, "%s", key);
            depth++;
            continue;
        }
        char path[320] = "";
        for (int i = 0; i < depth; i++)
            snprintf(path + strlen(path), sizeof path - strlen(path), "%s.", st[i].key);
        snprintf(path + strlen(path), sizeof path - strlen(path), "%s", key);
        if (yaml_add(d, path, value)) return vkl_fail(e, "%s: out of memory", label);
    }
    return 0;
}

static const char *yget(const yaml_doc *d, const char *path)
{
    for (int i = d->n - 1; i >= 0; i--)
        if (!strcmp(d->v[i].path, path)) return d->v[i].value;
    return NULL;
}

static int yint(const yaml_doc *d, const char *path, int *dst, const char *label, vkl_err *e)
{
    const char *s = yget(d, path);
    if (!s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || end == s) return vkl_fail(e, "%s: %s: \"%s\" is not an integer", label, path, s);
    *dst = (int)v;
    return 1;
}

static int yfloat(const yaml_doc *d, const char *path, float *dst, const char *label, vkl_err *e)
{
    const char *s = yget(d, path);
    if (!s) return 0;
    char *end;
    float v = strtof(s, &end);
    if (*end || end == s) return vkl_fail(e, "%s: %s: \"%s\" is not a number", label, path, s);
    *dst = v;
    return 1;
}

static int read_act(const yaml_doc *d, const char *key, vkl_sd_act *act, const char *label, vkl_err *e)
{
    const char *a = yget(d, key);
    if (!a) return 0;
    if (!strcmp(a, "quick_gelu")) *act = VKL_SD_ACT_QUICK_GELU;
    else if (!strcmp(a, "gelu")) *act = VKL_SD_ACT_GELU;
    else return vkl_fail(e, "%s: %s \"%s\" is not supported", label, key, a);
    return 0;
}

static int apply(const yaml_doc *d, const char *label, vkl_sd_config *c, vkl_err *e)
{
    if (yfloat(d, "model.params.scale_factor", &c->vae.scaling_factor, label, e) < 0 ||
        yfloat(d, "model.params.linear_start", &c->sched.beta_start, label, e) < 0 ||
        yfloat(d, "model.params.linear_end", &c->sched.beta_end, label, e) < 0 ||
        yint(d, "model.params.timesteps", &c->sched.train_steps, label, e) < 0)
        return -1;
    const char *par = yget(d, "model.params.parameterization");
    if (par) {
        if (!strcmp(par, "v")) c->sched.prediction = VKL_SD_PRED_V;
        else if (!strcmp(par, "eps")) c->sched.prediction = VKL_SD_PRED_EPSILON;
        else
            return vkl_fail(e, "%s: parameterization \"%s\" is not supported (eps, v)", label, par);
    }
    /* LDM (1.x/2.x) calls the UNet unet_config, SGM (XL) network_config. */
    const char *U = yget(d, "model.params.unet_config.target") ? "model.params.unet_config.params"
                                                                 : "model.params.network_config.params";
    char k[256];
    vkl_sd_unet_config *u = &c->unet;
    int heads = -1, head_ch = -1;
    snprintf(k, sizeof k, "%s.num_heads", U);
    if (yint(d, k, &heads, label, e) < 0) return -1;
    snprintf(k, sizeof k, "%s.num_head_channels", U);
    if (yint(d, k, &head_ch, label, e) < 0) return -1;
    if ((heads > 0 || head_ch > 0) && u->n_levels > 0) {
        for (int b = 0; b < u->n_levels; b++) {
            int ch = u->block_out_channels[b];
            if (heads <= 0 && ch % head_ch)
                return vkl_fail(e, "%s: num_head_channels %d does not divide %d channels", label,
                                head_ch, ch);
            u->heads[b] = heads > 0 ? heads : ch / head_ch;
        }
        u->mid_heads = u->heads[u->n_levels - 1];
    }
    snprintf(k, sizeof k, "%s.norm_num_groups", U);
    if (yint(d, k, &u->norm_num_groups, label, e) < 0) return -1;
    snprintf(k, sizeof k, "%s.image_size", U);
    if (yint(d, k, &u->sample_size, label, e) < 0) return -1;
    const char *DD = "model.params.first_stage_config.params.ddconfig";
    snprintf(k, sizeof k, "%s.norm_num_groups", DD);
    if (yint(d, k, &c->vae.norm_num_groups, label, e) < 0) return -1;
    snprintf(k, sizeof k, "%s.resolution", DD);
    if (yint(d, k, &c->vae.sample_size, label, e) < 0) return -1;
    /* Not options of the original classes (they load fixed pretrained text
     * towers), but small test models record their text encoder this way. */
    const char *T = "model.params.cond_stage_config.params";
    snprintf(k, sizeof k, "%s.heads", T);
    if (yint(d, k, &c->te[0].heads, label, e) < 0) return -1;
    snprintf(k, sizeof k, "%s.act", T);
    if (read_act(d, k, &c->te[0].act, label, e)) return -1;
    /* SGM (XL): the text embedders are items of conditioner_config's
     * emb_models; small test models record their sizes the same way */
    for (int i = 0; i < 16; i++) {
        char base[200];
        snprintf(base, sizeof base, "model.params.conditioner_config.params.emb_models.%d", i);
        snprintf(k, sizeof k, "%s.target", base);
        const char *target = yget(d, k);
        if (!target) continue;
        int which = strstr(target, "FrozenOpenCLIPEmbedder2") ? 1 : strstr(target, "FrozenCLIPEmbedder") ? 0 : -1;
        if (which < 0 || which >= c->n_text_encoders) continue;
        snprintf(k, sizeof k, "%s.params.heads", base);
        if (yint(d, k, &c->te[which].heads, label, e) < 0) return -1;
        snprintf(k, sizeof k, "%s.params.act", base);
        if (read_act(d, k, &c->te[which].act, label, e)) return -1;
    }
    return 0;
}

int vkl_sd_config_apply_ldm_yaml(const char *text, const char *label, vkl_sd_config *c,
                                 vkl_err *e)
{
    yaml_doc d = {0};
    int rc = yaml_parse(text, label, &d, e);
    if (!rc) rc = apply(&d, label, c, e);
    free(d.v);
    return rc;
}
