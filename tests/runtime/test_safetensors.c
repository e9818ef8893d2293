/* safetensors reader and writer: exact round trips for every dtype, the
 * reference kit's files against its manifest, hostile headers (each must give
 * its specific error), and the all-or-nothing behaviour of the writer. */
#include "vkl_test.h"

#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- helpers */

static uint8_t *slurp(const char *path, size_t *size)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, fp), (size_t)n);
    fclose(fp);
    *size = (size_t)n;
    return b;
}

static void spit(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(p, 1, n, fp), n);
    assert_int_equal(fclose(fp), 0);
}

static int count_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void assert_contains(const char *msg, const char *frag)
{
    if (!strstr(msg, frag)) {
        print_error("message \"%s\" lacks \"%s\"\n", msg, frag);
        fail();
    }
}

/* Values exactly representable in every dtype (bool gets v != 0). */
static const double sample_values[6] = {0, 1, -2, 3, 100, -7};

static void fill_dtype(vkl_dtype dt, void *dst, size_t n)
{
    vkl_err e;
    double *src = malloc(n * sizeof *src + 1);
    for (size_t i = 0; i < n; i++) src[i] = sample_values[i % 6];
    if (dt == VKL_U8)
        for (size_t i = 0; i < n; i++) src[i] = src[i] < 0 ? -src[i] : src[i];
    assert_int_equal(vkl_convert_host(src, VKL_F64, dst, dt, n, &e), 0);
    free(src);
}

/* ---- round trip */

/* The dtypes safetensors stores: those before the block-quantised ones. */
#define ST_DTYPE_COUNT VKL_NF4

