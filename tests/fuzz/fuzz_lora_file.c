/* libFuzzer target: adapter files from the internet — kohya, LyCORIS
 * (LoHa, LoKr, DoRA), diffusers and PEFT (with an adapter_config.json). The
 * input is a safetensors file, optionally followed (after a 0xFF 0xFE pair)
 * by a PEFT adapter_config.json. An adapter that loads must have tensors
 * whose sizes agree with what each module says it holds. */
#include "fuzz_util.h"
#include "lora/lora_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t st = size;
    const uint8_t *cfg = NULL;
    for (size_t i = 0; i + 1 < size; i++)
        if (data[i] == 0xff && data[i + 1] == 0xfe) {
            st = i;
            cfg = data + i + 2;
            break;
        }
    char path[300], cfgpath[300];
    snprintf(path, sizeof path, "%s", fuzz_file("adapter_model.safetensors", data, st));
    vkl_lora_opts o;
    memset(&o, 0, sizeof o);
    if (cfg) {
        snprintf(cfgpath, sizeof cfgpath, "%s", fuzz_file("adapter_config.json", cfg, size - st - 2));
        o.config_path = cfgpath;
    }
    vkl_lora l;
    vkl_err e = {0};
    if (vkl_lora_load(path, &o, &l, &e)) {
        FUZZ_ERROR_SAYS_WHY(e);
        return 0;
    }
    for (int i = 0; i < l.n; i++) {
        const vkl_lora_module *m = &l.m[i];
        if (!vkl_lora_module_label(m)) abort();
        vkl_lora_wnelem(m);
    }
    vkl_lora_free(&l);
    return 0;
}
