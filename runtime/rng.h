/* Counter-based random numbers for initial latents and ancestral noise.
 *
 * Philox4x32-10 (Salmon et al., SC'11; the Random123 definition) maps a 128-bit
 * counter and a 64-bit key to 128 random bits with no state in between, so
 * element k of a stream can be computed on its own: drawing in one call or in
 * pieces gives the same numbers, and a device shader can reproduce the stream.
 *
 * Normal stream (what --seed feeds): key = seed (low word first), counter =
 * (block low, block high, stream low, stream high) where block = k / 4; the four
 * output words x0..x3 give normals k = 4*block + 0..3 by Box-Muller on the
 * pairs (x0, x1) and (x2, x3):
 *   u1 = (x0 + 1) / 2^32 in (0, 1],  u2 = x1 / 2^32 in [0, 1)
 *   z0 = sqrt(-2 ln u1) cos(2 pi u2),  z1 = sqrt(-2 ln u1) sin(2 pi u2)
 * evaluated in double and rounded once to float. Noise is drawn on the host,
 * so a seed gives the same image on every GPU. */
#ifndef VKL_RNG_H
#define VKL_RNG_H

#include <stddef.h>
#include <stdint.h>

/* The raw generator: out = Philox4x32-10(ctr, key). */
void vkl_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Streams by purpose, so initial noise, per-step noise and the SDE samplers'
 * Brownian increments never overlap whatever the latent size or step count. */
enum { VKL_RNG_STREAM_INIT = 0, VKL_RNG_STREAM_STEP = 1, VKL_RNG_STREAM_BROWNIAN = 2 };

typedef struct vkl_rng {
    uint64_t seed;
    uint64_t stream;
    uint64_t offset; /* index of the next normal in the stream */
} vkl_rng;

void vkl_rng_init(vkl_rng *r, uint64_t seed, uint64_t stream);
/* Normal k of (seed, stream), without touching any state. */
float vkl_rng_normal_at(uint64_t seed, uint64_t stream, uint64_t k);
/* n standard normals from the current offset; the offset advances by n. */
void vkl_rng_normal(vkl_rng *r, float *out, size_t n);

/* Adapter with the signature of vkl_noise_fn (sampler.h): user is a vkl_rng*. */
void vkl_rng_noise_fn(void *user, float *out, size_t n);

/* Sample orders (lm train, hyperlora) and small seeded draws (DyLoRA's rank,
 * CMA-ES, random LLaMA weights): splitmix64 on a 64-bit state, and
 * the Fisher-Yates shuffle it drives (from the last element down, j =
 * draw % (i + 1)); a saved state replays the same orders. */
uint64_t vkl_splitmix64(uint64_t *state);
void vkl_shuffle_ints(int *v, int n, uint64_t *state);

#endif