static void roundtrip_every_dtype(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/rt.safetensors", dir);
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e;
    uint8_t want[ST_DTYPE_COUNT][6 * 8];
    const int64_t shape23[2] = {2, 3}, empty0[1] = {0}, empty3[3] = {3, 0, 2};
    char name[64];
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        vkl_dtype dt = (vkl_dtype)d;
        fill_dtype(dt, want[d], 6);
        snprintf(name, sizeof name, "%s.matrix", vkl_dtype_name(dt));
        assert_int_equal(vkl_st_writer_add(w, name, dt, 2, shape23, want[d], &e), 0);
        snprintf(name, sizeof name, "%s.scalar", vkl_dtype_name(dt));
        assert_int_equal(vkl_st_writer_add(w, name, dt, 0, NULL, want[d] + vkl_dtype_size(dt), &e), 0);
        snprintf(name, sizeof name, "%s.empty", vkl_dtype_name(dt));
        assert_int_equal(vkl_st_writer_add(w, name, dt, 1, empty0, NULL, &e), 0);
        snprintf(name, sizeof name, "%s.empty3", vkl_dtype_name(dt));
        assert_int_equal(vkl_st_writer_add(w, name, dt, 3, empty3, NULL, &e), 0);
    }
    /* the writer copies: scribbling over the source must not change the file */
    uint8_t saved[sizeof want];
    memcpy(saved, want, sizeof want);
    memset(want, 0x5a, sizeof want);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
    vkl_st_writer_free(w);
    memcpy(want, saved, sizeof want);
    /* a quantised dtype has no safetensors form */
    vkl_st_writer *wq = vkl_st_writer_new();
    assert_int_equal(vkl_st_writer_add(wq, "q", VKL_NF4, 2, shape23, want[0], &e), -1);
    assert_contains(e.msg, "nf4");
    vkl_st_writer_free(wq);

    size_t size;
    uint8_t *raw = slurp(path, &size);
    assert_non_null(raw);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | raw[i];
    assert_int_equal((8 + hlen) % 8, 0);
    assert_int_equal(raw[8], '{');

    vkl_st_file *f;
    if (vkl_st_open(path, &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(f), 4 * ST_DTYPE_COUNT);
    assert_string_equal(vkl_st_path(f), path);
    const uint8_t *prev_end = NULL;
    for (int i = 0; i < vkl_st_count(f); i++) {
        /* insertion order is file order: the name sequence repeats per dtype */
        const vkl_st_tensor *t = vkl_st_at(f, i);
        static const char *kinds[4] = {"matrix", "scalar", "empty", "empty3"};
        snprintf(name, sizeof name, "%s.%s", vkl_dtype_name((vkl_dtype)(i / 4)), kinds[i % 4]);
        assert_string_equal(t->name, name);
        assert_ptr_equal(vkl_st_find(f, name), t);
        if (prev_end) assert_ptr_equal(t->data, prev_end);
        prev_end = (const uint8_t *)t->data + t->nbytes;
    }
    assert_ptr_equal(prev_end, raw ? (const uint8_t *)vkl_st_at(f, 0)->data + (size - 8 - hlen) : NULL);
    for (int d = 0; d < ST_DTYPE_COUNT; d++) {
        vkl_dtype dt = (vkl_dtype)d;
        size_t es = vkl_dtype_size(dt);
        snprintf(name, sizeof name, "%s.matrix", vkl_dtype_name(dt));
        const vkl_st_tensor *t = vkl_st_find(f, name);
        assert_non_null(t);
        assert_int_equal(t->dtype, dt);
        assert_int_equal(t->ndim, 2);
        assert_int_equal(t->shape[0], 2);
        assert_int_equal(t->shape[1], 3);
        assert_int_equal(t->nelem, 6);
        assert_int_equal(t->nbytes, 6 * es);
        assert_memory_equal(t->data, want[d], 6 * es);
        /* insertion order packs mixed dtypes without gaps, so later i64/f64
         * tensors are misaligned here: this also covers vkl_st_read's bounce path */
        uint8_t native[6 * 8];
        assert_int_equal(vkl_st_read(f, t, dt, native, &e), 0);
        assert_memory_equal(native, want[d], 6 * es);
        float as_f32[6];
        assert_int_equal(vkl_st_read_f32(f, name, as_f32, 6, &e), 0);
        for (int i = 0; i < 6; i++) {
            double v = sample_values[i];
            if (dt == VKL_U8 && v < 0) v = -v;
            if (dt == VKL_BOOL) v = v != 0;
            assert_true(as_f32[i] == (float)v);
        }

        snprintf(name, sizeof name, "%s.scalar", vkl_dtype_name(dt));
        t = vkl_st_find(f, name);
        assert_non_null(t);
        assert_int_equal(t->ndim, 0);
        assert_int_equal(t->nelem, 1);
        assert_int_equal(t->nbytes, es);
        assert_memory_equal(t->data, want[d] + es, es);

        snprintf(name, sizeof name, "%s.empty3", vkl_dtype_name(dt));
        t = vkl_st_find(f, name);
        assert_non_null(t);
        assert_int_equal(t->ndim, 3);
        assert_int_equal(t->shape[0], 3);
        assert_int_equal(t->shape[1], 0);
        assert_int_equal(t->shape[2], 2);
        assert_int_equal(t->nelem, 0);
        assert_int_equal(t->nbytes, 0);
        assert_int_equal(vkl_st_read(f, t, VKL_F32, NULL, &e), 0);
    }
    assert_null(vkl_st_find(f, "absent"));
    float one;
    assert_int_equal(vkl_st_read_f32(f, "absent", &one, 1, &e), -1);
    assert_contains(e.msg, "no tensor named 'absent'");
    assert_contains(e.msg, path);
    assert_int_equal(vkl_st_read_f32(f, "f32.matrix", &one, 1, &e), -1);
    assert_contains(e.msg, "tensor 'f32.matrix' has 6 elements, expected 1");
    vkl_st_close(f);
    free(raw);
    vkl_test_rmtree(dir);
}

