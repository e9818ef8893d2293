/* `vklora info` for safetensors files: size by dtype, metadata, and what the
 * file is (checkpoint, component, adapter with its ranks and alphas). */
#include "info.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* PEFT keeps rank and alpha in adapter_config.json next to the weights, not in
 * the safetensors file; report them when that file is there. */
typedef struct {
    int found;
    double r, alpha;
    int rslora, dora;
} peft_config;

static void read_peft_config(const char *path, peft_config *pc)
{
    memset(pc, 0, sizeof *pc);
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0;
    char *cfg = malloc(dir + 32);
    if (!cfg) return;
    memcpy(cfg, path, dir);
    strcpy(cfg + dir, "adapter_config.json");
    FILE *fp = fopen(cfg, "rb");
    free(cfg);
    if (!fp) return;
    char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    cJSON *j = cJSON_ParseWithLength(buf, n);
    if (!j) return;
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "r");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, "lora_alpha");
    if (cJSON_IsNumber(r) && cJSON_IsNumber(a)) {
        pc->found = 1;
        pc->r = r->valuedouble;
        pc->alpha = a->valuedouble;
        pc->rslora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_rslora"));
        pc->dora = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "use_dora"));
    }
    cJSON_Delete(j);
}

typedef struct {
    uint64_t bytes[VKL_DTYPE_COUNT], total;
    int count[VKL_DTYPE_COUNT];
} dtype_sums;

static void sum_dtypes(const vkl_st_file *f, dtype_sums *s)
{
    memset(s, 0, sizeof *s);
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        s->bytes[t->dtype] += t->nbytes;
        s->count[t->dtype]++;
        s->total += t->nbytes;
    }
}

/* Metadata values can be long JSON blobs (kohya's tag frequencies) or hold
 * newlines: the text report shows one escaped, shortened line each. */
static void print_value_line(const char *v)
{
    size_t n = strlen(v), shown = n > 100 ? 100 : n;
    for (size_t i = 0; i < shown; i++) {
        char c = v[i];
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if ((unsigned char)c < 0x20) printf("\\x%02x", (unsigned char)c);
        else putchar(c);
    }
    if (shown < n) printf("... (%zu chars)", n);
    putchar('\n');
}

static void print_text(const vkl_st_file *f, const vkl_info_class *c, const dtype_sums *s, const peft_config *pc)
{
    printf("path: %s\n", vkl_st_path(f));
    printf("format: safetensors\n");
    printf("tensors: %d\n", vkl_st_count(f));
    printf("bytes: %llu", (unsigned long long)s->total);
    const char *sep = " (";
    for (int d = 0; d < VKL_DTYPE_COUNT; d++) {
        if (!s->count[d]) continue;
        printf("%s%s: %llu in %d tensors", sep, vkl_dtype_name((vkl_dtype)d), (unsigned long long)s->bytes[d],
               s->count[d]);
        sep = ", ";
    }
    printf("%s\n", vkl_st_count(f) ? ")" : "");
    printf("metadata: %d %s\n", vkl_st_meta_count(f), vkl_st_meta_count(f) == 1 ? "entry" : "entries");
    for (int i = 0; i < vkl_st_meta_count(f); i++) {
        printf("  %s = ", vkl_st_meta_key(f, i));
        print_value_line(vkl_st_meta_value(f, i));
    }
    printf("kind: %s", vkl_info_kind_title(c->kind));
    if (c->format[0]) printf(" (%s)", c->format);
    putchar('\n');
    if (c->kind == VKL_INFO_SD_CHECKPOINT)
        printf("  unet tensors: %d\n  vae tensors: %d\n  text encoder tensors: %d\n", c->unet_tensors,
               c->vae_tensors, c->te_tensors);
    if (c->kind != VKL_INFO_LORA) return;
    printf("  target modules: %d", c->modules);
    if (c->unet_modules || c->te_modules)
        printf(" (unet %d, text encoder %d)", c->unet_modules, c->te_modules);
    putchar('\n');
    if (c->ia3 && !c->nranks) {
        printf("  IA3: yes (one scaling vector per module; no rank or alpha)\n");
        return;
    }
    printf("  rank%s: ", c->nranks == 1 ? "" : "s");
    if (!c->nranks) printf("unknown (full-rank factors)");
    for (int i = 0; i < c->nranks; i++) printf(i ? ", %d" : "%d", c->ranks[i]);
    printf("%s\n", c->too_many_ranks ? ", ..." : "");
    if (c->nalphas) {
        printf("  alpha%s: ", c->nalphas == 1 ? "" : "s");
        for (int i = 0; i < c->nalphas; i++) printf(i ? ", %g" : "%g", c->alphas[i]);
        printf("%s\n", c->too_many_alphas ? ", ..." : "");
    } else if (pc->found) {
        printf("  alpha: %g (adapter_config.json, r %g%s)\n", pc->alpha, pc->r, pc->rslora ? ", rsLoRA" : "");
    } else {
        printf("  alpha: not stored (defaults to the rank)\n");
    }
    if (c->dora || pc->dora) printf("  DoRA: yes\n");
}

