/* SHA-256 (FIPS 180-4) and the model-hash conventions built on it.
 *
 * Conventions (all lower-case hex):
 *  - full:   SHA-256 of the whole file (AUTOMATIC1111 "sha256", kohya
 *            ss_new_sd_model_hash, civitai "SHA256").
 *  - AUTOV2: its first 10 hex digits (the "short hash" A1111 shows as
 *            "Model hash" in generation parameters).
 *  - legacy: A1111's old model hash and kohya's ss_sd_model_hash / ss_vae_hash:
 *            SHA-256 of the 0x10000 bytes at offset 0x100000 (fewer when the
 *            file is shorter; none when shorter than the offset), first 8 digits.
 *  - AUTOV3: sd-webui-additional-networks' safetensors hash (kohya
 *            sshs_model_hash): SHA-256 of a safetensors file from the end of
 *            its header (8 + N bytes) to the end; its first 12 digits are the
 *            short form civitai lists as AutoV3. */
#ifndef VKL_SHA256_H
#define VKL_SHA256_H

#include "vkl_base.h"

#define VKL_SHA256_BYTES 32
#define VKL_SHA256_HEX 65 /* 64 digits + NUL */

typedef struct vkl_sha256_ctx {
    uint32_t h[8];
    uint64_t total; /* bytes absorbed so far */
    uint8_t block[64];
    size_t fill; /* bytes waiting in block */
} vkl_sha256_ctx;

void vkl_sha256_init(vkl_sha256_ctx *s);
void vkl_sha256_update(vkl_sha256_ctx *s, const void *data, size_t n);
void vkl_sha256_final(vkl_sha256_ctx *s, uint8_t out[VKL_SHA256_BYTES]);
/* One-shot digest of a buffer. */
void vkl_sha256_buf(const void *data, size_t n, uint8_t out[VKL_SHA256_BYTES]);
/* Lower-case hex of a digest, 64 digits. */
void vkl_sha256_hex(const uint8_t d[VKL_SHA256_BYTES], char out[VKL_SHA256_HEX]);

/* Digest of bytes [offset, offset+length) of a file, streaming (length
 * UINT64_MAX = to the end). Stops quietly at end of file, as Python's read(n)
 * does, so the legacy hash of a short file is defined. */
int vkl_sha256_file_range(const char *path, uint64_t offset, uint64_t length,
                          uint8_t out[VKL_SHA256_BYTES], vkl_err *e);
int vkl_sha256_file(const char *path, uint8_t out[VKL_SHA256_BYTES], vkl_err *e);

/* The conventions above as hex strings (full digits written into out; the
 * short forms are NUL-terminated after 10, 8 and 12 digits). */
int vkl_hash_file_full(const char *path, char out[VKL_SHA256_HEX], vkl_err *e);
int vkl_hash_file_autov2(const char *path, char out[VKL_SHA256_HEX], vkl_err *e);
int vkl_hash_file_legacy(const char *path, char out[VKL_SHA256_HEX], vkl_err *e);
/* Full AUTOV3 digest (64 digits); callers wanting the short form keep 12. */
int vkl_hash_safetensors_autov3(const char *path, char out[VKL_SHA256_HEX], vkl_err *e);

#endif
