#include "sd/sd_folder_write.h"

#include "io/dir.h"
#include "io/safetensors.h"
#include "sd/sd_layout.h"
#include "sd/sd_random.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The weight file of each diffusers part, as diffusers and transformers name it. */
static const char *part_file(const char *part)
{
    return !strncmp(part, "text_encoder", 12) ? "model.safetensors" : "diffusion_pytorch_model.safetensors";
}

static int mkdir_one(const char *path, vkl_err *e)
{
    if (mkdir(path, 0755) && errno != EEXIST) return vkl_fail(e, "cannot create %s: %s", path, strerror(errno));
    return 0;
}

/* Weight files of model parts (written anew by the caller). */
static int skip_weights(const char *rel, void *user)
{
    const char *const *parts = user;
    size_t n = strlen(rel);
    int weights = (n > 12 && !strcmp(rel + n - 12, ".safetensors")) || (n > 4 && !strcmp(rel + n - 4, ".bin"));
    if (!weights) return 0;
    if (!parts) return 1;
    for (; *parts; parts++) {
        size_t pl = strlen(*parts);
        if (!strncmp(rel, *parts, pl) && rel[pl] == '/') return 1;
    }
    return 0;
}

static vkl_dtype stored(const vkl_sd_param *p, vkl_dtype dtype) { return p->ndim >= 2 ? dtype : VKL_F32; }