static void metadata_roundtrip(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/meta.safetensors", dir);
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e;
    static const char *keys[] = {"ss_network_dim", "quote\"back\\slash", "control", "unicode ✓"};
    static const char *vals[] = {"4", "{\"conv_dim\": \"4\"}", "line1\nline2\ttab\x01", "Grüße 猫 🐱"};
    for (int i = 0; i < 4; i++) assert_int_equal(vkl_st_writer_meta(w, keys[i], vals[i], &e), 0);
    assert_int_equal(vkl_st_writer_meta(w, "ss_network_dim", "8", &e), -1);
    assert_contains(e.msg, "metadata key 'ss_network_dim' set twice");
    assert_int_equal(vkl_st_writer_meta(w, "bad", "\xff\xfe", &e), -1);
    assert_contains(e.msg, "not valid UTF-8");
    float x = 1.5f;
    assert_int_equal(vkl_st_writer_add(w, "x", VKL_F32, 0, NULL, &x, &e), 0);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
    vkl_st_writer_free(w);

    vkl_st_file *f;
    if (vkl_st_open(path, &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_meta_count(f), 4);
    for (int i = 0; i < 4; i++) {
        assert_string_equal(vkl_st_meta_key(f, i), keys[i]);
        assert_string_equal(vkl_st_meta_value(f, i), vals[i]);
        assert_string_equal(vkl_st_meta_get(f, keys[i]), vals[i]);
    }
    assert_null(vkl_st_meta_get(f, "absent"));
    assert_null(vkl_st_meta_key(f, 4));
    vkl_st_close(f);
    vkl_test_rmtree(dir);
}

/* ---- reference files */

/* Checks every tensor the manifest lists for rel (names, dtypes, shapes) and
 * that the file has no others. */
static void check_against_manifest(const cJSON *files, const char *rel)
{
    const cJSON *entry = cJSON_GetObjectItemCaseSensitive(files, rel);
    assert_non_null(entry);
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(entry, "tensors");
    assert_non_null(tensors);
    char full[600];
    snprintf(full, sizeof full, "refkit/sd/%s", rel);
    vkl_st_file *f;
    vkl_err e;
    if (vkl_st_open(vkl_test_shared_path(full), &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(f), cJSON_GetArraySize(tensors));
    for (const cJSON *t = tensors->child; t; t = t->next) {
        const vkl_st_tensor *got = vkl_st_find(f, t->string);
        if (!got) fail_msg("%s: tensor %s missing", rel, t->string);
        vkl_dtype dt;
        assert_int_equal(vkl_dtype_parse(cJSON_GetObjectItemCaseSensitive(t, "dtype")->valuestring, &dt), 0);
        assert_int_equal(got->dtype, dt);
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(t, "shape");
        assert_int_equal(got->ndim, cJSON_GetArraySize(shape));
        int d = 0;
        for (const cJSON *s = shape->child; s; s = s->next, d++) assert_int_equal(got->shape[d], s->valueint);
    }
    /* file order really is ascending offset */
    for (int i = 1; i < vkl_st_count(f); i++)
        assert_true((const uint8_t *)vkl_st_at(f, i)->data >= (const uint8_t *)vkl_st_at(f, i - 1)->data);
    vkl_st_close(f);
}

static void reference_files_match_manifest(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/manifest.json");
    size_t n;
    char *text = (char *)slurp(vkl_test_shared_path("refkit/sd/manifest.json"), &n);
    assert_non_null(text);
    cJSON *m = cJSON_ParseWithLength(text, n);
    assert_non_null(m);
    const cJSON *files = cJSON_GetObjectItemCaseSensitive(m, "files");
    int checked = 0;
    for (const cJSON *fe = files->child; fe; fe = fe->next) {
        size_t len = strlen(fe->string);
        if (len < 12 || strcmp(fe->string + len - 12, ".safetensors")) continue;
        check_against_manifest(files, fe->string);
        checked++;
    }
    assert_true(checked >= 20);
    /* the two files the brief names, spelled out so a thinned manifest cannot hide them */
    check_against_manifest(files, "vectors/unet.safetensors");
    check_against_manifest(files, "tiny-sd-ldm-fp16.safetensors");
    cJSON_Delete(m);
    free(text);
}

static void reference_kohya_metadata(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/vectors/lora/lora_kohya.safetensors");
    vkl_st_file *f;
    vkl_err e;
    if (vkl_st_open(vkl_test_shared_path("refkit/sd/vectors/lora/lora_kohya.safetensors"), &f, &e))
        fail_msg("%s", e.msg);
    assert_string_equal(vkl_st_meta_get(f, "ss_network_dim"), "4");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_alpha"), "2.0");
    assert_string_equal(vkl_st_meta_get(f, "ss_network_args"), "{\"conv_dim\": \"4\", \"conv_alpha\": \"2\"}");
    float alpha;
    assert_int_equal(vkl_st_read_f32(f, "lora_te_text_model_encoder_layers_0_mlp_fc1.alpha", &alpha, 1, &e), 0);
    assert_true(alpha == 2.0f);
    vkl_st_close(f);
}

/* The kit's fp16 and fp32 single-file checkpoints hold the same fp16-exact
 * weights, so every tensor must agree bit for bit after upcasting. */
static void reference_fp16_equals_fp32(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm-fp16.safetensors");
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm.safetensors");
    vkl_st_file *h, *s;
    vkl_err e;
    if (vkl_st_open(vkl_test_shared_path("refkit/sd/tiny-sd-ldm-fp16.safetensors"), &h, &e)) fail_msg("%s", e.msg);
    if (vkl_st_open(vkl_test_shared_path("refkit/sd/tiny-sd-ldm.safetensors"), &s, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(h), 790);
    assert_int_equal(vkl_st_count(s), 790);
    uint64_t total = 0;
    for (int i = 0; i < vkl_st_count(h); i++) {
        const vkl_st_tensor *a = vkl_st_at(h, i);
        const vkl_st_tensor *b = vkl_st_find(s, a->name);
        assert_non_null(b);
        assert_int_equal(a->dtype, VKL_F16);
        assert_int_equal(b->dtype, VKL_F32);
        assert_int_equal(a->nelem, b->nelem);
        float *x = malloc(a->nelem * sizeof *x + 4), *y = malloc(b->nelem * sizeof *y + 4);
        assert_int_equal(vkl_st_read(h, a, VKL_F32, x, &e), 0);
        assert_int_equal(vkl_st_read(s, b, VKL_F32, y, &e), 0);
        assert_memory_equal(x, y, a->nelem * sizeof *x);
        /* and f32 -> f16 conversion of the fp32 copy reproduces the fp16 bytes */
        uint16_t *z = malloc(b->nelem * 2 + 2);
        assert_int_equal(vkl_st_read(s, b, VKL_F16, z, &e), 0);
        assert_memory_equal(z, a->data, a->nbytes);
        total += a->nelem;
        free(x);
        free(y);
        free(z);
    }
    /* UNet + VAE + text encoder parameter counts from the kit's README */
    assert_int_equal(total, 2164452 + 437847 + 1603951);
    vkl_st_close(h);
    vkl_st_close(s);
}

/* ---- hostile files */

typedef struct {
    const char *what;
    const char *header; /* JSON text, used unless raw is set */
    size_t data_len;
    const char *expect; /* fragment the error must contain */
} hostile;

#define T1 "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"
static const hostile hostile_cases[] = {
    {"unterminated JSON", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_o", 8, "unterminated"},
    {"syntax error", "{\"a\" 1}", 0, "not valid JSON"},
    {"not an object", "[1,2,3]", 0, "not an object"},
    {"string header", "\"hello\"", 0, "not an object"},
    {"trailing bytes", T1 "} xyz", 8, "trailing bytes"},
    {"empty header", "", 0, "header is empty"},
    {"blank header", "        ", 0, "header is empty"},
    {"invalid UTF-8", "{\"a\xff\":{}}", 0, "not valid UTF-8"},
    {"overlong UTF-8", "{\"a\xc0\xaf\":{}}", 0, "not valid UTF-8"},
    {"UTF-8 surrogate", "{\"a\xed\xa0\x80\":{}}", 0, "not valid UTF-8"},
    {"truncated UTF-8", "{\"a\":{}}\xe2\x82", 0, "not valid UTF-8"},
    {"entry not object", "{\"a\":5}", 0, "tensor 'a': entry is not a JSON object"},
    {"empty name", "{\"\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", 4, "empty name"},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "tensor 'a': missing \"dtype\""},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "tensor 'a': missing \"shape\""},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "tensor 'a': missing \"data_offsets\""},
    {"dtype twice", "{\"a\":{\"dtype\":\"F32\",\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': field \"dtype\" appears twice"},
    {"dtype not string", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': \"dtype\" is not a string"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': unknown dtype \"Q4\""},
    {"lower-case dtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': unknown dtype \"f32\""},
    {"unsupported dtype", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 8,
     "tensor 'a': unsupported dtype \"F8_E4M3\""},
    {"offsets not pair", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
     "tensor 'a': \"data_offsets\" is not a [begin, end] pair"},
    {"offsets triple", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
     "tensor 'a': \"data_offsets\" is not a [begin, end] pair"},
    {"offsets object", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{\"b\":0}}}", 8,
     "tensor 'a': \"data_offsets\" is not a [begin, end] pair"},
    {"offset string", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",8]}}", 8,
     "tensor 'a': data_offsets begin is not a number"},
    {"offset fraction", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,7.5]}}", 8,
     "tensor 'a': data_offsets end is not an integer"},
    {"offset negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
     "tensor 'a': data_offsets begin is negative"},
    {"offset huge", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,1e400]}}", 8,
     "tensor 'a': data_offsets end is out of range"},
    {"end before begin", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8,
     "tensor 'a': data_offsets end 4 is before begin 8"},
    {"range past data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[100],\"data_offsets\":[0,400]}}", 8,
     "tensor 'a': data range [0, 400) goes past the end of the data (8 bytes)"},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     16, "tensor 'b': data range [4, 12) overlaps tensor 'a' [0, 8)"},
    {"overlap nested", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                       "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[12,16]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     16, "overlaps tensor 'a' [0, 16)"},
    {"shape negative", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': shape entry 1 is negative"},
    {"shape fraction", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': shape entry 0 is not an integer"},
    {"shape string", "{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': shape entry 0 is not a number"},
    {"shape null", "{\"a\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': shape entry 0 is not a number"},
    {"shape not array", "{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': \"shape\" is not an array"},
    {"too many dims", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
     "tensor 'a': shape has 9 dims, too many dims"},
    {"size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 16,
     "tensor 'a': shape and dtype F32 need 12 bytes but data_offsets [0, 8) span 8 bytes"},
    {"dtype size mismatch", "{\"a\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "size disagrees with the byte range"},
    {"element overflow", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,0]}}",
     0, "tensor 'a': shape element count overflows"},
    {"byte overflow", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,0]}}", 0,
     "tensor 'a': shape byte size overflows"},
    {"wrapping product", "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,1],\"data_offsets\":[0,0]}}",
     0, "overflows"},
    {"duplicate name", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "tensor 'a': duplicate name"},
    {"metadata not object", "{\"__metadata__\":[1]}", 0, "__metadata__ is not a JSON object"},
    {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "__metadata__ appears twice"},
    {"metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "__metadata__ key 'k' appears twice"},
};