static cJSON *build_json(const vkl_st_file *f, const vkl_info_class *c, const dtype_sums *s, const peft_config *pc)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "path", vkl_st_path(f));
    cJSON_AddStringToObject(j, "format", "safetensors");
    cJSON_AddNumberToObject(j, "tensors", vkl_st_count(f));
    cJSON_AddNumberToObject(j, "bytes", (double)s->total);
    cJSON *bd = cJSON_AddObjectToObject(j, "bytes_by_dtype");
    cJSON *cd = cJSON_AddObjectToObject(j, "tensors_by_dtype");
    for (int d = 0; d < VKL_DTYPE_COUNT; d++) {
        if (!s->count[d]) continue;
        cJSON_AddNumberToObject(bd, vkl_dtype_name((vkl_dtype)d), (double)s->bytes[d]);
        cJSON_AddNumberToObject(cd, vkl_dtype_name((vkl_dtype)d), s->count[d]);
    }
    cJSON *m = cJSON_AddObjectToObject(j, "metadata");
    for (int i = 0; i < vkl_st_meta_count(f); i++)
        cJSON_AddStringToObject(m, vkl_st_meta_key(f, i), vkl_st_meta_value(f, i));
    cJSON_AddStringToObject(j, "kind", vkl_info_kind_name(c->kind));
    cJSON_AddStringToObject(j, "description", vkl_info_kind_title(c->kind));
    if (c->kind == VKL_INFO_SD_CHECKPOINT) {
        cJSON *k = cJSON_AddObjectToObject(j, "checkpoint");
        cJSON_AddStringToObject(k, "family", c->format);
        cJSON_AddNumberToObject(k, "unet_tensors", c->unet_tensors);
        cJSON_AddNumberToObject(k, "vae_tensors", c->vae_tensors);
        cJSON_AddNumberToObject(k, "text_encoder_tensors", c->te_tensors);
    }
    if (c->kind == VKL_INFO_LORA) {
        cJSON *l = cJSON_AddObjectToObject(j, "lora");
        cJSON_AddStringToObject(l, "format", c->format);
        cJSON_AddNumberToObject(l, "target_modules", c->modules);
        cJSON_AddNumberToObject(l, "unet_modules", c->unet_modules);
        cJSON_AddNumberToObject(l, "text_encoder_modules", c->te_modules);
        cJSON *r = cJSON_AddArrayToObject(l, "ranks");
        for (int i = 0; i < c->nranks; i++) cJSON_AddItemToArray(r, cJSON_CreateNumber(c->ranks[i]));
        cJSON *a = cJSON_AddArrayToObject(l, "alphas");
        for (int i = 0; i < c->nalphas; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(c->alphas[i]));
        if (!c->nalphas && pc->found) {
            cJSON_AddItemToArray(a, cJSON_CreateNumber(pc->alpha));
            cJSON_AddStringToObject(l, "alpha_source", "adapter_config.json");
            cJSON_AddBoolToObject(l, "rslora", pc->rslora);
        }
        cJSON_AddBoolToObject(l, "dora", c->dora || pc->dora);
        cJSON_AddBoolToObject(l, "ia3", c->ia3);
    }
    return j;
}

int vkl_info_safetensors(const char *path, int json)
{
    vkl_st_file *f;
    vkl_err e;
    if (vkl_st_open(path, &f, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_info_class c;
    if (vkl_info_classify(f, &c, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        vkl_st_close(f);
        return 1;
    }
    dtype_sums s;
    sum_dtypes(f, &s);
    peft_config pc = {0};
    if (c.kind == VKL_INFO_LORA && !c.nalphas) read_peft_config(path, &pc);
    int rc = 0;
    if (json) {
        cJSON *j = build_json(f, &c, &s, &pc);
        char *text = j ? cJSON_Print(j) : NULL;
        if (text) {
            puts(text);
        } else {
            vkl_log(VKL_LOG_ERROR, "%s: out of memory while building the JSON report", path);
            rc = 1;
        }
        cJSON_free(text);
        cJSON_Delete(j);
    } else {
        print_text(f, &c, &s, &pc);
    }
    vkl_st_close(f);
    return rc;
}
