/* GGUF reader and writer: a file built byte by byte here from the format's
 * description must equal the writer's output and read back field by field;
 * every metadata value type and array round-trips; hostile files (truncated
 * at every byte, huge counts, overlapping tensors, unknown types, bad
 * alignment, string lengths past the end, ...) are each refused with their
 * own message; the writer refuses bad input and never leaves a partial file. */
#include "vkl_test.h"

#include "io/gguf.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a byte builder for hand-made files */

typedef struct bb {
    uint8_t p[8192];
    size_t n;
} bb;

static void b_le(bb *b, uint64_t v, int n)
{
    for (int i = 0; i < n; i++) b->p[b->n++] = (uint8_t)(v >> (8 * i));
}
static void b_u32(bb *b, uint32_t v) { b_le(b, v, 4); }
static void b_u64(bb *b, uint64_t v) { b_le(b, v, 8); }
static void b_str(bb *b, const char *s)
{
    b_u64(b, strlen(s));
    memcpy(b->p + b->n, s, strlen(s));
    b->n += strlen(s);
}
static void b_pad(bb *b, size_t align)
{
    while (b->n % align) b->p[b->n++] = 0;
}
static void b_header(bb *b, uint32_t version, uint64_t nt, uint64_t nkv)
{
    b->n = 0;
    memcpy(b->p, "GGUF", 4);
    b->n = 4;
    b_u32(b, version);
    b_u64(b, nt);
    b_u64(b, nkv);
}
static void b_tinfo(bb *b, const char *name, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off)
{
    b_str(b, name);
    b_u32(b, nd);
    for (uint32_t i = 0; i < nd; i++) b_u64(b, ne[i]);
    b_u32(b, type);
    b_u64(b, off);
}

/* The reference file: 2 metadata entries, an F32 [3] and an F16 [2, 2] tensor, alignment 32:
 * the second tensor at offset 32 (12 bytes of the first rounded up). */
static void reference_file(bb *b)
{
    b_header(b, 3, 2, 2);
    b_str(b, "general.architecture");
    b_u32(b, VKL_GGUF_STRING);
    b_str(b, "llama");
    b_str(b, "answer");
    b_u32(b, VKL_GGUF_I32);
    b_u32(b, (uint32_t)-42);
    b_tinfo(b, "a", 1, (uint64_t[]){3}, VKL_GQ_F32, 0);
    b_tinfo(b, "b", 2, (uint64_t[]){2, 2}, VKL_GQ_F16, 32);
    b_pad(b, 32);
    float a[3] = {1.5f, -2.0f, 0.25f};
    memcpy(b->p + b->n, a, 12);
    b->n += 12;
    b_pad(b, 32);
    uint16_t h[4] = {0x3c00, 0x4000, 0xc000, 0x3800};
    memcpy(b->p + b->n, h, 8);
    b->n += 8;
}

static uint8_t *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    rewind(f);
    uint8_t *p = malloc(*n + 1);
    assert_int_equal(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static void writer_matches_hand_made(void **state)
{
    (void)state;
    bb ref;
    reference_file(&ref);
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    vkl_err e;
    int32_t answer = -42;
    float a[3] = {1.5f, -2.0f, 0.25f};
    uint16_t h[4] = {0x3c00, 0x4000, 0xc000, 0x3800};
    assert_int_equal(vkl_gguf_w_str(w, "general.architecture", "llama", &e), 0);
    assert_int_equal(vkl_gguf_w_scalar(w, "answer", VKL_GGUF_I32, &answer, &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "a", VKL_GQ_F32, 1, (uint64_t[]){3}, a, 12, &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "b", VKL_GQ_F16, 2, (uint64_t[]){2, 2}, h, 8, &e), 0);
    char path[512];
    const char *dir = vkl_test_tmpdir();
    snprintf(path, sizeof path, "%s/ref.gguf", dir);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);
    size_t n;
    uint8_t *got = slurp(path, &n);
    /* the writer pads after the last tensor too; the bytes before are the same */
    assert_true(n >= ref.n);
    assert_memory_equal(got, ref.p, ref.n);
    for (size_t i = ref.n; i < n; i++) assert_int_equal(got[i], 0);
    free(got);
    /* and the reader reads the hand-made bytes */
    vkl_gguf_file *f;
    assert_int_equal(vkl_gguf_open_memory(ref.p, ref.n, "ref", &f, &e), 0);
    assert_int_equal(vkl_gguf_version(f), 3);
    assert_int_equal(vkl_gguf_alignment(f), 32);
    assert_int_equal(vkl_gguf_kv_count(f), 2);
    const char *s;
    assert_int_equal(vkl_gguf_get_str(f, "general.architecture", &s, &e), 1);
    assert_string_equal(s, "llama");
    assert_int_equal(vkl_gguf_kv_find(f, "answer")->v.i, -42);
    uint64_t u;
    assert_int_equal(vkl_gguf_get_uint(f, "answer", &u, &e), -1); /* negative: not a count */
    assert_non_null(strstr(e.msg, "answer"));
    assert_int_equal(vkl_gguf_get_uint(f, "absent", &u, &e), 0);
    const vkl_gguf_tensor *tb = vkl_gguf_find(f, "b");
    assert_non_null(tb);
    assert_int_equal(tb->ne[0], 2);
    assert_int_equal(tb->ne[1], 2);
    assert_int_equal(tb->nbytes, 8);
    assert_int_equal(tb->offset, 32);
    assert_memory_equal(tb->data, h, 8);
    assert_memory_equal(vkl_gguf_find(f, "a")->data, a, 12);
    assert_null(vkl_gguf_find(f, "c"));
    vkl_gguf_close(f);
    /* version 2 has the same layout */
    ref.p[4] = 2;
    assert_int_equal(vkl_gguf_open_memory(ref.p, ref.n, "v2", &f, &e), 0);
    vkl_gguf_close(f);
    vkl_test_rmtree(dir);
}