/* Builds a file: u64 length, the header text, data_len bytes of data. */
static uint8_t *build_file(const char *header, size_t hlen, uint64_t claimed_len, size_t data_len, size_t *size)
{
    *size = 8 + hlen + data_len;
    uint8_t *b = calloc(1, *size + 1);
    assert_non_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(claimed_len >> (8 * i));
    memcpy(b + 8, header, hlen);
    for (size_t i = 0; i < data_len; i++) b[8 + hlen + i] = (uint8_t)i;
    return b;
}

/* Asserts that buf (in memory and as a file on disk) is rejected with frag,
 * and that the message names where it came from. */
static void expect_rejected(const char *dir, const char *what, const uint8_t *buf, size_t size, const char *frag)
{
    vkl_st_file *f = (vkl_st_file *)1;
    vkl_err e;
    e.msg[0] = 0;
    if (vkl_st_open_memory(buf, size, "hostile.safetensors", &f, &e) == 0)
        fail_msg("%s: accepted in memory", what);
    assert_null(f);
    assert_contains(e.msg, "hostile.safetensors: ");
    assert_contains(e.msg, frag);

    char path[512];
    snprintf(path, sizeof path, "%s/hostile.safetensors", dir);
    spit(path, buf, size);
    e.msg[0] = 0;
    if (vkl_st_open(path, &f, &e) == 0) fail_msg("%s: accepted from disk", what);
    assert_contains(e.msg, path);
    assert_contains(e.msg, frag);
}

