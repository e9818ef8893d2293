/* Sampler and convention names: ComfyUI's (euler_ancestral, dpmpp_2m_sde,
 * with _karras / _exponential) and AUTOMATIC1111's display names ("Euler a",
 * "DPM++ 2M SDE Karras"), as users type them and as A1111 writes them into
 * its PNG parameters. */
#include "sd/sampler.h"

#include <ctype.h>
#include <string.h>

/* Lower case, with spaces, '-' and '+' folded so "DPM++ 2M" -> "dpmpp_2m". */
static void fold_name(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 2 < size; p++) {
        char ch = (char)tolower((unsigned char)*p);
        if (ch == '+') {
            out[o++] = 'p';
        } else if (ch == ' ' || ch == '-') {
            if (o && out[o - 1] != '_') out[o++] = '_';
        } else {
            out[o++] = ch;
        }
    }
    out[o] = 0;
}

static const struct {
    const char *name;
    vkl_sampler_kind kind;
} sampler_names[] = {
    {"euler", VKL_SAMPLER_EULER},         {"euler_ancestral", VKL_SAMPLER_EULER_A},
    {"euler_a", VKL_SAMPLER_EULER_A},     {"ddim", VKL_SAMPLER_DDIM},
    {"dpmpp_2m", VKL_SAMPLER_DPMPP_2M},   {"heun", VKL_SAMPLER_HEUN},
    {"lms", VKL_SAMPLER_LMS},             {"dpmpp_2m_sde", VKL_SAMPLER_DPMPP_2M_SDE},
    {"dpmpp_sde", VKL_SAMPLER_DPMPP_SDE},
};

const char *vkl_sampler_names_help(void)
{
    return "euler, euler_a (euler_ancestral), ddim, dpmpp_2m, heun, lms, dpmpp_2m_sde, dpmpp_sde "
           "(with _karras or _exponential for that schedule), or the A1111 names Euler, Euler a, "
           "DDIM, DPM++ 2M, Heun, LMS, DPM++ 2M SDE, DPM++ SDE (\"DPM++ 2M SDE Karras\")";
}

int vkl_sampler_config_set_name(vkl_sampler_config *c, const char *name, vkl_err *e)
{
    char f[64];
    fold_name(name, f, sizeof f);
    static const struct { const char *suffix; vkl_schedule_kind kind; } suffixes[] = {
        {"_karras", VKL_SCHEDULE_KARRAS}, {"_exponential", VKL_SCHEDULE_EXPONENTIAL}};
    int has_sched = 0;
    vkl_schedule_kind sched = VKL_SCHEDULE_NORMAL;
    size_t len = strlen(f);
    for (size_t k = 0; k < 2; k++) {
        size_t sl = strlen(suffixes[k].suffix);
        if (len > sl && !strcmp(f + len - sl, suffixes[k].suffix)) {
            f[len - sl] = 0;
            has_sched = 1;
            sched = suffixes[k].kind;
            break;
        }
    }
    for (size_t i = 0; i < sizeof sampler_names / sizeof *sampler_names; i++) {
        if (strcmp(f, sampler_names[i].name)) continue;
        if (has_sched && sampler_names[i].kind == VKL_SAMPLER_DDIM)
            return vkl_fail(e, "sampler \"%s\": DDIM has no %s schedule", name,
                            vkl_schedule_kind_a1111_name(sched));
        c->kind = sampler_names[i].kind;
        if (has_sched) c->schedule = sched;
        if (c->kind == VKL_SAMPLER_DDIM) c->eta = 0.0f;
        if (c->kind == VKL_SAMPLER_EULER_A || c->kind == VKL_SAMPLER_DPMPP_2M_SDE ||
            c->kind == VKL_SAMPLER_DPMPP_SDE)
            c->eta = 1.0f;
        return 0;
    }
    return vkl_fail(e, "sampler \"%s\" is not known (%s)", name, vkl_sampler_names_help());
}

const char *vkl_sampler_kind_name(vkl_sampler_kind k)
{
    switch (k) {
    case VKL_SAMPLER_EULER: return "euler";
    case VKL_SAMPLER_EULER_A: return "euler_ancestral";
    case VKL_SAMPLER_DDIM: return "ddim";
    case VKL_SAMPLER_DPMPP_2M: return "dpmpp_2m";
    case VKL_SAMPLER_HEUN: return "heun";
    case VKL_SAMPLER_LMS: return "lms";
    case VKL_SAMPLER_DPMPP_2M_SDE: return "dpmpp_2m_sde";
    case VKL_SAMPLER_DPMPP_SDE: return "dpmpp_sde";
    }
    return "unknown";
}

const char *vkl_sampler_kind_a1111_name(vkl_sampler_kind k)
{
    switch (k) {
    case VKL_SAMPLER_EULER: return "Euler";
    case VKL_SAMPLER_EULER_A: return "Euler a";
    case VKL_SAMPLER_DDIM: return "DDIM";
    case VKL_SAMPLER_DPMPP_2M: return "DPM++ 2M";
    case VKL_SAMPLER_HEUN: return "Heun";
    case VKL_SAMPLER_LMS: return "LMS";
    case VKL_SAMPLER_DPMPP_2M_SDE: return "DPM++ 2M SDE";
    case VKL_SAMPLER_DPMPP_SDE: return "DPM++ SDE";
    }
    return "unknown";
}

int vkl_convention_parse(const char *s, vkl_convention *out, vkl_err *e)
{
    if (!strcmp(s, "a1111")) *out = VKL_CONV_A1111;
    else if (!strcmp(s, "diffusers")) *out = VKL_CONV_DIFFUSERS;
    else return vkl_fail(e, "convention \"%s\" is not one of a1111, diffusers", s);
    return 0;
}

const char *vkl_convention_name(vkl_convention c)
{
    return c == VKL_CONV_DIFFUSERS ? "diffusers" : "a1111";
}
