/* CMA-ES: a gradient-free minimiser of f(x), x in a box [lo, hi]^n, for small
 * n (the mixing weights of a few adapters, LoRAHub). The (mu/mu_w, lambda)
 * evolution strategy with covariance matrix adaptation as Hansen's tutorial
 * ("The CMA Evolution Strategy: A Tutorial", 2016) states it: weighted
 * recombination of the best half, cumulative step-size adaptation, rank-one
 * and rank-mu covariance updates, all with the tutorial's default constants.
 *
 * Ask/tell: vkl_cmaes_ask fills one generation of lambda candidates, the
 * caller evaluates them and hands the values to vkl_cmaes_tell. A candidate
 * drawn outside the box is projected onto it; the projected point is what
 * the caller evaluates and what the update learns from (so every value the
 * search uses belongs to a point inside the box). Draws come from a
 * generator seeded by the options alone: the same seed and the same values
 * give the same candidates on every machine. Host-only, double precision. */
#ifndef VKL_CMAES_H
#define VKL_CMAES_H

#include "vkl_base.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vkl_cmaes_opts {
    int dim;          /* n >= 1 */
    const double *x0; /* start mean [n]; NULL: the box's centre */
    double sigma0;    /* initial step size (> 0) */
    double lo, hi;    /* the box, lo < hi */
    int lambda;       /* candidates per generation; 0: 4 + floor(3 ln n) */
    uint64_t seed;
} vkl_cmaes_opts;

typedef struct vkl_cmaes vkl_cmaes;

int vkl_cmaes_new(const vkl_cmaes_opts *o, vkl_cmaes **out, vkl_err *e);
void vkl_cmaes_free(vkl_cmaes *s);
int vkl_cmaes_lambda(const vkl_cmaes *s);
/* x: [lambda * n], candidate j at x + j * n, inside the box. */
void vkl_cmaes_ask(vkl_cmaes *s, double *x);
/* f: [lambda], the values of the candidates of the last ask, in order
 * (non-finite values rank last). */
void vkl_cmaes_tell(vkl_cmaes *s, const double *f);
/* The current mean [n] and step size. */
const double *vkl_cmaes_mean(const vkl_cmaes *s);
double vkl_cmaes_sigma(const vkl_cmaes *s);

#ifdef __cplusplus
}
#endif

#endif