static void hostile_headers(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    size_t size;
    for (size_t i = 0; i < sizeof hostile_cases / sizeof *hostile_cases; i++) {
        const hostile *h = &hostile_cases[i];
        size_t hlen = strlen(h->header);
        uint8_t *b = build_file(h->header, hlen, hlen, h->data_len, &size);
        expect_rejected(dir, h->what, b, size, h->expect);
        free(b);
    }

    /* length-field attacks */
    uint8_t *b = build_file(T1 "}", strlen(T1) + 1, 1ull << 40, 8, &size);
    expect_rejected(dir, "absurd length", b, size, "header length 1099511627776 is absurd");
    free(b);
    b = build_file(T1 "}", strlen(T1) + 1, strlen(T1) + 100, 8, &size);
    expect_rejected(dir, "length past file", b, size, "goes past the end of the file");
    free(b);
    b = build_file(T1 "}", strlen(T1) + 1, UINT64_MAX, 8, &size);
    expect_rejected(dir, "length 2^64-1", b, size, "is absurd");
    free(b);
    b = build_file("", 0, 0, 0, &size);
    expect_rejected(dir, "three bytes", b, 3, "too short");
    expect_rejected(dir, "empty file", b, 0, "too short");
    free(b);
    /* a NUL inside the header (JSON would need \u0000) */
    static const char nul_header[] = "{\"a\0b\":{}}";
    b = build_file(nul_header, sizeof nul_header - 1, sizeof nul_header - 1, 0, &size);
    expect_rejected(dir, "NUL byte", b, size, "NUL byte");
    free(b);

    /* nesting: shallow is a plain wrong entry, very deep must not exhaust the stack */
    static const int depths[2] = {100, 200000};
    static const char *const deep_frag[2] = {"tensor 'a': entry is not a JSON object", "not valid JSON"};
    for (int k = 0; k < 2; k++) {
        size_t hl = 6 + 2 * (size_t)depths[k] + 1;
        char *deep = malloc(hl + 1);
        memcpy(deep, "{\"a\":", 5);
        memset(deep + 5, '[', (size_t)depths[k]);
        memset(deep + 5 + depths[k], ']', (size_t)depths[k]);
        strcpy(deep + 5 + 2 * depths[k], "}");
        hl = strlen(deep);
        b = build_file(deep, hl, hl, 0, &size);
        expect_rejected(dir, "deep nesting", b, size, deep_frag[k]);
        free(b);
        free(deep);
    }

    vkl_err e;
    vkl_st_file *f;
    assert_int_equal(vkl_st_open(dir, &f, &e), -1);
    assert_contains(e.msg, "not a regular file");
    char fifo[512];
    snprintf(fifo, sizeof fifo, "%s/fifo.safetensors", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(vkl_st_open(fifo, &f, &e), -1); /* and does not block waiting for a writer */
    assert_contains(e.msg, "not a regular file");
    char missing[512];
    snprintf(missing, sizeof missing, "%s/missing.safetensors", dir);
    assert_int_equal(vkl_st_open(missing, &f, &e), -1);
    assert_contains(e.msg, missing);
    assert_contains(e.msg, "cannot open");
    vkl_test_rmtree(dir);
}

/* Legal but unusual files must be accepted and read correctly. */
static void unusual_but_valid(void **state)
{
    (void)state;
    vkl_err e;
    vkl_st_file *f;
    /* header length 63 (not a multiple of 8): data misaligned for f32 and f64,
     * a gap between tensors, an empty tensor inside another's range, unknown
     * fields, metadata with a non-string value, trailing bytes after the data */
    const char *hdr = "{\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[16,24],\"x\":1},"
                      "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                      "\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[4,4]},"
                      "\"__metadata__\":{\"n\":5,\"s\":\"t\"}}";
    size_t hlen = strlen(hdr);
    uint8_t *buf = calloc(1, 8 + hlen + 32 + 1);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, hdr, hlen);
    uint8_t *data = buf + 8 + hlen;
    const float a[2] = {1.25f, -3.5f};
    const double bv = 6.0625;
    memcpy(data, a, 8);
    memcpy(data + 16, &bv, 8);
    if (vkl_st_open_memory(buf, 8 + hlen + 32, NULL, &f, &e)) fail_msg("%s", e.msg);
    assert_string_equal(vkl_st_path(f), "<memory>");
    assert_int_equal(vkl_st_count(f), 3);
    assert_string_equal(vkl_st_at(f, 0)->name, "a");
    assert_string_equal(vkl_st_at(f, 1)->name, "e");
    assert_string_equal(vkl_st_at(f, 2)->name, "b");
    assert_null(vkl_st_at(f, 3));
    assert_null(vkl_st_at(f, -1));
    float got[2];
    assert_int_equal(vkl_st_read_f32(f, "a", got, 2, &e), 0);
    assert_true(got[0] == a[0] && got[1] == a[1]);
    double gb;
    assert_int_equal(vkl_st_read(f, vkl_st_find(f, "b"), VKL_F64, &gb, &e), 0);
    assert_true(gb == bv);
    assert_string_equal(vkl_st_meta_get(f, "n"), "5");
    assert_string_equal(vkl_st_meta_get(f, "s"), "t");
    /* a tensor from another file is refused, not read out of bounds */
    vkl_st_tensor fake = *vkl_st_at(f, 0);
    assert_int_equal(vkl_st_read(f, &fake, VKL_F32, got, &e), -1);
    assert_contains(e.msg, "does not belong");
    vkl_st_close(f);

    /* empty object: a valid file with no tensors */
    static const uint8_t empty_obj[10] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    if (vkl_st_open_memory(empty_obj, sizeof empty_obj, "empty", &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(f), 0);
    assert_null(vkl_st_find(f, "a"));
    vkl_st_close(f);
    free(buf);
}

