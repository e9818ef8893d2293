/* Command-line front end: every subcommand is one file apps/cmd_NAME.c with
 * one entry point, listed in the table in apps/main.c. */
#ifndef VKL_APP_H
#define VKL_APP_H

#include "vkl_base.h"

/* Each returns the process exit status (0 ok, 1 error, 2 usage error);
 * argv[0] is the subcommand name. */
int vkl_cmd_devices(int argc, char **argv);
int vkl_cmd_bench(int argc, char **argv);
int vkl_cmd_info(int argc, char **argv);
int vkl_cmd_generate(int argc, char **argv);
/* vklora's own model folder (assets/vklora-emoji), or NULL when not found. */
const char *vkl_default_model_path(void);
int vkl_cmd_train(int argc, char **argv);
int vkl_cmd_train_vae(int argc, char **argv);
int vkl_cmd_init_model(int argc, char **argv);
int vkl_cmd_convert(int argc, char **argv);
int vkl_cmd_merge(int argc, char **argv);
int vkl_cmd_lm(int argc, char **argv);
int vkl_cmd_tokenizer(int argc, char **argv);
int vkl_cmd_grid(int argc, char **argv);
int vkl_cmd_plot(int argc, char **argv);
int vkl_cmd_lm_train(int argc, char **argv); /* `lm train`, dispatched by vkl_cmd_lm */
int vkl_cmd_lm_merge(int argc, char **argv); /* `lm merge`, dispatched by vkl_cmd_lm */
int vkl_cmd_lm_convert(int argc, char **argv); /* `lm convert`, dispatched by vkl_cmd_lm */
int vkl_cmd_lm_lorahub(int argc, char **argv); /* `lm lorahub`, dispatched by vkl_cmd_lm */
int vkl_cmd_lm_hyperlora(int argc, char **argv); /* `lm hyperlora train|emit`, dispatched by vkl_cmd_lm */
int vkl_cmd_dataset(int argc, char **argv);
int vkl_cmd_serve(int argc, char **argv);
int vkl_cmd_lorahub(int argc, char **argv);
int vkl_cmd_hyperlora(int argc, char **argv); /* `hyperlora train|emit`: HyperLoRA for SD 1.x / 2.x */

/* Prints "vklora CMD: MSG"; when MSG says memory ran out, adds what makes
 * CMD's work fit (cmd as typed: "generate", "lm train", ...). */
void vkl_app_print_error(const char *cmd, const char *msg);

/* --base-dtype f32 | f16 | nf4 (NF4: QLoRA's 4-bit base, runtime/quant.h); -1 otherwise. */
int vkl_app_base_dtype(const char *v, vkl_dtype *out);

/* Readers for option tables (apps/args.h, VKL_ARG_CALL): --device N|cpu|gpu|NAME
 * (dest unused), and a dense dtype f32|f16|bf16 into the vkl_dtype at dest. */
int vkl_app_arg_device(const char *cmd, const char *opt, const char *v, void *dest);
int vkl_app_arg_dense_dtype(const char *cmd, const char *opt, const char *v, void *dest);
/* --weights / --base-dtype f32|f16|bf16|nf4|nf4dq into the vkl_app_dtype_arg
 * at dest (given: the command keeps the model's own dtype without it). */
typedef struct vkl_app_dtype_arg {
    vkl_dtype dt;
    int given;
} vkl_app_dtype_arg;
int vkl_app_arg_base_dtype(const char *cmd, const char *opt, const char *v, void *dest);
/* --chat-template llama3|chatml|mistral: the name, checked, into the const char * at dest. */
int vkl_app_arg_chat_template(const char *cmd, const char *opt, const char *v, void *dest);

#endif
