/* vklora's own model (assets/vklora-emoji, trained by recipe/emoji-model) is
 * what generate and train use when no --model and no VKLORA_MODEL is given,
 * so a fresh checkout draws a real picture. It is looked for beside the
 * program (build/../assets, bin/../share/vklora) and in the source tree the
 * program was built from. */
#include "app.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MODEL_NAME "vklora-emoji"

static int is_model_dir(const char *dir)
{
    char p[2 * PATH_MAX];
    struct stat st;
    snprintf(p, sizeof p, "%s/unet/config.json", dir);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

const char *vkl_default_model_path(void)
{
    static char found[PATH_MAX + 64];
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) *slash = 0;
        const char *rel[] = {"/../assets/", "/../share/vklora/"};
        for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
            snprintf(found, sizeof found, "%s%s%s", exe, rel[i], DEFAULT_MODEL_NAME);
            if (is_model_dir(found)) return found;
        }
    }
#ifdef VKLORA_ASSETS_DIR
    snprintf(found, sizeof found, "%s/%s", VKLORA_ASSETS_DIR, DEFAULT_MODEL_NAME);
    if (is_model_dir(found)) return found;
#endif
    return NULL;
}
