/* Parsing and validating a safetensors header. Every field of every entry is
 * checked before any tensor is handed out, so later code can trust shapes,
 * sizes and data pointers without re-checking. */
#include "safetensors_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    vkl_st_tensor t;
    uint64_t begin, end;
} entry;

/* 2^53: the largest range in which a JSON number (a double in cJSON) is an exact integer. */
#define MAX_EXACT 9007199254740992.0

static const char *const unsupported_tags[] = {"U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
                                               "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64"};

static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d) || d < 0 || d > MAX_EXACT) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* Describes a JSON value that should have been an unsigned integer. */
static const char *why_not_uint(const cJSON *v)
{
    if (!cJSON_IsNumber(v)) return "is not a number";
    double d = v->valuedouble;
    if (d < 0) return "is negative";
    if (!isfinite(d) || d > MAX_EXACT) return "is out of range";
    return "is not an integer";
}

static int parse_dtype(const char *L, const char *name, const cJSON *v, vkl_dtype *out, vkl_err *e)
{
    if (!cJSON_IsString(v))
        return vkl_fail(e, "%s: tensor '%s': \"dtype\" is not a string", L, name);
    for (int i = 0; i < VKL_DTYPE_COUNT; i++) {
        if (!strcmp(v->valuestring, vkl_st__dtype_tag((vkl_dtype)i))) {
            *out = (vkl_dtype)i;
            return 0;
        }
    }
    for (size_t i = 0; i < sizeof unsupported_tags / sizeof *unsupported_tags; i++)
        if (!strcmp(v->valuestring, unsupported_tags[i]))
            return vkl_fail(e, "%s: tensor '%s': unsupported dtype \"%s\"", L, name, v->valuestring);
    return vkl_fail(e, "%s: tensor '%s': unknown dtype \"%.40s\"", L, name, v->valuestring);
}

static int parse_shape(const char *L, const char *name, const cJSON *v, vkl_st_tensor *t, vkl_err *e)
{
    if (!cJSON_IsArray(v)) return vkl_fail(e, "%s: tensor '%s': \"shape\" is not an array", L, name);
    int nd = cJSON_GetArraySize(v);
    if (nd > VKL_ST_MAX_DIMS)
        return vkl_fail(e, "%s: tensor '%s': shape has %d dims, too many dims (limit %d)", L, name, nd,
                        VKL_ST_MAX_DIMS);
    t->ndim = nd;
    t->nelem = 1;
    int i = 0;
    int overflow = 0;
    for (const cJSON *d = v->child; d; d = d->next, i++) {
        uint64_t x;
        if (json_uint(d, &x))
            return vkl_fail(e, "%s: tensor '%s': shape entry %d %s", L, name, i, why_not_uint(d));
        t->shape[i] = (int64_t)x;
        if (x && t->nelem > UINT64_MAX / x) overflow = 1;
        t->nelem *= x;
    }
    /* A zero dimension makes the product 0 however large the others are, which
     * is a legitimate (empty) tensor; only a non-empty overflowing shape is an error. */
    for (i = 0; i < nd; i++) {
        if (t->shape[i] == 0) {
            t->nelem = 0;
            return 0;
        }
    }
    if (overflow)
        return vkl_fail(e, "%s: tensor '%s': shape element count overflows 64 bits", L, name);
    return 0;
}

static int parse_offsets(const char *L, const char *name, const cJSON *v, uint64_t data_size, entry *en,
                         vkl_err *e)
{
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return vkl_fail(e, "%s: tensor '%s': \"data_offsets\" is not a [begin, end] pair", L, name);
    if (json_uint(v->child, &en->begin))
        return vkl_fail(e, "%s: tensor '%s': data_offsets begin %s", L, name, why_not_uint(v->child));
    if (json_uint(v->child->next, &en->end))
        return vkl_fail(e, "%s: tensor '%s': data_offsets end %s", L, name, why_not_uint(v->child->next));
    if (en->end < en->begin)
        return vkl_fail(e, "%s: tensor '%s': data_offsets end %llu is before begin %llu", L, name,
                        (unsigned long long)en->end, (unsigned long long)en->begin);
    if (en->end > data_size)
        return vkl_fail(e, "%s: tensor '%s': data range [%llu, %llu) goes past the end of the data (%llu bytes)",
                        L, name, (unsigned long long)en->begin, (unsigned long long)en->end,
                        (unsigned long long)data_size);
    return 0;
}

