/* Option readers (apps/args.h, VKL_ARG_CALL) that several commands share. */
#include "app.h"

#include "quant.h"
#include "vkl.h"
#include "tokenizer/chat_template.h"

#include <stdio.h>

int vkl_app_arg_device(const char *cmd, const char *opt, const char *v, void *dest)
{
    (void)cmd, (void)opt, (void)dest;
    /* checked when the context is made, where the devices are known */
    vkl_ctx_default_device(v, "--device ");
    return 0;
}

int vkl_app_arg_dense_dtype(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_dtype *out = dest;
    if (vkl_app_base_dtype(v, out) || vkl_dtype_is_quant(*out)) {
        fprintf(stderr, "vklora %s: %s '%s': expected f32, f16 or bf16\n", cmd, opt, v);
        return 1;
    }
    return 0;
}

int vkl_app_arg_base_dtype(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_app_dtype_arg *a = dest;
    if (vkl_app_base_dtype(v, &a->dt)) {
        fprintf(stderr, "vklora %s: %s '%s': expected f32, f16, bf16, nf4 or nf4dq\n", cmd, opt, v);
        return 1;
    }
    a->given = 1;
    return 0;
}

int vkl_app_arg_chat_template(const char *cmd, const char *opt, const char *v, void *dest)
{
    vkl_chat probe;
    vkl_err e = {{0}};
    if (vkl_chat_from_name(v, &probe, &e)) {
        fprintf(stderr, "vklora %s: %s '%s': expected llama3, chatml or mistral\n", cmd, opt, v);
        return 1;
    }
    *(const char **)dest = v;
    return 0;
}
