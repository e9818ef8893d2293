#include "sd/sd_source.h"
#include "io/text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SRC_MAX_FILES 4

struct vkl_sd_source {
    vkl_sd_layout layout;
    vkl_sd_config config;
    vkl_st_file *files[SRC_MAX_FILES];
    int n_files;
    vkl_sd_keys keys;
    vkl_sd_mapping map;
    char *yaml;
};

static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Weights of one diffusers sub-model: full precision first, then fp16 variant. */
static int open_part(vkl_sd_source *s, const char *dir, const char *sub, int required, vkl_err *e)
{
    static const char *names[] = {"diffusion_pytorch_model.safetensors", "model.safetensors",
                                  "diffusion_pytorch_model.fp16.safetensors",
                                  "model.fp16.safetensors"};
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    if (!is_dir(path)) {
        if (!required) return 0;
        return vkl_fail(e, "%s: missing folder (a diffusers model needs it)", path);
    }
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s/%s", dir, sub, names[i]);
        if (!is_file(path)) continue;
        vkl_st_file *f;
        if (vkl_st_open(path, &f, e)) return -1;
        int idx = s->n_files;
        s->files[s->n_files++] = f;
        char prefix[64];
        snprintf(prefix, sizeof prefix, "%s.", sub);
        return vkl_sd_keys_add_file(&s->keys, f, prefix, idx, e);
    }
    snprintf(path, sizeof path, "%s/%s", dir, sub);
    return vkl_fail(e, "%s: no weights found (looked for diffusion_pytorch_model[.fp16].safetensors "
                       "and model[.fp16].safetensors; sharded and .bin weights are not supported)",
                    path);
}

static int open_diffusers(vkl_sd_source *s, const char *dir, vkl_err *e)
{
    s->layout = VKL_SD_LAYOUT_DIFFUSERS;
    if (vkl_sd_config_read_diffusers(dir, &s->config, e)) return -1;
    if (open_part(s, dir, "unet", 1, e) || open_part(s, dir, "vae", 1, e) ||
        open_part(s, dir, "text_encoder", 1, e) ||
        open_part(s, dir, "text_encoder_2", s->config.n_text_encoders > 1, e))
        return -1;
    return 0;
}

static int open_single(vkl_sd_source *s, const char *path, const vkl_sd_source_opts *o,
                       vkl_err *e)
{
    s->layout = VKL_SD_LAYOUT_LDM;
    vkl_st_file *f;
    if (vkl_st_open(path, &f, e)) return -1;
    s->files[s->n_files++] = f;
    if (vkl_sd_keys_add_file(&s->keys, f, "", 0, e) || vkl_sd_keys_finish(&s->keys, e)) return -1;
    vkl_sd_family fam;
    if (vkl_sd_detect_family(&s->keys, &fam, e) ||
        vkl_sd_config_infer_ldm(&s->keys, fam, &s->config, e))
        return -1;
    char ypath[4096], tried[4200] = "";
    const char *yp = o ? o->yaml : NULL;
    if (yp && !is_file(yp)) return vkl_fail(e, "model config %s: not a file", yp);
    if (!yp && !(o && o->no_sidecar)) {
        size_t n = strlen(path);
        const char *ext = ".safetensors";
        size_t ne = strlen(ext);
        if (n > ne && !strcmp(path + n - ne, ext) && n - ne + 6 < sizeof ypath) {
            snprintf(ypath, sizeof ypath, "%.*s.yaml", (int)(n - ne), path);
            if (is_file(ypath)) yp = ypath;
            else snprintf(tried, sizeof tried, "%s", ypath);
        }
    }
    if (yp) {
        char *text;
        if (vkl_read_text_file(yp, 1 << 20, &text, NULL, e)) return -1;
        int rc = vkl_sd_config_apply_ldm_yaml(text, yp, &s->config, e);
        free(text);
        if (rc) return -1;
        s->yaml = strdup(yp);
        if (!s->yaml) return vkl_fail(e, "out of memory");
    }
    if (vkl_sd_config_validate(&s->config, e)) {
        char why[4400];
        if (yp) snprintf(why, sizeof why, " and %s", yp);
        else snprintf(why, sizeof why, " (no original yaml: %s not found; name one with --model-config FILE.yaml: "
                                      "it can state what shapes cannot)", tried[0] ? tried : "<name>.yaml");
        vkl_err_prefix(e, "%s configuration inferred from tensor shapes%s: ", vkl_sd_family_name(fam), why);
        return -1;
    }
    return 0;
}