static int parse_tensor(const vkl_st_file *f, const cJSON *it, const uint8_t *data, uint64_t data_size,
                        entry *en, vkl_err *e)
{
    const char *L = f->label, *name = it->string;
    if (!name[0]) return vkl_fail(e, "%s: a tensor has an empty name", L);
    if (!cJSON_IsObject(it)) return vkl_fail(e, "%s: tensor '%s': entry is not a JSON object", L, name);
    const cJSON *dt = NULL, *shape = NULL, *offs = NULL;
    for (const cJSON *c = it->child; c; c = c->next) {
        const cJSON **slot = !strcmp(c->string, "dtype")          ? &dt
                             : !strcmp(c->string, "shape")        ? &shape
                             : !strcmp(c->string, "data_offsets") ? &offs
                                                                  : NULL;
        if (!slot) continue; /* unknown fields are ignored, as the reference implementation does */
        if (*slot) return vkl_fail(e, "%s: tensor '%s': field \"%s\" appears twice", L, name, c->string);
        *slot = c;
    }
    if (!dt) return vkl_fail(e, "%s: tensor '%s': missing \"dtype\"", L, name);
    if (!shape) return vkl_fail(e, "%s: tensor '%s': missing \"shape\"", L, name);
    if (!offs) return vkl_fail(e, "%s: tensor '%s': missing \"data_offsets\"", L, name);
    vkl_st_tensor *t = &en->t;
    if (parse_dtype(L, name, dt, &t->dtype, e)) return -1;
    if (parse_shape(L, name, shape, t, e)) return -1;
    if (parse_offsets(L, name, offs, data_size, en, e)) return -1;
    uint64_t es = vkl_dtype_size(t->dtype);
    if (t->nelem > UINT64_MAX / es)
        return vkl_fail(e, "%s: tensor '%s': shape byte size overflows 64 bits", L, name);
    t->nbytes = t->nelem * es;
    if (t->nbytes != en->end - en->begin)
        return vkl_fail(e, "%s: tensor '%s': shape and dtype %s need %llu bytes but data_offsets [%llu, %llu) "
                        "span %llu bytes (size disagrees with the byte range)",
                        L, name, vkl_st__dtype_tag(t->dtype), (unsigned long long)t->nbytes,
                        (unsigned long long)en->begin, (unsigned long long)en->end,
                        (unsigned long long)(en->end - en->begin));
    t->data = data + en->begin;
    if (!(t->name = strdup(name))) return vkl_fail(e, "%s: out of memory", L);
    return 0;
}

static int str_ptr_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int parse_meta(vkl_st_file *f, const cJSON *m, vkl_err *e)
{
    const char *L = f->label;
    if (!cJSON_IsObject(m)) return vkl_fail(e, "%s: __metadata__ is not a JSON object", L);
    int n = cJSON_GetArraySize(m);
    f->meta_key = calloc((size_t)n + 1, sizeof *f->meta_key);
    f->meta_val = calloc((size_t)n + 1, sizeof *f->meta_val);
    if (!f->meta_key || !f->meta_val) return vkl_fail(e, "%s: out of memory", L);
    for (const cJSON *c = m->child; c; c = c->next) {
        char *k = strdup(c->string);
        char *v = cJSON_IsString(c) ? strdup(c->valuestring) : cJSON_PrintUnformatted(c);
        f->meta_key[f->nmeta] = k;
        f->meta_val[f->nmeta] = v;
        f->nmeta++;
        if (!k || !v) return vkl_fail(e, "%s: out of memory", L);
    }
    /* sorted copy: a quadratic scan would let a hostile header with millions
     * of keys stall the reader */
    char **sorted = malloc(((size_t)f->nmeta + 1) * sizeof *sorted);
    if (!sorted) return vkl_fail(e, "%s: out of memory", L);
    memcpy(sorted, f->meta_key, (size_t)f->nmeta * sizeof *sorted);
    qsort(sorted, (size_t)f->nmeta, sizeof *sorted, str_ptr_cmp);
    int rc = 0;
    for (int i = 1; i < f->nmeta && !rc; i++)
        if (!strcmp(sorted[i], sorted[i - 1]))
            rc = vkl_fail(e, "%s: __metadata__ key '%s' appears twice", L, sorted[i]);
    free(sorted);
    return rc;
}

