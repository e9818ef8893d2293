/* The map of every op: where its builder, shaders, CPU reference, backward
 * rule and tests are, so that anyone can find them in a minute, and so that
 * tests/runtime/test_op_table.c can check that each one is there (the files
 * exist and hold what the entry says, every built shader variant belongs to
 * an entry, every op with a backward rule has a numerical gradient test).
 * The builder and the reference are function pointers: an entry naming one
 * that does not exist fails to compile. Kernel names are the generated
 * vkl_kernel constants (shader_ids.h). Internal: not installed. */
#ifndef VKL_OP_TABLE_H
#define VKL_OP_TABLE_H

#include "shader_ids.h"

typedef void (*vkl_any_fn)(void); /* matches any function type in a cast */

#define VKL_OP_MAX_KERNELS 6

typedef struct vkl_op_info {
    const char *name;        /* the builder's name, e.g. "vkl_group_norm" (its variants share the entry) */
    vkl_any_fn builder;
    const char *file;        /* where the builder is, from the source root */
    /* the kernels its nodes dispatch (VKL_KERNEL_COUNT ends the list; none
     * when it is built from other ops) */
    vkl_kernel kernels[VKL_OP_MAX_KERNELS];
    vkl_any_fn reference;    /* its CPU reference (runtime/ref), NULL when... */
    const char *no_reference; /* ...this says why (and what checks it instead) */
    /* the backward rule: a function in `file` (set as node->backward),
     * "composed" (its parts' rules apply) or "none" (frozen or integer
     * outputs; the autograd reports it if asked) */
    const char *backward;
    const char *test;        /* the test program checking its output */
    /* for a builder that ops reach inside (a backward pass, a shared
     * normalisation): the op whose tests run it, which they call instead;
     * NULL otherwise */
    const char *reached_from;
    /* the one checking its gradient numerically (NULL: backward "none", or
     * "backward_detached", which passes no gradient on) */
    const char *grad_test;
} vkl_op_info;

extern const vkl_op_info vkl_op_table[];
extern const int vkl_op_count;

#endif