static int write_random_part(const vkl_sd_config *cfg, const vkl_sd_params *ps, const char *part, const char *dir,
                             vkl_dtype dtype, uint64_t seed, vkl_err *e)
{
    char prefix[64], path[4400];
    snprintf(prefix, sizeof prefix, "%s.", part);
    snprintf(path, sizeof path, "%.4200s/%.60s", dir, part);
    if (mkdir_one(path, e)) return -1;
    snprintf(path, sizeof path, "%.4200s/%.60s/%s", dir, part, part_file(part));
    size_t pl = strlen(prefix);
    vkl_st_writer *w = vkl_st_writer_new();
    void **keep = calloc((size_t)ps->n + 1, sizeof *keep);
    int rc = (!w || !keep) ? vkl_fail(e, "out of host memory") : 0;
    int count = 0;
    for (int i = 0; i < ps->n && !rc; i++) {
        const vkl_sd_param *p = &ps->v[i];
        if (strncmp(p->name, prefix, pl)) continue;
        uint64_t n = 1;
        for (int d = 0; d < p->ndim; d++) n *= (uint64_t)p->shape[d];
        float *x = malloc(sizeof(float) * (n ? n : 1));
        vkl_dtype dt = stored(p, dtype);
        keep[i] = malloc(vkl_dtype_size(dt) * (n ? n : 1));
        if (!x || !keep[i]) {
            free(x);
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        vkl_sd_random_fill(p, i, seed, x, n);
        rc = vkl_convert_host(x, VKL_F32, keep[i], dt, n, e);
        free(x);
        if (!rc) rc = vkl_st_writer_add_ref(w, p->name + pl, dt, p->ndim, p->shape, keep[i], e);
        count++;
    }
    (void)cfg;
    if (!rc && !count) rc = vkl_fail(e, "the configuration has no %s weights", part);
    if (!rc) rc = vkl_st_writer_meta(w, "format", "pt", e);
    if (!rc) rc = vkl_st_writer_finish(w, path, e);
    vkl_st_writer_free(w);
    for (int i = 0; keep && i < ps->n; i++) free(keep[i]);
    free(keep);
    return rc;
}

int vkl_sd_write_random_folder(const char *configs_dir, const char *tokenizer_dir, const char *out, vkl_dtype dtype,
                               uint64_t seed, int force, vkl_err *e)
{
    if (dtype != VKL_F16 && dtype != VKL_F32) return vkl_fail(e, "models are written as f16 or f32");
    char tmp[4200], path[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    vkl_err e2;
    vkl_dir_remove(tmp, &e2);
    vkl_sd_config cfg;
    vkl_sd_params ps;
    memset(&ps, 0, sizeof ps);
    int rc = vkl_dir_copy(configs_dir, tmp, skip_weights, NULL, e);
    if (!rc && tokenizer_dir) {
        snprintf(path, sizeof path, "%s/tokenizer", tmp);
        rc = vkl_dir_remove(path, e) || vkl_dir_copy(tokenizer_dir, path, NULL, NULL, e) ? -1 : 0;
    }
    if (!rc) {
        rc = vkl_sd_config_read_diffusers(tmp, &cfg, e);
        if (rc) vkl_err_prefix(e, "%s: ", configs_dir);
    }
    if (!rc) rc = vkl_sd_params_build(&cfg, &ps, e);
    /* SDXL-style configs also get text_encoder_2 (their tokenizer_2/ is copied
     * with the configs) */
    static const char *parts[] = {"unet", "vae", "text_encoder", "text_encoder_2"};
    for (int i = 0; i < 2 + cfg.n_text_encoders && !rc; i++)
        rc = write_random_part(&cfg, &ps, parts[i], tmp, dtype, seed, e);
    vkl_sd_params_free(&ps);
    if (!rc) rc = vkl_dir_install(tmp, out, force, e);
    if (rc) vkl_dir_remove(tmp, &e2);
    return rc;
}

int vkl_sd_write_part_weights(vkl_ctx *c, const char *const *names, vkl_tensor *const *ts, int n, const char *prefix,
                              const char *path, vkl_dtype dtype, const char *const *meta, int nmeta, vkl_err *e)
{
    size_t pl = strlen(prefix);
    vkl_st_writer *wr = vkl_st_writer_new();
    void **keep = calloc((size_t)n + 1, sizeof *keep);
    int rc = (!wr || !keep) ? vkl_fail(e, "out of host memory") : 0, count = 0;
    for (int i = 0; i < n && !rc; i++) {
        const char *name = names[i];
        vkl_tensor *t = ts[i];
        if (strncmp(name, prefix, pl)) continue;
        vkl_dtype dt = t->ndim >= 2 ? dtype : VKL_F32;
        size_t ne = (size_t)vkl_tensor_nelem(t);
        keep[i] = malloc(vkl_dtype_size(dt) * (ne ? ne : 1));
        if (!keep[i]) {
            rc = vkl_fail(e, "out of host memory");
            break;
        }
        rc = vkl_tensor_download(c, t, keep[i], dt, e);
        if (!rc) rc = vkl_st_writer_add_ref(wr, name + pl, dt, t->ndim, t->shape, keep[i], e);
        count++;
    }
    if (!rc && !count) rc = vkl_fail(e, "no weights named %s*", prefix);
    if (!rc) rc = vkl_st_writer_meta(wr, "format", "pt", e);
    for (int i = 0; i < nmeta && !rc; i++) rc = vkl_st_writer_meta(wr, meta[2 * i], meta[2 * i + 1], e);
    if (!rc) rc = vkl_st_writer_finish(wr, path, e);
    vkl_st_writer_free(wr);
    for (int i = 0; keep && i < n; i++) free(keep[i]);
    free(keep);
    return rc;
}

int vkl_sd_write_trained_folder(vkl_ctx *c, const char *base, const char *const *names, vkl_tensor *const *t, int n,
                                const char *const *parts, int nparts, const char *out, vkl_dtype dtype, int force,
                                vkl_err *e)
{
    if (dtype != VKL_F16 && dtype != VKL_F32) return vkl_fail(e, "models are written as f16 or f32");
    const char *list[8] = {0};
    if (nparts > 7) return vkl_fail(e, "too many model parts");
    for (int i = 0; i < nparts; i++) list[i] = parts[i];
    char tmp[4200], path[4400], prefix[64];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    vkl_err e2;
    vkl_dir_remove(tmp, &e2);
    int rc = vkl_dir_copy(base, tmp, skip_weights, (void *)list, e);
    for (int i = 0; i < nparts && !rc; i++) {
        snprintf(path, sizeof path, "%s/%s", tmp, parts[i]);
        rc = mkdir_one(path, e);
        snprintf(path, sizeof path, "%s/%s/%s", tmp, parts[i], part_file(parts[i]));
        snprintf(prefix, sizeof prefix, "%s.", parts[i]);
        if (!rc) rc = vkl_sd_write_part_weights(c, names, t, n, prefix, path, dtype, NULL, 0, e);
    }
    if (!rc) rc = vkl_dir_install(tmp, out, force, e);
    if (rc) vkl_dir_remove(tmp, &e2);
    return rc;
}
