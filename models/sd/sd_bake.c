#include "sd/sd_bake.h"
#include "io/text.h"

#include "io/dir.h"
#include "lora/lora_delta.h"
#include "sd/sd_source.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const vkl_sd_entry *x;
    float *w; /* the new weight, internal shape */
} baked;

typedef struct {
    const vkl_sd_source *src;
    baked *v;
    int n;
    const vkl_sd_bake_opts *o;
} bake;

static void bake_free(bake *b)
{
    for (int i = 0; i < b->n; i++) free(b->v[i].w);
    free(b->v);
}

static double mult_of(const vkl_lora_use *u, const char *module)
{
    return strncmp(module, "text_encoder", 12) == 0 ? u->te_mult : u->unet_mult;
}

/* W + sum m * delta for one weight, DoRA first on the original W. */
static int bake_one(bake *b, baked *k, const vkl_lora_use *uses, int n, vkl_err *e)
{
    uint64_t ne = vkl_sd_entry_nelem(k->x);
    size_t len = strlen(k->x->name) - 7; /* minus ".weight" */
    char mod[512];
    snprintf(mod, sizeof mod, "%.*s", (int)len, k->x->name);
    k->w = malloc(sizeof(float) * ne);
    double *acc = malloc(sizeof(double) * ne), *d = malloc(sizeof(double) * ne);
    int rc = !k->w || !acc || !d ? vkl_fail(e, "out of memory for %s", k->x->name) : 0;
    if (!rc) rc = vkl_sd_source_read_f32(b->src, k->x, k->w, ne, e);
    for (uint64_t i = 0; !rc && i < ne; i++) acc[i] = k->w[i];
    int doras = 0;
    for (int pass = 0; pass < 3 && !rc; pass++)
        for (int i = 0; i < n && !rc; i++) {
            const vkl_lora_module *m = vkl_lora_find(uses[i].lora, mod);
            if (!m || (m->kind == VKL_LORA_KIND_DORA ? 0 : m->kind == VKL_LORA_KIND_IA3 ? 2 : 1) != pass) continue;
            if (pass == 2) { /* IA3 scales the weight with everything else folded in */
                if (vkl_lora_wnelem(m) != ne || k->x->ndim != 2)
                    rc = vkl_fail(e, "IA3 module %s does not fit the linear weight %s", mod, k->x->name);
                int64_t I = m->wshape[1];
                double mu = mult_of(&uses[i], mod);
                for (uint64_t q = 0; !rc && q < ne; q++) {
                    double v = m->t[VKL_LORA_IA3].data[m->on_input ? (int64_t)q % I : (int64_t)q / I];
                    acc[q] *= mu == 1.0 ? v : 1.0 + mu * (v - 1.0);
                }
                continue;
            }
            if (pass == 0 && doras++)
                rc = vkl_fail(e, "module %s has DoRA modules in two adapters; at most one DoRA adapter may change a "
                                 "layer", mod);
            else if (vkl_lora_wnelem(m) != ne)
                rc = vkl_fail(e, "adapter module %s changes %llu elements, the model's %s has %llu", mod,
                              (unsigned long long)vkl_lora_wnelem(m), k->x->name, (unsigned long long)ne);
            else if (!(rc = vkl_lora_delta(m, k->w, d, e))) {
                double mu = mult_of(&uses[i], mod);
                for (uint64_t q = 0; q < ne; q++) acc[q] += mu * d[q];
            }
        }
    for (uint64_t i = 0; !rc && i < ne; i++) k->w[i] = (float)acc[i];
    free(acc);
    free(d);
    return rc;
}

static int bake_all(bake *b, const vkl_lora_use *uses, int n, vkl_err *e)
{
    int cap = 0;
    for (int i = 0; i < n; i++) cap += uses[i].lora->n;
    b->v = calloc((size_t)(cap ? cap : 1), sizeof *b->v);
    if (!b->v) return vkl_fail(e, "out of memory");
    for (int i = 0; i < n; i++)
        for (int k = 0; k < uses[i].lora->n; k++) {
            const vkl_lora_module *m = &uses[i].lora->m[k];
            if (!m->name) return vkl_fail(e, "adapter module %s was not resolved against the model", m->kname);
            char wn[600];
            snprintf(wn, sizeof wn, "%s.weight", m->name);
            const vkl_sd_entry *x = vkl_sd_source_find(b->src, wn);
            if (!x) return vkl_fail(e, "adapter module %s: the model has no weight %s", m->name, wn);
            int seen = 0;
            for (int j = 0; j < b->n && !seen; j++) seen = b->v[j].x == x;
            if (!seen) b->v[b->n++].x = x;
        }
    for (int j = 0; j < b->n; j++)
        if (bake_one(b, &b->v[j], uses, n, e)) return vkl_err_prefix(e, "baking %s: ", b->v[j].x->name), -1;
    return 0;
}