static void every_value_type_round_trips(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/all.gguf", dir);
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    vkl_err e;
    uint8_t u8 = 200, b1 = 1;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint32_t u32 = 4000000000u, al = 64;
    int32_t i32 = -2000000000;
    float f32 = 3.25f;
    uint64_t u64 = 18000000000000000000ull;
    int64_t i64 = -9000000000000000000ll;
    double f64 = -1.0 / 3.0;
    const void *vals[] = {&u8, &i8, &u16, &i16, &u32, &i32, &f32, &b1, NULL, NULL, &u64, &i64, &f64};
    char key[32];
    for (int t = 0; t < VKL_GGUF_VTYPE_COUNT; t++) {
        if (!vals[t]) continue;
        snprintf(key, sizeof key, "s.%s", vkl_gguf_vtype_name(t));
        assert_int_equal(vkl_gguf_w_scalar(w, key, t, vals[t], &e), 0);
    }
    assert_int_equal(vkl_gguf_w_scalar(w, "general.alignment", VKL_GGUF_U32, &al, &e), 0);
    assert_int_equal(vkl_gguf_w_str(w, "s.string", "caf\xc3\xa9", &e), 0);
    int16_t arr16[5] = {-5, 0, 7, 32767, -32768};
    double arr64[3] = {1e300, -0.0, 2.5};
    const char *strs[4] = {"", "a", "<0x0A>", "\xe2\x96\x81the"};
    assert_int_equal(vkl_gguf_w_array(w, "a.i16", VKL_GGUF_I16, 5, arr16, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "a.f64", VKL_GGUF_F64, 3, arr64, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "a.str", VKL_GGUF_STRING, 4, strs, &e), 0);
    assert_int_equal(vkl_gguf_w_array(w, "a.empty", VKL_GGUF_U8, 0, NULL, &e), 0);
    /* tensors of three types; 34-byte Q8_0 blocks so the next one needs padding */
    uint8_t q8[34 * 3];
    for (size_t i = 0; i < sizeof q8; i++) q8[i] = (uint8_t)(i * 7);
    float f[5] = {1, 2, 3, 4, 5};
    assert_int_equal(vkl_gguf_w_tensor(w, "q8", VKL_GQ_Q8_0, 2, (uint64_t[]){32, 3}, q8, sizeof q8, &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "f", VKL_GQ_F32, 4, (uint64_t[]){5, 1, 1, 1}, f, 20, &e), 0);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_writer_free(w);

    vkl_gguf_file *g;
    assert_int_equal(vkl_gguf_open(path, &g, &e), 0);
    assert_int_equal(vkl_gguf_alignment(g), 64);
    assert_int_equal(vkl_gguf_kv_find(g, "s.u8")->v.u, 200);
    assert_int_equal(vkl_gguf_kv_find(g, "s.i8")->v.i, -100);
    assert_int_equal(vkl_gguf_kv_find(g, "s.u16")->v.u, 60000);
    assert_int_equal(vkl_gguf_kv_find(g, "s.i16")->v.i, -30000);
    assert_int_equal(vkl_gguf_kv_find(g, "s.u32")->v.u, 4000000000u);
    assert_int_equal(vkl_gguf_kv_find(g, "s.i32")->v.i, -2000000000);
    assert_true(vkl_gguf_kv_find(g, "s.f32")->v.f == 3.25);
    assert_true(vkl_gguf_kv_find(g, "s.u64")->v.u == u64);
    assert_true(vkl_gguf_kv_find(g, "s.i64")->v.i == i64);
    assert_true(vkl_gguf_kv_find(g, "s.f64")->v.f == f64);
    int bv = 0;
    assert_int_equal(vkl_gguf_get_bool(g, "s.bool", &bv, &e), 1);
    assert_int_equal(bv, 1);
    double d;
    assert_int_equal(vkl_gguf_get_float(g, "s.u8", &d, &e), -1); /* wrong type named */
    assert_non_null(strstr(e.msg, "s.u8"));
    const vkl_gguf_kv *kv = vkl_gguf_kv_find(g, "s.string");
    assert_int_equal(kv->len, 5);
    assert_string_equal(kv->s, "caf\xc3\xa9");
    kv = vkl_gguf_kv_find(g, "a.i16");
    assert_int_equal(kv->atype, VKL_GGUF_I16);
    assert_int_equal(kv->n, 5);
    for (int i = 0; i < 5; i++) assert_true(vkl_gguf_arr_num(kv, (uint64_t)i) == arr16[i]);
    kv = vkl_gguf_kv_find(g, "a.f64");
    for (int i = 0; i < 3; i++) assert_true(vkl_gguf_arr_num(kv, (uint64_t)i) == arr64[i]);
    kv = vkl_gguf_kv_find(g, "a.str");
    assert_int_equal(kv->n, 4);
    for (int i = 0; i < 4; i++) assert_string_equal(kv->strs[i], strs[i]);
    assert_int_equal(vkl_gguf_kv_find(g, "a.empty")->n, 0);
    const vkl_gguf_tensor *t = vkl_gguf_find(g, "q8"), *tf = vkl_gguf_find(g, "f");
    assert_int_equal(t->nbytes, sizeof q8);
    assert_memory_equal(t->data, q8, sizeof q8);
    assert_int_equal(tf->offset % 64, 0);
    assert_int_equal(tf->ndim, 4);
    assert_memory_equal(tf->data, f, 20);
    vkl_gguf_close(g);
    vkl_test_rmtree(dir);
}