/* Many entries: lookups and duplicate checks must stay fast (no quadratic
 * scans a hostile header could exploit) and find every name. */
static void large_headers(void **state)
{
    (void)state;
    enum { N = 100000 };
    size_t cap = (size_t)N * 96 + 64, n = 0;
    char *h = malloc(cap);
    n += (size_t)snprintf(h + n, cap - n, "{\"__metadata__\":{");
    for (int i = 0; i < N; i++) n += (size_t)snprintf(h + n, cap - n, "%s\"k%d\":\"v\"", i ? "," : "", i);
    n += (size_t)snprintf(h + n, cap - n, "}");
    /* names in reverse of offset order so sorting does real work */
    for (int i = 0; i < N; i++)
        n += (size_t)snprintf(h + n, cap - n, ",\"t%d\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[%d,%d]}",
                              i, N - 1 - i, N - i);
    n += (size_t)snprintf(h + n, cap - n, "}");
    size_t size;
    uint8_t *b = build_file(h, n, n, N, &size);
    vkl_st_file *f;
    vkl_err e;
    if (vkl_st_open_memory(b, size, "large", &f, &e)) fail_msg("%s", e.msg);
    assert_int_equal(vkl_st_count(f), N);
    assert_int_equal(vkl_st_meta_count(f), N);
    assert_string_equal(vkl_st_at(f, 0)->name, "t99999");
    char name[32];
    for (int i = 0; i < N; i += 997) {
        snprintf(name, sizeof name, "t%d", i);
        const vkl_st_tensor *t = vkl_st_find(f, name);
        assert_non_null(t);
        assert_int_equal(*(const uint8_t *)t->data, (uint8_t)(N - 1 - i));
    }
    vkl_st_close(f);
    free(b);
    /* the same with one metadata key repeated (same length, so offsets stay) */
    memcpy(strstr(h, "\"k99999\""), "\"k99998\"", 8);
    b = build_file(h, n, n, N, &size);
    assert_int_equal(vkl_st_open_memory(b, size, "large", &f, &e), -1);
    assert_contains(e.msg, "__metadata__ key 'k99998' appears twice");
    free(b);
    memcpy(strstr(h, "\"k99998\""), "\"k99999\"", 8);
    memcpy(strstr(h, "\"t99999\""), "\"t12345\"", 8);
    b = build_file(h, n, n, N, &size);
    assert_int_equal(vkl_st_open_memory(b, size, "large", &f, &e), -1);
    assert_contains(e.msg, "tensor 't12345': duplicate name");
    free(b);
    free(h);
}

