/* DyLoRA (kohya-ss sd-scripts networks/dylora.py, after Valipour et al.):
 * one LoRA of rank D trained so that its first r rank rows serve alone, for
 * every r that is a multiple of the unit U (D % U == 0).
 *
 * Training, per step: t is drawn uniformly from 0..D-1 and rounded down to a
 * multiple of U (kohya's rule), b = t + U, one draw for every module (kohya
 * draws in each module's forward, which there only picks the block that
 * learns; here the draw also sets the rank the forward runs, and one rank
 * for all modules is the configuration a file cut to b computes). The forward uses
 * the first b rows of down / columns of up at scale alpha / b (the scale an
 * ordinary loader gives the file cut to rank b, so the function trained at
 * rank b is the one the cut file computes); only the block of rows [t, b)
 * is trained that step, the rows before it are frozen (no gradient, no
 * optimiser step: kohya's requires_grad rule) and the rows after it are not
 * used. Note: kohya's own module runs all D rows in its forward, scaled by
 * alpha / D * sqrt(D / b), whatever b; its extract_lora_from_dylora.py then
 * cuts files by keeping the first r rows and alpha. vklora trains what the
 * cut files compute (the DyLoRA paper's truncated forward) and cuts the same
 * way, so a cut file and --rank-at-inference agree with training.
 *
 * Files: an ordinary LoRA at rank D (kohya keys, or PEFT lora_A / lora_B with
 * adapter_config.json) with kohya's metadata: ss_network_module
 * "networks.dylora", ss_network_args {"unit": "U"}. Cut to r: down's first r
 * rows, up's first r columns, alpha kept (PEFT: r = r, lora_alpha kept), so
 * the scale is alpha / r. */
#ifndef VKL_LORA_DYLORA_H
#define VKL_LORA_DYLORA_H

#include "lora/lora_apply.h"
#include "optim.h"

#ifdef __cplusplus
extern "C" {
#endif

#define VKL_DYLORA_MODULE "networks.dylora"

/* Records kohya's DyLoRA metadata (module, unit, dim, alpha) on a new adapter. */
int vkl_dylora_mark(vkl_lora *l, int unit, int dim, float alpha, vkl_err *e);
/* The unit of an adapter: ss_network_args' "unit" when ss_network_module is
 * networks.dylora, else 1 (any rank of an ordinary LoRA may be cut). */
int vkl_dylora_unit(const vkl_lora *l, int *unit, vkl_err *e);
/* Cuts every module to rank r in place (see above). Refuses r above a
 * module's rank, r not a multiple of the unit, and kinds that have no rank
 * rows to cut (LoHa, LoKr, DoRA, IA3, Tucker LoCon), naming the module. */
int vkl_dylora_cut(vkl_lora *l, int r, vkl_err *e);
/* The adapter's largest module rank (0 when none has one). */
int vkl_dylora_max_rank(const vkl_lora *l);

/* Training: the per-step rank draw for a set built from one DyLoRA adapter
 * (LoRA modules only, all of one rank, a multiple of unit). */
typedef struct vkl_dylora vkl_dylora;
int vkl_dylora_new(vkl_ctx *c, const vkl_lora_set *set, const vkl_lora *l, int unit, uint64_t seed, vkl_dylora **out,
                   vkl_err *e);
void vkl_dylora_free(vkl_dylora *d);
/* Gates the optimiser's parameters that are the set's down / up tensors
 * (vkl_adamw_set_rank_gate); every parameter must be one. Before append. */
int vkl_dylora_gate(const vkl_dylora *d, vkl_adamw *a, vkl_tensor *const *params, int n, vkl_err *e);
/* Draws this step's rank and uploads every module's forward scales,
 * gradient masks and step counts. Once per optimiser step. */
int vkl_dylora_draw(vkl_dylora *d, vkl_err *e);
/* Advances the draw past `steps` steps without uploading anything: a resumed
 * run at step k skips k draws and continues with the same ranks and per-block
 * step counts as an uninterrupted one (the draw depends on the seed only). */
void vkl_dylora_skip(vkl_dylora *d, int steps);
/* Sets every module's forward to its full rank D (scale alpha / D), e.g. to
 * score the adapter between steps; the next draw replaces it. */
int vkl_dylora_full(vkl_dylora *d, vkl_err *e);
/* The rank b drawn for module slot i at the last draw. */
int vkl_dylora_rank_of(const vkl_dylora *d, int i);

#ifdef __cplusplus
}
#endif

#endif
