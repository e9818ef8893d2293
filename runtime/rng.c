#include "rng.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static void philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void vkl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r) {
            k[0] += PHILOX_W0;
            k[1] += PHILOX_W1;
        }
        philox_round(c, k);
    }
    for (int i = 0; i < 4; i++) out[i] = c[i];
}

void vkl_rng_init(vkl_rng *r, uint64_t seed, uint64_t stream)
{
    r->seed = seed;
    r->stream = stream;
    r->offset = 0;
}

static void block_normals(uint64_t seed, uint64_t stream, uint64_t block, float z[4])
{
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                             (uint32_t)(stream >> 32)};
    uint32_t x[4];
    vkl_philox4x32_10(ctr, key, x);
    const double two_pi = 6.283185307179586476925286766559;
    for (int p = 0; p < 2; p++) {
        /* u1 excludes 0 so the logarithm stays finite. */
        double u1 = ((double)x[2 * p] + 1.0) * (1.0 / 4294967296.0);
        double u2 = (double)x[2 * p + 1] * (1.0 / 4294967296.0);
        double rad = sqrt(-2.0 * log(u1));
        z[2 * p] = (float)(rad * cos(two_pi * u2));
        z[2 * p + 1] = (float)(rad * sin(two_pi * u2));
    }
}

float vkl_rng_normal_at(uint64_t seed, uint64_t stream, uint64_t k)
{
    float z[4];
    block_normals(seed, stream, k / 4, z);
    return z[k % 4];
}

void vkl_rng_normal(vkl_rng *r, float *out, size_t n)
{
    size_t i = 0;
    float z[4];
    while (i < n) {
        uint64_t k = r->offset + i;
        block_normals(r->seed, r->stream, k / 4, z);
        for (unsigned lane = (unsigned)(k % 4); lane < 4 && i < n; lane++) out[i++] = z[lane];
    }
    r->offset += n;
}

void vkl_rng_noise_fn(void *user, float *out, size_t n)
{
    vkl_rng_normal((vkl_rng *)user, out, n);
}

uint64_t vkl_splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void vkl_shuffle_ints(int *v, int n, uint64_t *state)
{
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(vkl_splitmix64(state) % (uint64_t)(i + 1)), t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
}