/* The adapted weight put back into its source tensor's form (full: the whole source tensor, f32). */
static void put_back(const baked *k, const vkl_st_tensor *t, float *full)
{
    uint64_t ne = vkl_sd_entry_nelem(k->x);
    switch (k->x->xform) {
    case VKL_SD_X_SPLIT: memcpy(full + (size_t)k->x->part * ne, k->w, sizeof(float) * ne); break;
    case VKL_SD_X_TRANSPOSE: {
        int64_t a = t->shape[0], b = t->shape[1];
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < b; j++) full[i * b + j] = k->w[j * a + i];
        break;
    }
    default: memcpy(full, k->w, sizeof(float) * ne); /* same data, maybe another shape */
    }
}

static int is_float(vkl_dtype d) { return d == VKL_F32 || d == VKL_F16 || d == VKL_BF16; }

/* Rewrites one weight file of the model: every tensor, adapted ones replaced. */
static int write_file(const bake *b, const char *in, const char *out, vkl_err *e)
{
    vkl_st_file *f;
    if (vkl_st_open(in, &f, e)) return -1;
    int nt = vkl_st_count(f), rc = 0;
    vkl_st_writer *w = vkl_st_writer_new();
    void **keep = calloc((size_t)(nt ? nt : 1), sizeof *keep);
    float *full = NULL;
    if (!w || !keep) rc = vkl_fail(e, "out of memory");
    for (int i = 0; i < nt && !rc; i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        vkl_dtype od = is_float(t->dtype) && b->o->dtype != VKL_DTYPE_COUNT ? b->o->dtype : t->dtype;
        int adapted = 0;
        for (int j = 0; j < b->n; j++) {
            const baked *k = &b->v[j];
            if (strcmp(vkl_sd_source_tensor(b->src, k->x)->name, t->name) || strcmp(vkl_sd_source_file(b->src, k->x), in))
                continue;
            if (!adapted++) {
                full = malloc(sizeof(float) * (t->nelem ? t->nelem : 1));
                if (!full || vkl_st_read(f, t, VKL_F32, full, e)) {
                    rc = full ? -1 : vkl_fail(e, "out of memory");
                    break;
                }
            }
            put_back(k, t, full);
        }
        if (rc) break;
        if (!adapted && od == t->dtype) {
            rc = vkl_st_writer_add_ref(w, t->name, t->dtype, t->ndim, t->shape, t->data, e);
            continue;
        }
        keep[i] = malloc(vkl_dtype_size(od) * (t->nelem ? t->nelem : 1));
        if (!keep[i]) rc = vkl_fail(e, "out of memory");
        else if (adapted) rc = vkl_convert_host(full, VKL_F32, keep[i], od, (size_t)t->nelem, e);
        else rc = vkl_st_read(f, t, od, keep[i], e);
        free(full);
        full = NULL;
        if (!rc) rc = vkl_st_writer_add_ref(w, t->name, od, t->ndim, t->shape, keep[i], e);
    }
    free(full);
    for (int i = 0; i < vkl_st_meta_count(f) && !rc; i++)
        if (strcmp(vkl_st_meta_key(f, i), "vklora_baked_adapters"))
            rc = vkl_st_writer_meta(w, vkl_st_meta_key(f, i), vkl_st_meta_value(f, i), e);
    if (!rc && b->o->description) rc = vkl_st_writer_meta(w, "vklora_baked_adapters", b->o->description, e);
    if (!rc) rc = vkl_st_writer_finish(w, out, e);
    vkl_st_writer_free(w);
    for (int i = 0; keep && i < nt; i++) free(keep[i]);
    free(keep);
    vkl_st_close(f);
    return rc;
}

