/* Compute pipelines, created on first use per (shader variant, number of
 * bindings, specialization constants) and kept for the context's life, plus
 * the on-disk pipeline cache that makes a second run start faster. */
#include "vkl_internal.h"
#include "shader_table.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Drivers compile a shader at its pipeline's creation or its first dispatch
 * (lavapipe: the latter), seconds each on a CPU; the on-disk cache makes
 * later runs skip that. With no usable cache the first pipeline says so
 * once, so the slow first steps of a first run are not a silent mystery. */
static void note_first_compile(vkl_ctx *c)
{
    if (!c->pcache_cold) return;
    c->pcache_cold = 0;
    vkl_log(VKL_LOG_INFO, "first run on %s: shaders are compiled as they are first used, so the first steps are slow; "
            "they are kept in %s for the next runs", c->caps.name, c->pcache_path[0] ? c->pcache_path : "memory only");
}

int vkl_pipeline_get(vkl_ctx *c, vkl_kernel k, int nbind, const uint32_t *spec, int nspec,
                     vkl_pipeline **out, vkl_err *e)
{
    if ((unsigned)k >= VKL_KERNEL_COUNT) return vkl_fail(e, "kernel %d is not built into this program", (int)k);
    const vkl_shader_blob *blob = &vkl_shader_table[k];
    const char *name = blob->name;
    char key[160];
    int n = snprintf(key, sizeof key, "%s/%d", name, nbind);
    for (int i = 0; i < nspec && n < (int)sizeof key - 12; i++) n += snprintf(key + n, sizeof key - n, ",%u", spec[i]);
    for (vkl_pipeline *p = c->pipelines; p; p = p->next)
        if (!strcmp(p->key, key)) {
            *out = p;
            return 0;
        }
    if (nbind > VKL_MAX_BIND || nspec > 16) return vkl_fail(e, "shader '%s': too many bindings or constants", name);
    vkl_pipeline *p = calloc(1, sizeof *p);
    if (!p) return vkl_fail(e, "out of host memory");
    snprintf(p->key, sizeof p->key, "%s", key);
    p->nbind = nbind;
    VkDescriptorSetLayoutBinding lb[VKL_MAX_BIND];
    for (int i = 0; i < nbind; i++)
        lb[i] = (VkDescriptorSetLayoutBinding){.binding = (uint32_t)i, .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                                               .descriptorCount = 1, .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT};
    VkDescriptorSetLayoutCreateInfo dli = {.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
                                           .bindingCount = (uint32_t)nbind, .pBindings = lb};
    VkResult r = vk.vkCreateDescriptorSetLayout(c->dev, &dli, NULL, &p->dsl);
    VkPushConstantRange pcr = {.stageFlags = VK_SHADER_STAGE_COMPUTE_BIT, .offset = 0, .size = VKL_PUSH_BYTES};
    VkPipelineLayoutCreateInfo pli = {.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, .setLayoutCount = 1,
                                      .pSetLayouts = &p->dsl, .pushConstantRangeCount = 1, .pPushConstantRanges = &pcr};
    if (r == VK_SUCCESS) r = vk.vkCreatePipelineLayout(c->dev, &pli, NULL, &p->layout);
    VkShaderModule mod = VK_NULL_HANDLE;
    VkShaderModuleCreateInfo smi = {.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, .codeSize = blob->bytes,
                                    .pCode = blob->code};
    if (r == VK_SUCCESS) r = vk.vkCreateShaderModule(c->dev, &smi, NULL, &mod);
    VkSpecializationMapEntry me[16];
    for (int i = 0; i < nspec; i++) me[i] = (VkSpecializationMapEntry){.constantID = (uint32_t)i, .offset = (uint32_t)(4 * i), .size = 4};
    VkSpecializationInfo si = {.mapEntryCount = (uint32_t)nspec, .pMapEntries = me, .dataSize = (size_t)(4 * nspec), .pData = spec};
    VkComputePipelineCreateInfo cpi = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, .stage = VK_SHADER_STAGE_COMPUTE_BIT,
                  .module = mod, .pName = "main", .pSpecializationInfo = nspec ? &si : NULL},
        .layout = p->layout};
    note_first_compile(c);
    if (r == VK_SUCCESS) r = vk.vkCreateComputePipelines(c->dev, c->pcache, 1, &cpi, NULL, &p->pipe);
    if (mod) vk.vkDestroyShaderModule(c->dev, mod, NULL);
    if (r != VK_SUCCESS) {
        if (p->layout) vk.vkDestroyPipelineLayout(c->dev, p->layout, NULL);
        if (p->dsl) vk.vkDestroyDescriptorSetLayout(c->dev, p->dsl, NULL);
        free(p);
        return vkl_fail(e, "cannot build the compute pipeline for shader '%s' on '%s': %s", name, c->caps.name,
                        vkl_vk_result_str(r));
    }
    p->next = c->pipelines;
    c->pipelines = p;
    *out = p;
    return 0;
}

