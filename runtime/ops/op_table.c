/* Every op's builder, kernels, reference, backward rule and tests
 * (op_table.h says what each field means). */
#include "op_table.h"

#include "adamw8.h"
#include "io/gguf_device.h"
#include "ops.h"
#include "ops/conv2d_internal.h"
#include "ops/op_util.h"
#include "ops/norm_internal.h"
#include "optim.h"
#include "ref/ref_gguf.h"
#include "ref/vkl_ref.h"
#include "vkl_internal.h"

#define FN(f) ((vkl_any_fn)(f))
#define K(...) {__VA_ARGS__, VKL_KERNEL_COUNT}
#define NONE {VKL_KERNEL_COUNT}

const vkl_op_info vkl_op_table[] = {
    /* elementwise (runtime/ops/elementwise.c): vkl_sub, vkl_mul, vkl_div share vkl_add's kernel and rule */
    {"vkl_add", FN(vkl_add), "runtime/ops/elementwise.c", K(VKL_KERNEL_BINARY), FN(vkl_ref_binary), NULL,
     "backward_binary", "tests/runtime/test_ops_basic.c", NULL, "tests/runtime/test_autograd.c"},
    /* vkl_scale, vkl_silu, vkl_gelu, vkl_gelu_tanh, vkl_quick_gelu are vkl_unary with an op */
    {"vkl_unary", FN(vkl_unary), "runtime/ops/elementwise.c", K(VKL_KERNEL_UNARY), FN(vkl_ref_unary), NULL,
     "backward_unary", "tests/runtime/test_ops_basic.c", NULL, "tests/runtime/test_autograd.c"},
    {"vkl_convert", FN(vkl_convert), "runtime/ops/elementwise.c", K(VKL_KERNEL_CONVERT), FN(vkl_convert_host), NULL,
     "backward_unary", "tests/runtime/test_ops_basic.c", NULL, "tests/runtime/test_autograd.c"},
    {"vkl_unary_grad", FN(vkl_unary_grad), "runtime/ops/grad_ops.c", K(VKL_KERNEL_UNARY_GRAD), NULL,
     "the derivative of vkl_unary: checked through vkl_unary's gradient test", "none",
     "tests/runtime/test_autograd.c", NULL, NULL},
    {"vkl_sum_rows", FN(vkl_sum_rows), "runtime/ops/reduce.c",
     K(VKL_KERNEL_REDUCE_ROWS, VKL_KERNEL_REDUCE_ROWS_SUBGROUP), FN(vkl_ref_reduce_rows), NULL, "backward_reduce",
     "tests/runtime/test_ops_basic.c", NULL, "tests/runtime/test_autograd.c"},
    {"vkl_max_rows", FN(vkl_max_rows), "runtime/ops/reduce.c",
     K(VKL_KERNEL_REDUCE_ROWS, VKL_KERNEL_REDUCE_ROWS_SUBGROUP), FN(vkl_ref_reduce_rows), NULL, "none",
     "tests/runtime/test_ops_basic.c", NULL, NULL},
    {"vkl_fill", FN(vkl_fill), "runtime/ops/grad_ops.c", K(VKL_KERNEL_FILL), NULL,
     "a constant: the test compares with the value", "none", "tests/runtime/test_grad_accum.c", NULL, NULL},
    {"vkl_sum_to", FN(vkl_sum_to), "runtime/ops/grad_ops.c", K(VKL_KERNEL_SUM_TO), NULL,
     "the broadcast's transpose: checked through the broadcast binary gradients", "none",
     "tests/runtime/test_autograd.c", NULL, NULL},
    {"vkl_copy_into", FN(vkl_copy_into), "runtime/ops/copy.c", K(VKL_KERNEL_UNARY), NULL,
     "an identity copy into an existing tensor (the KV cache): checked by the generation tests", "backward_detached",
     "tests/models/test_llama_generate.c", NULL, NULL},
    {"vkl_accumulate_into", FN(vkl_accumulate_into), "runtime/ops/copy.c", K(VKL_KERNEL_ACCUMULATE), NULL,
     "y = alpha x + beta y in place: the test computes it", "backward_detached", "tests/runtime/test_grad_accum.c", NULL,
     NULL},
    /* products */
    {"vkl_matmul", FN(vkl_matmul), "runtime/ops/matmul.c", K(VKL_KERNEL_MATMUL, VKL_KERNEL_MATMUL_TILED),
     FN(vkl_ref_matmul), NULL, "backward_matmul", "tests/runtime/test_matmul.c", NULL, "tests/runtime/test_autograd.c"},
    {"vkl_linear", FN(vkl_linear), "runtime/ops/matmul.c", K(VKL_KERNEL_MATMUL, VKL_KERNEL_MATMUL_TILED),
     FN(vkl_ref_matmul), NULL, "backward_matmul", "tests/runtime/test_matmul.c", NULL, "tests/runtime/test_block_grad.c"},
    {"vkl_linear_lora", FN(vkl_linear_lora), "runtime/ops/lora.c", K(VKL_KERNEL_LORA_APPLY), FN(vkl_ref_linear_lora),
     NULL, "composed", "tests/runtime/test_lora_ops.c", NULL, "tests/runtime/test_lora_ops_grad.c"},
    {"vkl_conv2d", FN(vkl_conv2d), "runtime/ops/conv2d.c", K(VKL_KERNEL_CONV2D), FN(vkl_ref_conv2d), NULL,
     "vkl_conv2d_backward", "tests/runtime/test_conv2d.c", NULL, "tests/runtime/test_conv2d_grad.c"},
    {"vkl_conv2d_backward", FN(vkl_conv2d_backward), "runtime/ops/conv2d_grad.c",
     K(VKL_KERNEL_CONV2D_DX, VKL_KERNEL_CONV2D_DW), FN(vkl_ref_conv2d_backward), NULL, "none",
     "tests/runtime/test_conv2d_grad.c", "vkl_conv2d", NULL},
    {"vkl_conv2d_lora", FN(vkl_conv2d_lora), "runtime/ops/conv2d_lora.c", NONE, NULL,
     "convolutions and sums of vkl_conv2d: checked against the merged weight", "composed",
     "tests/runtime/test_conv2d.c", NULL, "tests/runtime/test_conv2d_grad.c"},
    /* normalisations: built on vkl_seg_norm (runtime/ops/norm.c, norm_grad.c) */
    {"vkl_group_norm", FN(vkl_group_norm), "runtime/ops/norm.c", NONE, FN(vkl_ref_group_norm), NULL, "composed",
     "tests/runtime/test_norm.c", NULL, "tests/runtime/test_norm_grad.c"},
    {"vkl_layer_norm", FN(vkl_layer_norm), "runtime/ops/norm.c", NONE, FN(vkl_ref_layer_norm), NULL, "composed",
     "tests/runtime/test_norm.c", NULL, "tests/runtime/test_norm_grad.c"},
    {"vkl_rms_norm", FN(vkl_rms_norm), "runtime/ops/norm.c", NONE, FN(vkl_ref_rms_norm), NULL, "composed",
     "tests/runtime/test_norm.c", NULL, "tests/runtime/test_norm_grad.c"},
    {"vkl_seg_norm", FN(vkl_seg_norm), "runtime/ops/norm.c",
     K(VKL_KERNEL_NORM_STATS, VKL_KERNEL_NORM_STATS_SUBGROUP, VKL_KERNEL_NORM_APPLY), FN(vkl_ref_group_norm), NULL,
     "vkl_seg_norm_backward", "tests/runtime/test_norm.c", "vkl_group_norm", "tests/runtime/test_norm_grad.c"},
    {"vkl_seg_norm_backward", FN(vkl_seg_norm_backward), "runtime/ops/norm_grad.c",
     K(VKL_KERNEL_NORM_GRAD_PART, VKL_KERNEL_NORM_GRAD_PART_SUBGROUP, VKL_KERNEL_NORM_GRAD_APPLY,
       VKL_KERNEL_NORM_GRAD_PARAM),
     FN(vkl_ref_group_norm_backward), NULL, "none", "tests/runtime/test_norm_grad.c", "vkl_group_norm", NULL},
    {"vkl_softmax", FN(vkl_softmax), "runtime/ops/softmax.c", NONE, FN(vkl_ref_softmax), NULL, "composed",
     "tests/runtime/test_norm.c", NULL, "tests/runtime/test_norm_grad.c"},
    /* attention */
    {"vkl_attention", FN(vkl_attention), "runtime/ops/attention.c", K(VKL_KERNEL_ATTENTION, VKL_KERNEL_ATTENTION_TILED),
     FN(vkl_ref_attention), NULL, "backward_attention", "tests/runtime/test_attention.c", NULL,
     "tests/runtime/test_attention_grad.c"},
    {"vkl_attention_backward", FN(vkl_attention_backward), "runtime/ops/attention_grad.c", K(VKL_KERNEL_CAUSAL_MASK),
     FN(vkl_ref_attention_backward), NULL, "none", "tests/runtime/test_attention_grad.c", "vkl_attention", NULL},
    {"vkl_attention_flash_grad", FN(vkl_attention_flash_grad), "runtime/ops/attention_flash_grad.c",
     K(VKL_KERNEL_ATTENTION_BWD_STATS, VKL_KERNEL_ATTENTION_BWD_DQ, VKL_KERNEL_ATTENTION_BWD_DKV),
     FN(vkl_ref_attention_backward), NULL, "none", "tests/runtime/test_attention_flashgrad.c", "vkl_attention",
     NULL},
    /* gated activations */
    {"vkl_geglu", FN(vkl_geglu), "runtime/ops/glu.c", K(VKL_KERNEL_GLU, VKL_KERNEL_GLU_GRAD), FN(vkl_ref_geglu),
     NULL, "backward_geglu", "tests/runtime/test_glu.c", NULL, "tests/runtime/test_glu_grad.c"},
    {"vkl_swiglu", FN(vkl_swiglu), "runtime/ops/glu.c", K(VKL_KERNEL_GLU, VKL_KERNEL_GLU_GRAD), FN(vkl_ref_swiglu),
     NULL, "backward_swiglu", "tests/runtime/test_glu.c", NULL, "tests/runtime/test_glu_grad.c"},
    /* layout */
    {"vkl_contiguous", FN(vkl_contiguous), "runtime/ops/layout_ops.c", K(VKL_KERNEL_COPY_STRIDED),
     FN(vkl_ref_contiguous), NULL, "backward_contiguous", "tests/runtime/test_layout_ops.c", NULL,
     "tests/runtime/test_conv2d_grad.c"},
    {"vkl_upsample_nearest2x", FN(vkl_upsample_nearest2x), "runtime/ops/layout_ops.c", K(VKL_KERNEL_COPY_STRIDED),
     FN(vkl_ref_upsample_nearest2x), NULL, "backward_upsample", "tests/runtime/test_layout_ops.c", NULL,
     "tests/runtime/test_conv2d_grad.c"},
    {"vkl_concat", FN(vkl_concat), "runtime/ops/layout_ops.c", K(VKL_KERNEL_COPY_STRIDED), FN(vkl_ref_concat), NULL,
     "backward_concat", "tests/runtime/test_layout_ops.c", NULL, "tests/runtime/test_conv2d_grad.c"},
    /* embeddings */
    {"vkl_timestep_embedding", FN(vkl_timestep_embedding), "runtime/ops/embed.c", K(VKL_KERNEL_TIMESTEP_EMBED),
     FN(vkl_ref_timestep_embedding), NULL, "none", "tests/runtime/test_embed.c", NULL, NULL},
    {"vkl_embedding", FN(vkl_embedding), "runtime/ops/embed.c",
     K(VKL_KERNEL_EMBEDDING, VKL_KERNEL_EMBEDDING_GRAD_INDEX, VKL_KERNEL_EMBEDDING_GRAD), FN(vkl_ref_embedding), NULL,
     "backward_embedding", "tests/runtime/test_embed.c", NULL, "tests/runtime/test_embed_grad.c"},
    {"vkl_rope", FN(vkl_rope), "runtime/ops/rope.c", K(VKL_KERNEL_ROPE), FN(vkl_ref_rope_f64), NULL, "backward_rope",
     "tests/runtime/test_rope.c", NULL, "tests/runtime/test_rope_grad.c"},
    /* losses */
    {"vkl_mse_loss", FN(vkl_mse_loss), "runtime/ops/loss.c", NONE, NULL,
     "built from vkl_sub, vkl_mul, vkl_sum_rows: checked against the SD training vectors", "composed",
     "tests/runtime/test_loss.c", NULL, "tests/runtime/test_loss.c"},
    {"vkl_cross_entropy", FN(vkl_cross_entropy), "runtime/ops/cross_entropy.c",
     K(VKL_KERNEL_CROSS_ENTROPY, VKL_KERNEL_CROSS_ENTROPY_SUBGROUP), FN(vkl_ref_cross_entropy), NULL, "backward_rows",
     "tests/runtime/test_cross_entropy.c", NULL, "tests/runtime/test_cross_entropy.c"},
    /* quantised weights */
    {"vkl_nf4dq_scales", FN(vkl_nf4dq_scales), "runtime/ops/nf4dq_scales.c", K(VKL_KERNEL_NF4DQ_SCALES), NULL,
     "the pre-pass of a product on an NF4_DQ weight: the product equals the host-dequantised one exactly", "none",
     "tests/runtime/test_matmul_nf4.c", "vkl_linear", NULL},
    {"vkl_gguf_dequant_into", FN(vkl_gguf_dequant_into), "runtime/ops/gguf_dequant.c", K(VKL_KERNEL_GGUF_DEQUANT),
     FN(vkl_ref_gguf_dequant), NULL, "none", "tests/runtime/test_gguf_dequant.c", NULL, NULL},
    /* optimisers (their nodes update parameters; no gradient flows through them) */
    /* rank-gated rows (DyLoRA: vkl_adamw_set_rank_gate) use the adamw_gated variant */
    {"vkl_adamw_append", FN(vkl_adamw_append), "runtime/optim.c",
     K(VKL_KERNEL_ADAMW, VKL_KERNEL_ADAMW_GATED, VKL_KERNEL_CLIP_FACTOR), NULL,
     "the update formula is computed in the test and compared with the refkit's torch AdamW steps", "none",
     "tests/runtime/test_optim.c", NULL, NULL},
    {"vkl_adamw8_add_node", FN(vkl_adamw8_add_node), "runtime/adamw8.c", K(VKL_KERNEL_ADAMW8), FN(vkl_ref_adamw8), NULL,
     "none", "tests/runtime/test_optim8.c", "vkl_adamw_new", NULL},
};

const int vkl_op_count = (int)(sizeof vkl_op_table / sizeof *vkl_op_table);