typedef struct {
    const char *name;
    int index;
} name_ref;

static int name_ref_cmp(const void *a, const void *b)
{
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

static int by_offset_cmp(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return strcmp(x->t.name, y->t.name);
}

/* Builds the name index and rejects duplicates. */
static int index_names(vkl_st_file *f, vkl_err *e)
{
    name_ref *refs = malloc(((size_t)f->n + 1) * sizeof *refs);
    f->by_name = malloc(((size_t)f->n + 1) * sizeof *f->by_name);
    if (!refs || !f->by_name) {
        free(refs);
        return vkl_fail(e, "%s: out of memory", f->label);
    }
    for (int i = 0; i < f->n; i++) refs[i] = (name_ref){f->t[i].name, i};
    qsort(refs, (size_t)f->n, sizeof *refs, name_ref_cmp);
    int rc = 0;
    for (int i = 0; i < f->n; i++) {
        f->by_name[i] = refs[i].index;
        if (i && !rc && !strcmp(refs[i].name, refs[i - 1].name))
            rc = vkl_fail(e, "%s: tensor '%s': duplicate name (appears twice in the header)", f->label,
                          refs[i].name);
    }
    free(refs);
    return rc;
}

static int check_overlap(const vkl_st_file *f, const entry *en, vkl_err *e)
{
    const entry *prev = NULL;
    for (int i = 0; i < f->n; i++) {
        if (en[i].begin == en[i].end) continue; /* an empty range overlaps nothing */
        if (prev && en[i].begin < prev->end)
            return vkl_fail(e, "%s: tensor '%s': data range [%llu, %llu) overlaps tensor '%s' [%llu, %llu)",
                            f->label, en[i].t.name, (unsigned long long)en[i].begin,
                            (unsigned long long)en[i].end, prev->t.name, (unsigned long long)prev->begin,
                            (unsigned long long)prev->end);
        if (!prev || en[i].end > prev->end) prev = &en[i];
    }
    return 0;
}

static int check_text(const vkl_st_file *f, const char *h, size_t n, vkl_err *e)
{
    const char *nul = memchr(h, 0, n);
    if (nul) return vkl_fail(e, "%s: header contains a NUL byte at byte %zu", f->label, (size_t)(nul - h));
    size_t bad = vkl_st__utf8_bad_at(h, n);
    if (bad < n) return vkl_fail(e, "%s: header is not valid UTF-8 (byte %zu)", f->label, bad);
    return 0;
}

/* True when the text ends inside a string or with a bracket still open:
 * tells "cut short" apart from a syntax error for the message. */
static int json_unterminated(const char *h, size_t n)
{
    size_t depth = 0;
    int in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = h[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && depth > 0) {
            depth--;
        }
    }
    return in_str || depth > 0;
}

static int is_json_space(char c) { return c == ' ' || c == '\n' || c == '\r' || c == '\t'; }

