/* LoRAHub (Huang et al. 2023, "LoraHub: Efficient Cross-Task Generalization
 * via Dynamic LoRA Composition"): K LoRA adapters of one base model, the same
 * modules and the same ranks, are mixed into one adapter of that rank with
 * weights w_1..w_K learnt, without gradients, on a few examples.
 *
 * Composition, as the paper and its reference implementation compose: per
 * module and factor,
 *     A = sum_i w_i A_i,   B = sum_i w_i B_i,
 * so delta W = s (sum_i w_i B_i)(sum_j w_j A_j): a rank-r adapter (not the
 * sum of the K products; the cross terms B_i A_j are part of the method).
 * Every input must have the same scale s (alpha / r) per module.
 *
 * Search: minimise loss(w) + l1 * sum_i |w_i| over the box [lo, hi]^K
 * (paper: [-1.5, 1.5]) with CMA-ES (runtime/cmaes.h; the paper uses
 * nevergrad's NGOpt, which picks an evolution strategy for such budgets),
 * seeded. First the K inputs alone (w = e_i) and the plain average (w_i =
 * 1/K) are evaluated, for the report and as the start: the search's mean
 * starts at the best of them, with step size sigma0 (default 0.2). Why not
 * the paper's start at w = 0: the loss is quadratic in w (A and B both scale)
 * and its good region is a narrow valley through the inputs (with A's from
 * one initialisation, sum_i w_i is the delta's overall scale), which 40
 * evaluations from 0 rarely reach; from the best input they refine along it.
 * The search's own evaluations count against the budget. The result is the
 * best point the search evaluated (never a reference point: the numbers
 * reported beside it are what the search has to beat). The reference
 * implementation divides its L1 term by K: its 0.05 is l1 = 0.05 / K here. */
#ifndef VKL_LORAHUB_H
#define VKL_LORAHUB_H

#include "lora/lora_file.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_LORAHUB_MAX_INPUTS 64

/* Checks that the 2 <= K <= VKL_LORAHUB_MAX_INPUTS adapters can be composed: LoRA modules only (no
 * DoRA, LoHa, LoKr, IA3), the same module names in every input (in any
 * order), per module the same factor shapes (rank, in, out) and scale.
 * names: what to call each input in messages (its path). */
int vkl_lorahub_check(const vkl_lora *const *in, const char *const *names, int k, vkl_err *e);

/* out: a fresh adapter with in[0]'s modules, names, ranks, alphas, scales,
 * format and PEFT flags, its factors zero (f32). Fill it with compose. */
int vkl_lorahub_prepare(const vkl_lora *const *in, int k, vkl_lora *out, vkl_err *e);
/* out's factors = sum_i w[i] in[i]'s (accumulated in double). in must have
 * passed vkl_lorahub_check and out come from vkl_lorahub_prepare. */
void vkl_lorahub_compose(const vkl_lora *const *in, int k, const double *w, vkl_lora *out);

/* The few-example loss of the adapter composed with weights w[k]. */
typedef int (*vkl_lorahub_loss_fn)(void *user, const double *w, double *loss, vkl_err *e);

typedef struct vkl_lorahub_gen {
    int gen, generations; /* 1-based generation, planned generations */
    int evals, budget;    /* search evaluations so far, the budget */
    double gen_best;      /* the generation's best objective */
    double best, best_loss; /* the best objective so far and its loss */
    const double *best_w; /* [k] */
} vkl_lorahub_gen;

typedef struct vkl_lorahub_opts {
    int k;
    int budget;    /* search evaluations (default 40); the last generation may be cut short */
    double l1;     /* weight of sum |w_i| (default 0.05) */
    double lo, hi; /* the box (default -1.5, 1.5) */
    double sigma0; /* CMA-ES initial step size (default 0.2) */
    uint64_t seed;
    /* called after each reference evaluation (which: 0..k-1 the inputs, k the
     * average) and after each generation; may be NULL */
    void (*on_reference)(void *user, int which, double loss);
    void (*on_generation)(void *user, const vkl_lorahub_gen *g);
    void *user;
} vkl_lorahub_opts;

void vkl_lorahub_opts_default(vkl_lorahub_opts *o, int k);

typedef struct vkl_lorahub_result {
    double *w;          /* [k], caller's: the best weights */
    double loss;        /* their loss (without the L1 term) */
    double objective;   /* loss + l1 * sum |w| */
    double *input_loss; /* [k], caller's (may be NULL): each input alone */
    double average_loss; /* the plain average */
    int evals;          /* search evaluations done */
    int generations;
} vkl_lorahub_result;

int vkl_lorahub_search(const vkl_lorahub_opts *o, vkl_lorahub_loss_fn loss, void *user, vkl_lorahub_result *r,
                       vkl_err *e);

#ifdef __cplusplus
}
#endif

#endif