void vkl_pipelines_destroy(vkl_ctx *c)
{
    while (c->pipelines) {
        vkl_pipeline *p = c->pipelines;
        c->pipelines = p->next;
        vk.vkDestroyPipeline(c->dev, p->pipe, NULL);
        vk.vkDestroyPipelineLayout(c->dev, p->layout, NULL);
        vk.vkDestroyDescriptorSetLayout(c->dev, p->dsl, NULL);
        free(p);
    }
}

/* Cache file: "VKLPC1\0\0", u64 data size, u64 FNV-1a hash of the data, then the
 * driver's own cache blob (whose header the driver checks against the device).
 * Anything that does not check out is ignored, never fatal. */
static uint64_t fnv1a(const uint8_t *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

int vkl_pcache_load(vkl_ctx *c, vkl_err *e)
{
    void *data = NULL;
    size_t size = 0;
    int seen = 0;
    if (c->pcache_path[0]) {
        FILE *f = fopen(c->pcache_path, "rb");
        if (f) {
            uint8_t hdr[24];
            if (fread(hdr, 1, 24, f) == 24 && !memcmp(hdr, "VKLPC1\0\0", 8)) {
                uint64_t n, h;
                memcpy(&n, hdr + 8, 8);
                memcpy(&h, hdr + 16, 8);
                if (n == 0) seen = 1;
                if (n >= 32 && n < (1ull << 30) && (data = malloc(n)) && fread(data, 1, n, f) == n &&
                    fnv1a(data, n) == h) {
                    /* the Vulkan cache header: length, version, vendor, device, then the
                     * driver's cache UUID, which the driver checks itself */
                    uint32_t w[4];
                    memcpy(w, data, 16);
                    if (w[0] >= 32 && w[1] == 1 && w[2] == c->caps.vendor_id && w[3] == c->caps.device_id)
                        size = n, seen = 1;
                }
                if (!size && n) {
                    free(data);
                    data = NULL;
                    vkl_log(VKL_LOG_DEBUG, "ignoring unusable pipeline cache %s", c->pcache_path);
                }
            }
            fclose(f);
        }
    }
    c->pcache_cold = !seen;
    VkPipelineCacheCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO, .initialDataSize = size,
                                    .pInitialData = data};
    VkResult r = vk.vkCreatePipelineCache(c->dev, &ci, NULL, &c->pcache);
    if (r != VK_SUCCESS && size) {
        ci.initialDataSize = 0;
        ci.pInitialData = NULL;
        r = vk.vkCreatePipelineCache(c->dev, &ci, NULL, &c->pcache);
    }
    free(data);
    VKL_CHECK_VK(r, e, "vkCreatePipelineCache");
    return 0;
}

static int mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    }
    return 0;
}

void vkl_pcache_save(vkl_ctx *c)
{
    if (!c->pcache || !c->pcache_path[0]) return;
    size_t n = 0;
    /* a driver with its own shader cache (Mesa's) may give no data: the file
     * is still written, empty, and says the device has been used */
    if (vk.vkGetPipelineCacheData(c->dev, c->pcache, &n, NULL) != VK_SUCCESS) return;
    uint8_t *data = malloc(n ? n : 1);
    if (!data) return;
    if ((!n || vk.vkGetPipelineCacheData(c->dev, c->pcache, &n, data) == VK_SUCCESS) && mkdirs(c->pcache_path) == 0) {
        char tmp[1100];
        snprintf(tmp, sizeof tmp, "%s.tmp%d", c->pcache_path, (int)getpid());
        FILE *f = fopen(tmp, "wb");
        if (f) {
            uint64_t n64 = n, h = fnv1a(data, n);
            int ok = fwrite("VKLPC1\0\0", 1, 8, f) == 8 && fwrite(&n64, 8, 1, f) == 1 && fwrite(&h, 8, 1, f) == 1 &&
                     fwrite(data, 1, n, f) == n;
            ok = (fclose(f) == 0) && ok;
            if (!ok || rename(tmp, c->pcache_path) != 0) unlink(tmp);
        }
    }
    free(data);
}
