/* SHA-256 against the FIPS 180-4 example vectors (NIST CSRC "Examples with
 * intermediate values", SHA256.pdf and SHA2_Additional.pdf), streaming in
 * uneven pieces, and the model-hash conventions on shared files whose digests
 * were computed with Python's hashlib the way A1111 and kohya do. */
#include "vkl_test.h"

#include <stdlib.h>
#include <string.h>

#include "io/sha256.h"

static void hex_of(const void *data, size_t n, char out[VKL_SHA256_HEX])
{
    uint8_t d[VKL_SHA256_BYTES];
    vkl_sha256_buf(data, n, d);
    vkl_sha256_hex(d, out);
}

static void fips_examples(void **state)
{
    (void)state;
    char hex[VKL_SHA256_HEX];
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"; /* 448 bits */
    hex_of(two, strlen(two), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *long896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmn"
                          "hijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(long896, strlen(long896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void million_a_in_pieces(void **state)
{
    (void)state;
    /* one million 'a', fed in pieces of varying length so every block-boundary
     * case of update() runs */
    char buf[1000];
    memset(buf, 'a', sizeof buf);
    vkl_sha256_ctx s;
    vkl_sha256_init(&s);
    size_t left = 1000000, k = 0;
    while (left) {
        size_t n = 1 + (k * 37) % 999;
        if (n > left) n = left;
        vkl_sha256_update(&s, buf, n);
        left -= n;
        k++;
    }
    uint8_t d[VKL_SHA256_BYTES];
    char hex[VKL_SHA256_HEX];
    vkl_sha256_final(&s, d);
    vkl_sha256_hex(d, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void padding_boundaries(void **state)
{
    (void)state;
    /* lengths 55, 56, 63, 64 straddle the one-or-two final blocks decision:
     * byte-at-a-time must equal one-shot */
    uint8_t msg[130];
    for (int i = 0; i < 130; i++) msg[i] = (uint8_t)(i * 7 + 3);
    for (size_t n = 50; n <= 130; n++) {
        uint8_t a[VKL_SHA256_BYTES], b[VKL_SHA256_BYTES];
        vkl_sha256_buf(msg, n, a);
        vkl_sha256_ctx s;
        vkl_sha256_init(&s);
        for (size_t i = 0; i < n; i++) vkl_sha256_update(&s, msg + i, 1);
        vkl_sha256_final(&s, b);
        assert_memory_equal(a, b, VKL_SHA256_BYTES);
    }
    /* 55 'a' (hashlib.sha256(b'a'*55)): the largest one-block message */
    char hex[VKL_SHA256_HEX];
    char a55[55];
    memset(a55, 'a', sizeof a55);
    hex_of(a55, 55, hex);
    assert_string_equal(hex, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318");
}

static void model_hash_conventions(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED("refkit/sd/tiny-sd-ldm-fp16.safetensors");
    vkl_err e = {{0}};
    char hex[VKL_SHA256_HEX];
    const char *ckpt = vkl_test_shared_path("refkit/sd/tiny-sd-ldm-fp16.safetensors");
    assert_int_equal(vkl_hash_file_full(ckpt, hex, &e), 0);
    assert_string_equal(hex, "0d7f7215cd79839cd36a89f63c5b27801a97ed992c263fc81cc217f6dfe0bd13");
    assert_int_equal(vkl_hash_file_autov2(ckpt, hex, &e), 0);
    assert_string_equal(hex, "0d7f7215cd");
    /* 8.5 MB file: the legacy window lies inside it */
    assert_int_equal(vkl_hash_file_legacy(ckpt, hex, &e), 0);
    assert_string_equal(hex, "4f523451");
    assert_int_equal(vkl_hash_safetensors_autov3(ckpt, hex, &e), 0);
    assert_string_equal(hex, "f88f713c05154ce7dd91a5f54dac049bb7a701f33a5e040780deb1a71ac11ad4");

    /* a file shorter than 1 MiB: Python reads nothing at the legacy offset,
     * so the legacy hash is that of the empty string */
    const char *small = vkl_test_shared_path("data/models/vae-approx-sd1/vaeapprox_sd1.safetensors");
    assert_int_equal(vkl_hash_file_legacy(small, hex, &e), 0);
    assert_string_equal(hex, "e3b0c442");
    assert_int_equal(vkl_hash_safetensors_autov3(small, hex, &e), 0);
    assert_string_equal(hex, "5b0e865078159d0705bac5ec1d23cce880896d269a2ae63596443b0c93f93101");
    assert_int_equal(vkl_hash_file_full(small, hex, &e), 0);
    assert_string_equal(hex, "d11985e95f71e1a0ed531e6b73b5bda12348fed36c8016ee3d1329e544860ff0");
}

static void errors_name_the_file(void **state)
{
    (void)state;
    vkl_err e = {{0}};
    char hex[VKL_SHA256_HEX];
    assert_int_equal(vkl_hash_file_full("/nonexistent/model.safetensors", hex, &e), -1);
    assert_non_null(strstr(e.msg, "/nonexistent/model.safetensors"));
    char dir[256], path[512];
    snprintf(dir, sizeof dir, "%s", vkl_test_tmpdir());
    snprintf(path, sizeof path, "%s/short.safetensors", dir);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("abc", 1, 3, f);
    fclose(f);
    assert_int_equal(vkl_hash_safetensors_autov3(path, hex, &e), -1);
    assert_non_null(strstr(e.msg, "short.safetensors"));
    vkl_test_rmtree(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fips_examples),
        cmocka_unit_test(million_a_in_pieces),
        cmocka_unit_test(padding_boundaries),
        cmocka_unit_test(model_hash_conventions),
        cmocka_unit_test(errors_name_the_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
