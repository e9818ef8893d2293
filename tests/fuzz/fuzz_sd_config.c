/* libFuzzer target: the model configuration readers of outside files —
 * diffusers config.json (UNet, VAE, text encoder, scheduler, family guess)
 * and the original repositories' LDM/SGM yaml. The first byte picks the
 * reader; whatever a reader accepts must then pass or fail validation
 * cleanly. */
#include "fuzz_util.h"
#include "sd/sd_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int which = data[0] % 7;
    vkl_sd_family fam = (vkl_sd_family)((data[0] >> 3) % 3);
    char *text = fuzz_cstr(data + 1, size - 1);
    vkl_sd_config c;
    memset(&c, 0, sizeof c);
    vkl_sd_config_family_defaults(&c, fam);
    vkl_err e = {0};
    int rc = 0;
    switch (which) {
    case 0: rc = vkl_sd_unet_config_from_json(text, "fuzz", &c.unet, &e); break;
    case 1: rc = vkl_sd_vae_config_from_json(text, "fuzz", &c.vae, &e); break;
    case 2: rc = vkl_sd_text_config_from_json(text, "fuzz", 0, &c.te[0], &e); break;
    case 3: rc = vkl_sd_text_config_from_json(text, "fuzz", 1, &c.te[1], &e); break;
    case 4: rc = vkl_sd_sched_config_from_json(text, "fuzz", &c.sched, &e); break;
    case 5: {
        vkl_sd_family f;
        rc = vkl_sd_family_from_json(text, text, data[0] & 0x80, &f, &e);
        break;
    }
    default: rc = vkl_sd_config_apply_ldm_yaml(text, "fuzz", &c, &e); break;
    }
    if (rc) FUZZ_ERROR_SAYS_WHY(e);
    else if (vkl_sd_config_validate(&c, &e)) FUZZ_ERROR_SAYS_WHY(e);
    free(text);
    return 0;
}
