/* Combining adapters into one (`vklora merge` without a model).
 *   rank 0: exact. Ranks are concatenated: down = [down_1; down_2; ...] (rows),
 *           up = [w_1 s_1 up_1 | w_2 s_2 up_2 | ...] (columns), alpha = total
 *           rank (scale 1), so delta = sum_i w_i delta_i up to fp32 rounding of
 *           the folded up columns. LoRA/LoCon modules only.
 *   rank R: per module the summed delta sum_i w_i delta_i (any kind but DoRA,
 *           whose delta depends on the base weight) is truncated to rank R by
 *           SVD: up = U_R S_R, down = V_R^T, alpha = R. For LoRA inputs the SVD
 *           works on the factors (QR of the stacked downs, then a K x K-sized
 *           problem, K = total rank); otherwise on the dense delta.
 * Modules are matched across inputs by kohya name. */
#ifndef VKL_LORA_COMBINE_H
#define VKL_LORA_COMBINE_H

#include "lora/lora_file.h"

typedef struct vkl_lora_input {
    const vkl_lora *lora;
    double weight;
} vkl_lora_input;

typedef struct vkl_lora_combine_report {
    int n;           /* modules of the result */
    double *rel_err; /* per module: ||delta - approx||_F / ||delta||_F (0 for exact) */
    double *norm;    /* per module: ||delta||_F */
    double total_err; /* sqrt(sum err^2) / sqrt(sum norm^2) over all modules */
} vkl_lora_combine_report;

/* out is a fresh adapter (kohya format, metadata left to the caller). rep may be NULL. */
int vkl_lora_combine(const vkl_lora_input *in, int n_in, int rank, vkl_lora *out,
                     vkl_lora_combine_report *rep, vkl_err *e);
void vkl_lora_combine_report_free(vkl_lora_combine_report *r);

/* One-sided Jacobi SVD in double. a [m x n] row-major: on return column j of
 * a holds sigma_j u_j, s[j] = sigma_j (descending), v [n x n] row-major with
 * v[i*n + j] = V[i][j], so that a_in = (a_out) V^T. Returns the sweep count,
 * -1 when it did not converge in 100 sweeps or out of memory. */
int vkl_svd_jacobi(double *a, int m, int n, double *s, double *v);

#endif
