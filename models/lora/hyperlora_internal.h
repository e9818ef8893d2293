/* The HyperLoRA network's fields, shared by hyperlora.c (graphs) and
 * hyperlora_file.c (saving, loading). */
#ifndef VKL_HYPERLORA_INTERNAL_H
#define VKL_HYPERLORA_INTERNAL_H

#include "lora/hyperlora.h"

struct vkl_hyperlora {
    vkl_ctx *c;
    const vkl_lora *tmpl;
    int D, H;
    int64_t P;
    int64_t *off;                      /* [2 n + 1]: offsets of each module's down, up factor in o */
    float *mean, scale;                /* the condition's centre [D] and scale */
    float *cbuf;                       /* [D] the centred condition */
    vkl_tensor *p[VKL_HYPERLORA_PARAMS];
    vkl_tensor *cond, *dout;           /* [1, D], [1, P]: uploaded per run */
    vkl_graph *fwd;                    /* emits out */
    vkl_tensor *out;
    vkl_graph *train;                  /* forward, backward seeded by dout, AdamW */
    vkl_tensor *g[VKL_HYPERLORA_PARAMS];
    vkl_adamw *opt;
};

/* The network's tensors and emitting graph, parameters not yet set. */
int vkl_hyperlora_alloc(vkl_ctx *c, const vkl_lora *tmpl, int D, int H, vkl_hyperlora **out, vkl_err *e);

#endif