/* ---- hostile files */

static void expect_refused(const bb *b, const char *frag)
{
    vkl_gguf_file *f = NULL;
    vkl_err e = {{0}};
    if (!vkl_gguf_open_memory(b->p, b->n, "bad", &f, &e)) {
        vkl_gguf_close(f);
        print_error("accepted a file that should fail with \"%s\"\n", frag);
        fail();
    }
    if (strncmp(e.msg, "bad: ", 5) || !strstr(e.msg, frag)) {
        print_error("message \"%s\" lacks \"%s\"\n", e.msg, frag);
        fail();
    }
}

static void truncated_anywhere(void **state)
{
    (void)state;
    bb ref;
    reference_file(&ref);
    for (size_t n = 0; n < ref.n; n++) {
        vkl_gguf_file *f = NULL;
        vkl_err e = {{0}};
        if (!vkl_gguf_open_memory(ref.p, n, "cut", &f, &e)) {
            print_error("accepted the file cut to %zu of %zu bytes\n", n, ref.n);
            fail();
        }
        assert_int_equal(strncmp(e.msg, "cut: ", 5), 0);
    }
}

/* one tensor info of `type` at `off`, after a kv; the data follow at 32 */
static void one_tensor(bb *b, uint32_t nd, const uint64_t *ne, uint32_t type, uint64_t off, size_t data)
{
    b_header(b, 3, 1, 0);
    b_tinfo(b, "t", nd, ne, type, off);
    b_pad(b, 32);
    memset(b->p + b->n, 0, data);
    b->n += data;
}