/* ---- writer failures */

static void writer_refuses_bad_input(void **state)
{
    (void)state;
    vkl_st_writer *w = vkl_st_writer_new();
    vkl_err e;
    const int64_t neg[1] = {-1}, two[1] = {2};
    float x[2] = {1, 2};
    assert_int_equal(vkl_st_writer_add(w, "n", VKL_F32, 1, neg, x, &e), -1);
    assert_contains(e.msg, "tensor 'n': negative dim 0");
    assert_int_equal(vkl_st_writer_add(w, "__metadata__", VKL_F32, 1, two, x, &e), -1);
    assert_contains(e.msg, "reserved");
    assert_int_equal(vkl_st_writer_add(w, "", VKL_F32, 1, two, x, &e), -1);
    assert_contains(e.msg, "empty tensor name");
    assert_int_equal(vkl_st_writer_add(w, "n\xc3", VKL_F32, 1, two, x, &e), -1);
    assert_contains(e.msg, "not valid UTF-8");
    assert_int_equal(vkl_st_writer_add(w, "d", VKL_F32, 9, two, x, &e), -1);
    assert_contains(e.msg, "9 dims");
    assert_int_equal(vkl_st_writer_add(w, "d", VKL_F32, 1, two, NULL, &e), -1);
    assert_contains(e.msg, "NULL data");
    vkl_st_writer_free(w);
}

