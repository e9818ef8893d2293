/* `vklora info`: one report function per file type, chosen by sniffing the
 * file (see cmd_info.c), and the tensor-name classifier for safetensors. */
#ifndef VKL_APP_INFO_H
#define VKL_APP_INFO_H

#include "io/safetensors.h"

/* Each prints a report of path on stdout (JSON when json is set) and returns
 * the exit status: 0, or 1 after printing the error on stderr. */
int vkl_info_safetensors(const char *path, int json);
int vkl_info_image(const char *path, int json);
int vkl_info_gguf(const char *path, int json);
/* A diffusers model, PEFT adapter or language-model folder. */
int vkl_info_folder(const char *path, int json);

#define VKL_INFO_MAX_LIST 16

typedef enum {
    VKL_INFO_UNKNOWN = 0,
    VKL_INFO_LORA,          /* adapter: kohya, PEFT, diffusers or LyCORIS names */
    VKL_INFO_SD_CHECKPOINT, /* single-file original layout */
    VKL_INFO_DIFFUSERS_UNET,
    VKL_INFO_DIFFUSERS_VAE,
    VKL_INFO_TEXT_ENCODER,  /* transformers CLIPTextModel */
    VKL_INFO_LANGUAGE_MODEL /* transformers LLaMA-style causal LM */
} vkl_info_kind;

typedef struct vkl_info_class {
    vkl_info_kind kind;
    char format[96];     /* LoRA: "kohya", "PEFT", "kohya + LyCORIS LoHa"...; checkpoint: "SD 1.x"... */
    /* LoRA adapters */
    int modules, unet_modules, te_modules;
    int ranks[VKL_INFO_MAX_LIST], nranks; /* distinct, ascending; -1 = full-rank LoKr factor */
    float alphas[VKL_INFO_MAX_LIST];      /* distinct, ascending */
    int nalphas;
    int too_many_ranks, too_many_alphas;  /* more distinct values than the lists hold */
    int dora;
    int ia3; /* PEFT IA3 vectors (no rank, no alpha) */
    /* checkpoints: tensor counts per part */
    int unet_tensors, vae_tensors, te_tensors;
} vkl_info_class;

/* Classifies f by its tensor names and shapes (alpha tensors are read). */
int vkl_info_classify(const vkl_st_file *f, vkl_info_class *c, vkl_err *e);
const char *vkl_info_kind_name(vkl_info_kind k);  /* "lora", "sd-checkpoint", ... */
const char *vkl_info_kind_title(vkl_info_kind k); /* "LoRA adapter", "SD checkpoint", ... */

#endif