static void hostile_files(void **state)
{
    (void)state;
    bb b;
    b.n = 0;
    memcpy(b.p, "GGML", 4);
    b.n = 4;
    b_u32(&b, 3);
    expect_refused(&b, "not a GGUF file");
    b_header(&b, 1, 0, 0);
    expect_refused(&b, "version 1 is not supported");
    b_header(&b, 4, 0, 0);
    expect_refused(&b, "version 4");
    /* huge counts */
    b_header(&b, 3, 0, 1ull << 62);
    expect_refused(&b, "metadata entries cannot fit");
    b_header(&b, 3, 1ull << 62, 0);
    expect_refused(&b, "tensors cannot fit");
    /* string lengths past the end */
    b_header(&b, 3, 0, 1);
    b_u64(&b, 1ull << 40);
    b_str(&b, "xxxxxxxxxxxxxxxx");
    expect_refused(&b, "length past the end");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_STRING);
    b_u64(&b, 100);
    b_str(&b, "short");
    expect_refused(&b, "string value has a length past the end");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_ARRAY);
    b_u32(&b, VKL_GGUF_STRING);
    b_u64(&b, 2);
    b_str(&b, "ok");
    b_u64(&b, 1000);
    b_str(&b, "no");
    expect_refused(&b, "string 1 has a length past the end");
    /* arrays whose count lies */
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_ARRAY);
    b_u32(&b, VKL_GGUF_F64);
    b_u64(&b, 1ull << 61);
    b_u64(&b, 0);
    expect_refused(&b, "array of 2305843009213693952 f64 values goes past the end");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_ARRAY);
    b_u32(&b, VKL_GGUF_STRING);
    b_u64(&b, 1ull << 60);
    b_u64(&b, 0);
    expect_refused(&b, "strings goes past the end");
    /* unknown types */
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, 13);
    b_u32(&b, 0);
    expect_refused(&b, "unknown value type 13");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_ARRAY);
    b_u32(&b, 77);
    b_u64(&b, 0);
    expect_refused(&b, "unknown array element type 77");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_ARRAY);
    b_u32(&b, VKL_GGUF_ARRAY);
    b_u64(&b, 0);
    expect_refused(&b, "arrays of arrays");
    one_tensor(&b, 1, (uint64_t[]){32}, 99, 0, 64);
    expect_refused(&b, "block type 99 is unknown or not supported");
    one_tensor(&b, 1, (uint64_t[]){256}, 10 /* Q2_K */, 0, 256);
    expect_refused(&b, "block type 10");
    b_header(&b, 3, 0, 1);
    b_str(&b, "k");
    b_u32(&b, VKL_GGUF_BOOL);
    b.p[b.n++] = 2;
    expect_refused(&b, "bool value is 2");
    /* bad alignment */
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, VKL_GGUF_U32);
    b_u32(&b, 48);
    expect_refused(&b, "general.alignment 48 is not a power of two");
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, VKL_GGUF_U32);
    b_u32(&b, 0);
    expect_refused(&b, "general.alignment 0 is not a power of two");
    b_header(&b, 3, 0, 1);
    b_str(&b, "general.alignment");
    b_u32(&b, VKL_GGUF_U64);
    b_u64(&b, 64);
    expect_refused(&b, "general.alignment is a u64, not a u32");
    one_tensor(&b, 1, (uint64_t[]){4}, VKL_GQ_F32, 8, 64);
    expect_refused(&b, "offset 8 is not a multiple of the alignment 32");
    /* tensors: past the end, overlapping, shapes */
    one_tensor(&b, 1, (uint64_t[]){32}, VKL_GQ_F32, 0, 64);
    expect_refused(&b, "goes past the end of the file");
    one_tensor(&b, 1, (uint64_t[]){4}, VKL_GQ_F32, 1ull << 63, 64);
    expect_refused(&b, "goes past the end of the file");
    b_header(&b, 3, 2, 0);
    b_tinfo(&b, "x", 1, (uint64_t[]){16}, VKL_GQ_F32, 0);
    b_tinfo(&b, "y", 1, (uint64_t[]){16}, VKL_GQ_F32, 32);
    b_pad(&b, 32);
    memset(b.p + b.n, 0, 128);
    b.n += 128;
    expect_refused(&b, "tensors 'x' and 'y' overlap");
    b_header(&b, 3, 2, 0);
    b_tinfo(&b, "x", 1, (uint64_t[]){4}, VKL_GQ_F32, 0);
    b_tinfo(&b, "x", 1, (uint64_t[]){4}, VKL_GQ_F32, 32);
    b_pad(&b, 32);
    memset(b.p + b.n, 0, 64);
    b.n += 64;
    expect_refused(&b, "tensor name 'x' appears twice");
    one_tensor(&b, 0, NULL, VKL_GQ_F32, 0, 64);
    expect_refused(&b, "0 dims");
    one_tensor(&b, 5, (uint64_t[]){1, 1, 1, 1, 1}, VKL_GQ_F32, 0, 64);
    expect_refused(&b, "5 dims");
    one_tensor(&b, 2, (uint64_t[]){40, 1}, VKL_GQ_Q8_0, 0, 128);
    expect_refused(&b, "row length 40 is not a multiple of the Q8_0 block size 32");
    one_tensor(&b, 4, (uint64_t[]){1ull << 32, 1ull << 32, 1ull << 32, 2}, VKL_GQ_F32, 0, 64);
    expect_refused(&b, "element count overflows");
    one_tensor(&b, 2, (uint64_t[]){1ull << 62, 8}, VKL_GQ_F32, 0, 64);
    expect_refused(&b, "overflows");
    one_tensor(&b, 1, (uint64_t[]){1ull << 63}, VKL_GQ_F32, 0, 64);
    expect_refused(&b, "out of range");
    /* a name too long for ggml, an empty key, a duplicate key */
    b_header(&b, 3, 1, 0);
    b_tinfo(&b, "0123456789012345678901234567890123456789012345678901234567890123456789", 1, (uint64_t[]){4}, 0, 0);
    expect_refused(&b, "longer than 63 bytes");
    b_header(&b, 3, 0, 1);
    b_str(&b, "");
    b_u32(&b, VKL_GGUF_U8);
    b.p[b.n++] = 0;
    expect_refused(&b, "metadata key 0 is empty");
    b_header(&b, 3, 0, 2);
    for (int i = 0; i < 2; i++) {
        b_str(&b, "k");
        b_u32(&b, VKL_GGUF_U8);
        b.p[b.n++] = 0;
    }
    expect_refused(&b, "metadata key 'k' appears twice");
}