/* Text copied through a temporary name. */
static int copy_text(const char *from, const char *to, vkl_err *e)
{
    char *text;
    if (vkl_read_text_file(from, 1 << 20, &text, NULL, e)) return -1;
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", to, (long)getpid()) >= (int)sizeof tmp) {
        free(text);
        return vkl_fail(e, "%s: path too long", to);
    }
    FILE *fp = fopen(tmp, "wb");
    int rc = !fp ? vkl_fail(e, "cannot write %s: %s", tmp, strerror(errno)) : 0;
    if (!rc && fputs(text, fp) < 0) rc = vkl_fail(e, "cannot write %s", tmp);
    if (!rc && (fflush(fp) || fsync(fileno(fp)))) rc = vkl_fail(e, "cannot write %s: %s", tmp, strerror(errno));
    if (fp && fclose(fp) && !rc) rc = vkl_fail(e, "cannot write %s", tmp);
    if (!rc && vkl_rename_durable(tmp, to)) rc = vkl_fail(e, "cannot rename %s to %s: %s", tmp, to, strerror(errno));
    if (rc) remove(tmp);
    free(text);
    return rc;
}

static int same_file(const char *a, const char *b)
{
    char ra[PATH_MAX], rb[PATH_MAX];
    return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

static int bake_single(const bake *b, const char *model, const char *out, vkl_err *e)
{
    if (same_file(model, out)) return vkl_fail(e, "%s: the output would replace the model it is made from", out);
    if (write_file(b, model, out, e)) return -1;
    const char *yaml = vkl_sd_source_yaml(b->src);
    size_t n = strlen(out), ne = strlen(".safetensors");
    if (!yaml || n <= ne || strcmp(out + n - ne, ".safetensors")) return 0;
    char y[4200];
    snprintf(y, sizeof y, "%.*s.yaml", (int)(n - ne), out);
    if (same_file(yaml, y)) return 0;
    if (copy_text(yaml, y, e)) {
        remove(out);
        return -1;
    }
    return 0;
}

/* Weight files in the model folders: rewritten ones come from write_file, the others would be stale. */
static int skip_weights(const char *rel, void *user)
{
    (void)user;
    static const char *parts[] = {"unet/", "vae/", "text_encoder/", "text_encoder_2/"};
    static const char *ext[] = {".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".safetensors.index.json",
                                ".bin.index.json"};
    int in_part = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts; i++)
        in_part |= !strncmp(rel, parts[i], strlen(parts[i])) && !strchr(rel + strlen(parts[i]), '/');
    if (!in_part) return 0;
    size_t n = strlen(rel);
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (n > strlen(ext[i]) && !strcmp(rel + n - strlen(ext[i]), ext[i])) return 1;
    return 0;
}

static int bake_folder(const bake *b, const char *model, const char *out, vkl_err *e)
{
    if (same_file(model, out)) return vkl_fail(e, "%s: the output would replace the model it is made from", out);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp-%ld", out, (long)getpid());
    int rc = vkl_dir_remove(tmp, e) || vkl_dir_copy(model, tmp, skip_weights, NULL, e) ? -1 : 0;
    const char *done[8];
    int nd = 0;
    size_t ml = strlen(model);
    for (int i = 0; i < vkl_sd_source_count(b->src) && !rc; i++) {
        const char *p = vkl_sd_source_file(b->src, vkl_sd_source_at(b->src, i));
        int seen = 0;
        for (int j = 0; j < nd && !seen; j++) seen = !strcmp(done[j], p);
        if (seen) continue;
        if (nd == 8 || strncmp(p, model, ml) || p[ml] != '/') {
            rc = vkl_fail(e, "%s: unexpected weight file %s", model, p);
            break;
        }
        done[nd++] = p;
        char o[8400];
        snprintf(o, sizeof o, "%s/%s", tmp, p + ml + 1);
        rc = write_file(b, p, o, e);
    }
    if (!rc) rc = vkl_dir_install(tmp, out, b->o->force, e);
    if (rc) {
        vkl_err e2;
        vkl_dir_remove(tmp, &e2);
    }
    return rc;
}

int vkl_sd_bake(const char *model, const vkl_lora_use *uses, int n, const char *out, const vkl_sd_bake_opts *o,
                vkl_err *e)
{
    if (o->dtype != VKL_DTYPE_COUNT && o->dtype != VKL_F32 && o->dtype != VKL_F16)
        return vkl_fail(e, "baked checkpoints are written as f32 or f16, not %s", vkl_dtype_name(o->dtype));
    vkl_sd_source *src;
    vkl_sd_source_opts so = {o->yaml, 0};
    if (vkl_sd_source_open(model, &so, &src, e)) return -1;
    bake b = {src, NULL, 0, o};
    int rc = bake_all(&b, uses, n, e);
    if (!rc)
        rc = vkl_sd_source_layout(src) == VKL_SD_LAYOUT_LDM ? bake_single(&b, model, out, e)
                                                             : bake_folder(&b, model, out, e);
    bake_free(&b);
    vkl_sd_source_close(src);
    return rc;
}
