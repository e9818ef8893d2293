/* Helpers shared by every test: where the reference data lives, random data,
 * tolerant comparison, and a Vulkan context with validation that fails the
 * test on any validation message. Tests are cmocka programs (one per file). */
#ifndef VKL_TEST_H
#define VKL_TEST_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "vkl_base.h"

/* A program in which a case was skipped (reference data, a device feature or
 * the environment missing) exits 77, which ctest reports as skipped: a test
 * program never shows "Passed" for cases that did not run. Every skip() goes
 * through the count; the group runner turns it into the exit status. */
extern int vkl_test_skips;
int vkl_test_exit_status(int failed);
#undef skip
#define skip() (vkl_test_skips++, _skip(__FILE__, __LINE__))
#undef cmocka_run_group_tests
#define cmocka_run_group_tests(group_tests, group_setup, group_teardown)                                              \
    vkl_test_exit_status(_cmocka_run_group_tests(#group_tests, group_tests, sizeof(group_tests) / sizeof((group_tests)[0]), \
                                                 group_setup, group_teardown))

/* Folder with the reference kit and data: $VKLORA_SHARED, else ../shared next
 * to the source tree. NULL when absent. */
const char *vkl_test_shared(void);
/* Path under the shared folder (static buffer rotated over 8 calls). */
const char *vkl_test_shared_path(const char *rel);
/* Calls cmocka's skip() with a loud message when the shared folder (or the
 * file rel inside it, if rel is not NULL) is missing. */
#define VKL_REQUIRE_SHARED(rel) vkl_test_require_shared(rel)
void vkl_test_require_shared(const char *rel);
int vkl_test_shared_exists(const char *rel);

/* Deterministic random numbers (splitmix64), uniform in [lo, hi). */
typedef struct { uint64_t s; } vkl_test_rng;
void vkl_test_rng_seed(vkl_test_rng *r, uint64_t seed);
uint64_t vkl_test_rng_u64(vkl_test_rng *r);
float vkl_test_rng_uniform(vkl_test_rng *r, float lo, float hi);
int vkl_test_rng_int(vkl_test_rng *r, int lo, int hi); /* inclusive */
void vkl_test_fill(vkl_test_rng *r, float *x, size_t n, float lo, float hi);

/* Compares n floats: passes when |a-b| <= atol + rtol*|b| everywhere.
 * On failure prints the worst element and the max errors, and fails the test. */
void vkl_test_assert_close(const char *what, const float *got, const float *want, size_t n,
                           float atol, float rtol);
/* Max |a-b| over n elements. */
float vkl_test_max_abs_diff(const float *a, const float *b, size_t n);

/* A context on the test device (VKLORA_DEVICE, default lavapipe from the test
 * script) with validation as VKLORA_VALIDATION says, under the given device
 * profile (NULL = default). Fails the test when it cannot be created. */
struct vkl_ctx;
struct vkl_ctx *vkl_test_ctx(const char *profile);
/* Fails the test if the validation layer reported anything; destroys c. */
void vkl_test_ctx_done(struct vkl_ctx *c);
/* Profiles every op test runs under. */
extern const char *const vkl_test_profiles[];
extern const int vkl_test_profile_count;

/* Reads tensor `name` of the safetensors file `rel` under the shared folder
 * as f32 (malloc'd, nelem written). Fails the test when it is absent. */
float *vkl_test_ref_f32(const char *rel, const char *name, int64_t *nelem);
/* The safetensors files at paths a and b hold the same tensors (names, bytes); metadata may differ. */
void vkl_test_same_tensors(const char *a, const char *b);
/* Same, as i32 (token ids, integer timesteps). */
int32_t *vkl_test_ref_i32(const char *rel, const char *name, int64_t *nelem);
/* Asserts max |got - want| <= tol * max|want| and prints the figures. */
void vkl_test_assert_scaled(const char *what, const float *got, const float *want, size_t n, double tol);

/* Tensors in op tests (fail the test on any error). */
struct vkl_tensor;
struct vkl_graph;
/* A persistent tensor of dtype dt holding data (f32 values, converted). */
struct vkl_tensor *vkl_test_upload(struct vkl_ctx *c, vkl_dtype dt, int nd, const int64_t *shape, const float *data);
/* Plans and runs g once. */
void vkl_test_run_graph(struct vkl_graph *g);
/* The tensor's values as f32 (malloc'd). */
float *vkl_test_download(struct vkl_ctx *c, const struct vkl_tensor *t);
/* Rounds x to the values a dt tensor stores (f16, bf16; NF4 and NF4_DQ:
 * quantised and dequantised by the host codec, runtime/quant.h, QLoRA's
 * double quantisation of the absmax for NF4_DQ; f32 unchanged). */
void vkl_test_round_to(vkl_dtype dt, float *x, size_t n);

/* Runs the vklora binary ($VKLORA_BINARY) with args in folder cwd, with
 * optional environment assignments env ("A=1 B=2"); stdout and stderr
 * together into *output (malloc'd; may be NULL). Returns the exit status. */
int vkl_test_run_cli(const char *cwd, const char *env, const char *args, char **output);
/* The whole text file dir/name (malloc'd), or NULL when it cannot be read. */
char *vkl_test_slurp(const char *dir, const char *name);
/* Keeps the first ncols comma-separated columns of every line, in place. */
void vkl_test_csv_first_columns(char *csv, int ncols);

/* A CLI test group working in one temporary folder: pass these as the
 * group's setup and teardown; vkl_test_cli runs the binary there. */
extern char vkl_test_dir[256];
int vkl_test_group_setup(void **state);
int vkl_test_group_teardown(void **state);
/* vkl_test_group_setup, then story.txt in the group's folder: one sentence
 * of the GPL forty times, the text the lm train tests learn. */
int vkl_test_story_setup(void **state);
int vkl_test_cli(const char *args, const char *env, char **output);
/* Copies the images and captions of shared folder rel into vkl_test_dir/images. */
void vkl_test_copy_images(const char *rel);

/* Temporary directory for a test (created, removed by vkl_test_rmtree). */
/* A LLaMA model folder at dir (created) with the refkit's tiny-llama weights,
 * its config.json saying torch_dtype, and a small byte-level BPE
 * tokenizer.json (support_lm.c says which ids). */
void vkl_test_bpe_model_folder(const char *dir, const char *torch_dtype);
/* support_files.c: every *.safetensors in dir (temporaries aside) opens
 * whole (fails the test otherwise; returns how many); state_dir/latest, if
 * there, names a folder holding state.json (its name into name; 0: no
 * latest); two safetensors files hold the same tensors bit for bit. */
int vkl_test_safetensors_whole(const char *dir);
int vkl_test_state_whole(const char *state_dir, char *name, size_t cap);
void vkl_test_same_safetensors(const char *a, const char *b);
/* Runs STEM.csv/STEM.safetensors in the group's folder: the got run logged
 * the want run's step, epoch and loss columns and wrote the same adapter. */
void vkl_test_same_run(const char *want, const char *got);
const char *vkl_test_tmpdir(void);
void vkl_test_rmtree(const char *path);

#endif