static cJSON *parse_json(const vkl_st_file *f, const char *h, size_t n, vkl_err *e)
{
    size_t last = n;
    while (last > 0 && is_json_space(h[last - 1])) last--;
    if (last == 0) {
        vkl_fail(e, "%s: header is empty (expected a JSON object)", f->label);
        return NULL;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(h, n, &end, 0);
    size_t pos = end && end >= h && end <= h + n ? (size_t)(end - h) : n;
    if (!root) {
        if (pos >= last || json_unterminated(h, n))
            vkl_fail(e, "%s: header JSON is unterminated (input ends inside a value at byte %zu)", f->label, last);
        else
            vkl_fail(e, "%s: header is not valid JSON (syntax error at byte %zu of %zu)", f->label, pos, n);
        return NULL;
    }
    for (size_t i = pos; i < n; i++) {
        if (!is_json_space(h[i])) {
            vkl_fail(e, "%s: header has trailing bytes after the JSON object (byte %zu)", f->label, i);
            cJSON_Delete(root);
            return NULL;
        }
    }
    if (!cJSON_IsObject(root)) {
        vkl_fail(e, "%s: header JSON is not an object", f->label);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int parse_entries(vkl_st_file *f, const cJSON *root, const uint8_t *data, uint64_t data_size,
                         entry *en, vkl_err *e)
{
    int seen_meta = 0;
    for (const cJSON *it = root->child; it; it = it->next) {
        if (!strcmp(it->string, "__metadata__")) {
            if (seen_meta++) return vkl_fail(e, "%s: __metadata__ appears twice", f->label);
            if (parse_meta(f, it, e)) return -1;
            continue;
        }
        if (parse_tensor(f, it, data, data_size, &en[f->n], e)) {
            free((char *)en[f->n].t.name);
            return -1;
        }
        f->n++;
    }
    return 0;
}

int vkl_st__parse(vkl_st_file *f, vkl_err *e)
{
    const char *L = f->label;
    if (f->size < 8)
        return vkl_fail(e, "%s: file is %zu bytes, too short for a safetensors header length (8 bytes)", L,
                        f->size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | f->buf[i];
    if (n > VKL_ST_MAX_HEADER)
        return vkl_fail(e, "%s: header length %llu is absurd (limit %u bytes); not a safetensors file?", L,
                        (unsigned long long)n, VKL_ST_MAX_HEADER);
    if (n > f->size - 8)
        return vkl_fail(e, "%s: header length %llu goes past the end of the file (%zu bytes)", L,
                        (unsigned long long)n, f->size);
    /* A private NUL-terminated copy, so that cJSON cannot read past the header
     * whatever the bytes are. */
    char *h = malloc((size_t)n + 1);
    if (!h) return vkl_fail(e, "%s: out of memory for a %llu-byte header", L, (unsigned long long)n);
    memcpy(h, f->buf + 8, (size_t)n);
    h[n] = 0;
    cJSON *root = NULL;
    entry *en = NULL;
    int rc = -1;
    if (check_text(f, h, (size_t)n, e)) goto out;
    if (!(root = parse_json(f, h, (size_t)n, e))) goto out;
    int cap = cJSON_GetArraySize(root);
    en = calloc((size_t)cap + 1, sizeof *en);
    if (!en) {
        vkl_fail(e, "%s: out of memory", L);
        goto out;
    }
    const uint8_t *data = f->buf + 8 + n;
    if (parse_entries(f, root, data, f->size - 8 - n, en, e)) goto out;
    qsort(en, (size_t)f->n, sizeof *en, by_offset_cmp);
    f->t = malloc(((size_t)f->n + 1) * sizeof *f->t);
    if (!f->t) {
        vkl_fail(e, "%s: out of memory", L);
        goto out;
    }
    for (int i = 0; i < f->n; i++) f->t[i] = en[i].t;
    /* names are owned by f->t from here on; en keeps borrowed copies for the overlap check */
    if (index_names(f, e) || check_overlap(f, en, e)) goto out;
    rc = 0;
out:
    if (rc && !f->t && en)
        for (int i = 0; i < f->n; i++) free((char *)en[i].t.name);
    if (rc && !f->t) f->n = 0;
    free(en);
    cJSON_Delete(root);
    free(h);
    return rc;
}

void vkl_st__free_tables(vkl_st_file *f)
{
    if (f->t)
        for (int i = 0; i < f->n; i++) free((char *)f->t[i].name);
    free(f->t);
    free(f->by_name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    free(f->meta_key);
    free(f->meta_val);
    f->t = NULL;
    f->by_name = NULL;
    f->meta_key = f->meta_val = NULL;
    f->n = f->nmeta = 0;
}
