#include "lora_args.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int vkl_app_lora_load(const char *path, const vkl_lora_targets *targets, const char *config, vkl_lora *l)
{
    vkl_lora_opts o = {.targets = targets, .config_path = config};
    vkl_err e;
    if (vkl_lora_load(path, &o, l, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return -1;
    }
    return 0;
}

int vkl_app_lora_save(const vkl_lora *l, const char *to, const char *out, int force)
{
    vkl_err e;
    int rc;
    if (!strcmp(to, "kohya")) {
        rc = vkl_lora_save_kohya(l, out, &e);
    } else {
        char cfg[4096];
        const char *slash = strrchr(out, '/');
        int dl = slash ? (int)(slash - out) : 0;
        snprintf(cfg, sizeof cfg, "%.*s%sadapter_config.json", dl, out, slash ? "/" : "");
        struct stat st;
        if (!force && stat(cfg, &st) == 0) {
            vkl_log(VKL_LOG_ERROR, "%s exists; the PEFT config goes there (use --force to replace it)", cfg);
            return -1;
        }
        rc = vkl_lora_save_peft(l, out, cfg, &e);
    }
    if (rc) vkl_log(VKL_LOG_ERROR, "%s", e.msg);
    return rc;
}
