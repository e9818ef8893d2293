/* libFuzzer target: the training settings file (`vklora train --config`),
 * JSON or TOML-style `key = value` lines as kohya's configs; a file that is
 * accepted must give settings that can be written back as JSON. */
#include "fuzz_util.h"
#include "train/sd_trainer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file("settings.toml", data, size);
    vkl_train_config c;
    vkl_train_config_default(&c);
    vkl_err e = {0};
    if (vkl_train_config_read(&c, path, &e)) {
        FUZZ_ERROR_SAYS_WHY(e);
        vkl_train_config_free(&c);
        return 0;
    }
    char *js = vkl_train_config_json(&c, path);
    if (!js) abort();
    free(js);
    vkl_train_config_free(&c);
    return 0;
}
