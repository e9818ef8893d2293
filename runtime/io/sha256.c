/* SHA-256 per FIPS 180-4 sections 4.1.2, 4.2.2, 5.1.1, 6.2. */
#include "io/sha256.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t h[8], const uint8_t *p)
{
    uint32_t w[64];
    for (int t = 0; t < 16; t++)
        w[t] = (uint32_t)p[4 * t] << 24 | (uint32_t)p[4 * t + 1] << 16 |
               (uint32_t)p[4 * t + 2] << 8 | (uint32_t)p[4 * t + 3];
    for (int t = 16; t < 64; t++) {
        uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int t = 0; t < 64; t++) {
        uint32_t S1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = hh + S1 + ch + K[t] + w[t];
        uint32_t S0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

void vkl_sha256_init(vkl_sha256_ctx *s)
{
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof H0);
    s->total = 0;
    s->fill = 0;
}

void vkl_sha256_update(vkl_sha256_ctx *s, const void *data, size_t n)
{
    const uint8_t *p = (const uint8_t *)data;
    s->total += n;
    if (s->fill) {
        size_t take = 64 - s->fill < n ? 64 - s->fill : n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill < 64) return;
        compress(s->h, s->block);
        s->fill = 0;
    }
    for (; n >= 64; p += 64, n -= 64) compress(s->h, p);
    memcpy(s->block, p, n);
    s->fill = n;
}

void vkl_sha256_final(vkl_sha256_ctx *s, uint8_t out[VKL_SHA256_BYTES])
{
    uint64_t bits = s->total * 8;
    s->block[s->fill++] = 0x80;
    if (s->fill > 56) {
        memset(s->block + s->fill, 0, 64 - s->fill);
        compress(s->h, s->block);
        s->fill = 0;
    }
    memset(s->block + s->fill, 0, 56 - s->fill);
    for (int i = 0; i < 8; i++) s->block[56 + i] = (uint8_t)(bits >> (56 - 8 * i));
    compress(s->h, s->block);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (uint8_t)(s->h[i] >> 24);
        out[4 * i + 1] = (uint8_t)(s->h[i] >> 16);
        out[4 * i + 2] = (uint8_t)(s->h[i] >> 8);
        out[4 * i + 3] = (uint8_t)s->h[i];
    }
    vkl_sha256_init(s);
}

void vkl_sha256_buf(const void *data, size_t n, uint8_t out[VKL_SHA256_BYTES])
{
    vkl_sha256_ctx s;
    vkl_sha256_init(&s);
    vkl_sha256_update(&s, data, n);
    vkl_sha256_final(&s, out);
}

void vkl_sha256_hex(const uint8_t d[VKL_SHA256_BYTES], char out[VKL_SHA256_HEX])
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < VKL_SHA256_BYTES; i++) {
        out[2 * i] = digits[d[i] >> 4];
        out[2 * i + 1] = digits[d[i] & 15];
    }
    out[64] = 0;
}

int vkl_sha256_file_range(const char *path, uint64_t offset, uint64_t length,
                          uint8_t out[VKL_SHA256_BYTES], vkl_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    vkl_sha256_ctx s;
    vkl_sha256_init(&s);
    int rc = 0;
    if (offset && fseeko(f, (off_t)offset, SEEK_SET) != 0) {
        rc = vkl_fail(e, "%s: cannot seek to %llu: %s", path, (unsigned long long)offset,
                      strerror(errno));
        goto done;
    }
    enum { CHUNK = 1 << 16 };
    uint8_t *buf = (uint8_t *)malloc(CHUNK);
    if (!buf) {
        rc = vkl_fail(e, "%s: out of memory for the hash buffer", path);
        goto done;
    }
    while (length > 0) {
        size_t want = length < CHUNK ? (size_t)length : CHUNK;
        size_t got = fread(buf, 1, want, f);
        vkl_sha256_update(&s, buf, got);
        length -= got;
        if (got < want) {
            if (ferror(f)) rc = vkl_fail(e, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    free(buf);
    if (rc == 0) vkl_sha256_final(&s, out);
done:
    fclose(f);
    return rc;
}

int vkl_sha256_file(const char *path, uint8_t out[VKL_SHA256_BYTES], vkl_err *e)
{
    return vkl_sha256_file_range(path, 0, UINT64_MAX, out, e);
}

int vkl_hash_file_full(const char *path, char out[VKL_SHA256_HEX], vkl_err *e)
{
    uint8_t d[VKL_SHA256_BYTES];
    if (vkl_sha256_file(path, d, e)) return -1;
    vkl_sha256_hex(d, out);
    return 0;
}

int vkl_hash_file_autov2(const char *path, char out[VKL_SHA256_HEX], vkl_err *e)
{
    if (vkl_hash_file_full(path, out, e)) return -1;
    out[10] = 0;
    return 0;
}

int vkl_hash_file_legacy(const char *path, char out[VKL_SHA256_HEX], vkl_err *e)
{
    uint8_t d[VKL_SHA256_BYTES];
    if (vkl_sha256_file_range(path, 0x100000, 0x10000, d, e)) return -1;
    vkl_sha256_hex(d, out);
    out[8] = 0;
    return 0;
}

int vkl_hash_safetensors_autov3(const char *path, char out[VKL_SHA256_HEX], vkl_err *e)
{
    FILE *f = fopen(path, "rb");
    if (!f) return vkl_fail(e, "%s: cannot open: %s", path, strerror(errno));
    uint8_t len8[8];
    size_t got = fread(len8, 1, 8, f);
    fclose(f);
    if (got != 8) return vkl_fail(e, "%s: not a safetensors file (shorter than 8 bytes)", path);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | len8[i];
    if (n > UINT64_MAX - 8) return vkl_fail(e, "%s: safetensors header length %llu overflows", path,
                                            (unsigned long long)n);
    uint8_t d[VKL_SHA256_BYTES];
    if (vkl_sha256_file_range(path, 8 + n, UINT64_MAX, d, e)) return -1;
    vkl_sha256_hex(d, out);
    return 0;
}