int vkl_sd_source_open(const char *path, const vkl_sd_source_opts *opts, vkl_sd_source **out,
                       vkl_err *e)
{
    *out = NULL;
    vkl_sd_source *s = calloc(1, sizeof *s);
    if (!s) return vkl_fail(e, "out of memory");
    int rc;
    if (is_dir(path)) {
        rc = open_diffusers(s, path, e);
        if (!rc) rc = vkl_sd_keys_finish(&s->keys, e);
    } else {
        rc = open_single(s, path, opts, e);
    }
    if (!rc) rc = vkl_sd_map(&s->config, s->layout, &s->keys, &s->map, e);
    if (rc) {
        vkl_err_prefix(e, "%s: ", path);
        vkl_sd_source_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void vkl_sd_source_close(vkl_sd_source *s)
{
    if (!s) return;
    vkl_sd_mapping_free(&s->map);
    vkl_sd_keys_free(&s->keys);
    for (int i = 0; i < s->n_files; i++) vkl_st_close(s->files[i]);
    free(s->yaml);
    free(s);
}

const vkl_sd_config *vkl_sd_source_config(const vkl_sd_source *s) { return &s->config; }
vkl_sd_layout vkl_sd_source_layout(const vkl_sd_source *s) { return s->layout; }
const char *vkl_sd_source_yaml(const vkl_sd_source *s) { return s->yaml; }
int vkl_sd_source_count(const vkl_sd_source *s) { return s->map.n; }

const vkl_sd_entry *vkl_sd_source_at(const vkl_sd_source *s, int i)
{
    return i >= 0 && i < s->map.n ? &s->map.v[i] : NULL;
}

const vkl_sd_entry *vkl_sd_source_find(const vkl_sd_source *s, const char *name)
{
    return vkl_sd_mapping_find(&s->map, name);
}

const vkl_st_tensor *vkl_sd_source_tensor(const vkl_sd_source *s, const vkl_sd_entry *x)
{
    return s->keys.v[x->key].t;
}

const char *vkl_sd_source_file(const vkl_sd_source *s, const vkl_sd_entry *x)
{
    return vkl_st_path(s->files[s->keys.v[x->key].file]);
}

uint64_t vkl_sd_entry_nelem(const vkl_sd_entry *x)
{
    uint64_t n = 1;
    for (int i = 0; i < x->ndim; i++) n *= (uint64_t)x->shape[i];
    return n;
}

int vkl_sd_source_read_f32(const vkl_sd_source *s, const vkl_sd_entry *x, float *dst,
                           uint64_t nelem, vkl_err *e)
{
    const vkl_sd_key *k = &s->keys.v[x->key];
    const vkl_st_file *f = s->files[k->file];
    const vkl_st_tensor *t = k->t;
    if (nelem != vkl_sd_entry_nelem(x))
        return vkl_fail(e, "%s: %s holds %llu elements, caller expects %llu", vkl_st_path(f),
                        x->name, (unsigned long long)vkl_sd_entry_nelem(x),
                        (unsigned long long)nelem);
    if (x->xform == VKL_SD_X_NONE || x->xform == VKL_SD_X_RESHAPE)
        return vkl_st_read(f, t, VKL_F32, dst, e);
    float *tmp = malloc((size_t)t->nelem * sizeof *tmp);
    if (!tmp) return vkl_fail(e, "%s: out of memory reading %s", vkl_st_path(f), t->name);
    int rc = vkl_st_read(f, t, VKL_F32, tmp, e);
    if (!rc && x->xform == VKL_SD_X_SPLIT) {
        memcpy(dst, tmp + (size_t)x->part * nelem, (size_t)nelem * sizeof *dst);
    } else if (!rc) { /* transpose [a,b] -> [b,a] */
        int64_t a = t->shape[0], b = t->shape[1];
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++) dst[j * a + i] = tmp[i * b + j];
    }
    free(tmp);
    return rc;
}