static void writer_refuses(void **state)
{
    (void)state;
    vkl_gguf_writer *w = vkl_gguf_writer_new();
    vkl_err e;
    uint32_t bad = 24;
    uint8_t two = 2;
    float f[4] = {0};
    assert_int_equal(vkl_gguf_w_u32(w, "k", 1, &e), 0);
    assert_int_equal(vkl_gguf_w_u32(w, "k", 2, &e), -1);
    assert_non_null(strstr(e.msg, "'k' set twice"));
    assert_int_equal(vkl_gguf_w_scalar(w, "general.alignment", VKL_GGUF_U32, &bad, &e), -1);
    assert_non_null(strstr(e.msg, "power of two"));
    assert_int_equal(vkl_gguf_w_scalar(w, "b", VKL_GGUF_BOOL, &two, &e), -1);
    assert_int_equal(vkl_gguf_w_scalar(w, "s", VKL_GGUF_STRING, "x", &e), -1);
    assert_int_equal(vkl_gguf_w_tensor(w, "t", VKL_GQ_F32, 1, (uint64_t[]){4}, f, 12, &e), -1);
    assert_non_null(strstr(e.msg, "12 bytes given"));
    assert_int_equal(vkl_gguf_w_tensor(w, "t", VKL_GQ_Q8_0, 1, (uint64_t[]){4}, f, 16, &e), -1);
    assert_non_null(strstr(e.msg, "not a multiple"));
    assert_int_equal(vkl_gguf_w_tensor(w, "t", 10, 1, (uint64_t[]){256}, f, 16, &e), -1);
    assert_int_equal(vkl_gguf_w_tensor(w, "t", VKL_GQ_F32, 1, (uint64_t[]){4}, f, 16, &e), 0);
    assert_int_equal(vkl_gguf_w_tensor(w, "t", VKL_GQ_F32, 1, (uint64_t[]){4}, f, 16, &e), -1);
    assert_non_null(strstr(e.msg, "added twice"));
    /* block types hold finite values only; plain floats keep what they are given */
    float nan4[32] = {0};
    nan4[5] = NAN;
    uint8_t q[34];
    assert_int_equal(vkl_gguf_quantize(VKL_GQ_Q8_0, nan4, 32, q, &e), -1);
    assert_non_null(strstr(e.msg, "value 5 is nan"));
    assert_int_equal(vkl_gguf_quantize(VKL_GQ_F32, nan4, 32, (float[32]){0}, &e), 0);
    /* a folder that does not exist: a message, nothing written */
    const char *dir = vkl_test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/missing/x.gguf", dir);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), -1);
    assert_non_null(strstr(e.msg, path));
    /* an existing file is replaced whole, and no temporary file is left */
    snprintf(path, sizeof path, "%s/x.gguf", dir);
    FILE *fp = fopen(path, "wb");
    fputs("old", fp);
    fclose(fp);
    assert_int_equal(vkl_gguf_writer_finish(w, path, &e), 0);
    vkl_gguf_file *g;
    assert_int_equal(vkl_gguf_open(path, &g, &e), 0);
    assert_int_equal(vkl_gguf_count(g), 1);
    vkl_gguf_close(g);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "test $(ls '%s' | wc -l) -eq 1", dir);
    assert_int_equal(system(cmd), 0);
    vkl_gguf_writer_free(w);
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(writer_matches_hand_made),
        cmocka_unit_test(every_value_type_round_trips),
        cmocka_unit_test(truncated_anywhere),
        cmocka_unit_test(hostile_files),
        cmocka_unit_test(writer_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
