/* Every per-device choice of the op builders in one place, filled once when
 * a context is created (as ncnn keeps its per-device option flags): which
 * kernels and tile shapes suit the device, the driver quirks they work
 * around, and the environment overrides tests and tuning runs use, read
 * there and nowhere else. Op builders read vkl_ctx_tuning(c), never the
 * environment. */
#ifndef VKL_TUNING_H
#define VKL_TUNING_H

#include "vkl.h"

typedef enum { VKL_MM_REG = 0, VKL_MM_SCALAR, VKL_MM_TILED } vkl_mm_variant;

typedef struct vkl_tuning {
    /* a CPU implementation (lavapipe, SwiftShader): register-tiled kernels,
     * larger blocks, the unfused attention backward for wide heads */
    int cpu;
    /* blocks one invocation's loop may step through in one pass: lavapipe
     * (llvmpipe) ends any loop after 65,535 iterations without an error and
     * the attention passes loop about twice per block, so 30,000 on CPU
     * drivers (SwiftShader too, whose limits are not known); 0: no limit */
    int64_t loop_budget;
    vkl_mm_variant matmul;             /* VKLORA_MATMUL_VARIANT=reg|scalar|tiled; else reg on CPUs, tiled */
    uint32_t mm_wg, mm_tm, mm_tn;      /* register tile: VKLORA_MATMUL_TILE=wg,tm,tn; else 8,8,16 */
    int attn_grad;                     /* vkl_attn_grad_path; VKLORA_ATTN_GRAD=flash|unfused|auto */
    int64_t seg_block;                 /* segment-statistics block: 4096 on CPUs, 1024 */
    int train_profile;                 /* VKLORA_TRAIN_PROFILE=N: profile training step N's graph (0: off) */
} vkl_tuning;

/* From the device's capabilities and the environment (context creation). */
void vkl_tuning_init(vkl_tuning *t, const vkl_caps *caps);
const vkl_tuning *vkl_ctx_tuning(const vkl_ctx *c);
/* For tests and benchmarks that compare choices on one live context. */
vkl_tuning *vkl_ctx_tuning_edit(vkl_ctx *c);

#endif