static void atomic_write(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    vkl_err e;
    char path[512], nodir[512];
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/out.safetensors", dir);
    static const char old[] = "previous contents, not a safetensors file";
    spit(path, old, sizeof old);

    vkl_st_writer *w = vkl_st_writer_new();
    static float big[1 << 16];
    for (int i = 0; i < 1 << 16; i++) big[i] = (float)i;
    const int64_t nbig[1] = {1 << 16};
    assert_int_equal(vkl_st_writer_add_ref(w, "big", VKL_F32, 1, nbig, big, &e), 0);

    /* a directory that does not exist: clean error, nothing created */
    assert_int_equal(vkl_st_writer_finish(w, nodir, &e), -1);
    assert_contains(e.msg, nodir);
    assert_contains(e.msg, "No such file or directory");
    assert_int_equal(count_dir_entries(dir), 1);

    /* the write itself fails half way (file size limit): the old file stays */
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
    int rc = vkl_st_writer_finish(w, path, &e);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc, -1);
    assert_contains(e.msg, path);
    assert_contains(e.msg, "cannot write");
    size_t n;
    uint8_t *now = slurp(path, &n);
    assert_int_equal(n, sizeof old);
    assert_memory_equal(now, old, sizeof old);
    free(now);
    assert_int_equal(count_dir_entries(dir), 1); /* temp file removed */

    /* the target is a directory: rename fails, temp removed */
    char subdir[512];
    snprintf(subdir, sizeof subdir, "%s/sub", dir);
    assert_int_equal(mkdir(subdir, 0755), 0);
    char inner[600];
    snprintf(inner, sizeof inner, "%s/keep", subdir);
    spit(inner, "x", 1);
    assert_int_equal(vkl_st_writer_finish(w, subdir, &e), -1);
    assert_contains(e.msg, "cannot rename");
    assert_int_equal(count_dir_entries(dir), 2);
    assert_int_equal(count_dir_entries(subdir), 1);

    /* duplicate names: refused before anything is written */
    float one = 1;
    assert_int_equal(vkl_st_writer_add(w, "big", VKL_F32, 0, NULL, &one, &e), 0);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), -1);
    assert_contains(e.msg, "tensor 'big': duplicate name");
    now = slurp(path, &n);
    assert_int_equal(n, sizeof old);
    assert_memory_equal(now, old, sizeof old);
    free(now);
    assert_int_equal(count_dir_entries(dir), 2);
    vkl_st_writer_free(w);

    /* success replaces the old file in one step and leaves no temp file */
    w = vkl_st_writer_new();
    assert_int_equal(vkl_st_writer_add_ref(w, "big", VKL_F32, 1, nbig, big, &e), 0);
    assert_int_equal(vkl_st_writer_finish(w, path, &e), 0);
    vkl_st_writer_free(w);
    assert_int_equal(count_dir_entries(dir), 2);
    vkl_st_file *f;
    if (vkl_st_open(path, &f, &e)) fail_msg("%s", e.msg);
    assert_memory_equal(vkl_st_find(f, "big")->data, big, sizeof big);
    vkl_st_close(f);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_every_dtype),
        cmocka_unit_test(metadata_roundtrip),
        cmocka_unit_test(reference_files_match_manifest),
        cmocka_unit_test(reference_kohya_metadata),
        cmocka_unit_test(reference_fp16_equals_fp32),
        cmocka_unit_test(hostile_headers),
        cmocka_unit_test(unusual_but_valid),
        cmocka_unit_test(large_headers),
        cmocka_unit_test(writer_refuses_bad_input),
        cmocka_unit_test(atomic_write),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
