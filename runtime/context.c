/* The context: Vulkan instance, one device with one compute queue, the
 * allocator and the pipeline cache. */
#include "vkl_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* The process-wide device choice of a command line's --device. */
static const char *default_spec, *default_origin;

void vkl_ctx_default_device(const char *spec, const char *origin)
{
    default_spec = spec;
    default_origin = origin;
}

void vkl_ctx_opts_default(vkl_ctx_opts *o)
{
    memset(o, 0, sizeof *o);
    o->device = -1;
    o->validation = -1;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
                                                    VkDebugUtilsMessageTypeFlagsEXT type,
                                                    const VkDebugUtilsMessengerCallbackDataEXT *d,
                                                    void *user)
{
    (void)type;
    vkl_ctx *c = user;
    atomic_fetch_add(&c->validation_count, 1);
    fprintf(stderr, "vklora: validation %s: %s\n",
            (sev & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) ? "error" : "warning",
            d->pMessage ? d->pMessage : "(no message)");
    return VK_FALSE;
}

static int layer_present(const char *name)
{
    uint32_t n = 0;
    vk.vkEnumerateInstanceLayerProperties(&n, NULL);
    VkLayerProperties *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return 0;
    vk.vkEnumerateInstanceLayerProperties(&n, p);
    int found = 0;
    for (uint32_t i = 0; i < n; i++) found |= !strcmp(p[i].layerName, name);
    free(p);
    return found;
}

static int instance_ext_present(const char *name)
{
    uint32_t n = 0;
    vk.vkEnumerateInstanceExtensionProperties(NULL, &n, NULL);
    VkExtensionProperties *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return 0;
    vk.vkEnumerateInstanceExtensionProperties(NULL, &n, p);
    int found = 0;
    for (uint32_t i = 0; i < n; i++) found |= !strcmp(p[i].extensionName, name);
    free(p);
    return found;
}

static int create_instance(vkl_ctx *c, int validation, vkl_err *e)
{
    if (vkl_vk_load_global(e)) return -1;
    uint32_t api = VK_API_VERSION_1_1;
    if (vk.vkEnumerateInstanceVersion) {
        uint32_t v = 0;
        vk.vkEnumerateInstanceVersion(&v);
        if (v >= VK_API_VERSION_1_2) api = VK_API_VERSION_1_2;
    }
    VkApplicationInfo app = {.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
                             .pApplicationName = "vklora", .pEngineName = "vklora", .apiVersion = api};
    const char *layers[1];
    const char *exts[2];
    uint32_t nl = 0, ne = 0;
    VkValidationFeatureEnableEXT feats[] = {VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT};
    VkValidationFeaturesEXT vf = {.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
                                  .enabledValidationFeatureCount = 1, .pEnabledValidationFeatures = feats};
    if (validation) {
        if (!layer_present("VK_LAYER_KHRONOS_validation"))
            return vkl_fail(e, "validation was asked for but the Khronos validation layer is not installed "
                               "(Debian: apt-get install vulkan-validationlayers)");
        layers[nl++] = "VK_LAYER_KHRONOS_validation";
        exts[ne++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    } else if (instance_ext_present(VK_EXT_DEBUG_UTILS_EXTENSION_NAME)) {
        /* drivers report through it too */
        exts[ne++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    }
    VkInstanceCreateInfo ci = {.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
                               .pNext = validation ? &vf : NULL,
                               .pApplicationInfo = &app,
                               .enabledLayerCount = nl, .ppEnabledLayerNames = layers,
                               .enabledExtensionCount = ne, .ppEnabledExtensionNames = exts};
    VkResult r = vk.vkCreateInstance(&ci, NULL, &c->inst);
    if (r != VK_SUCCESS)
        return vkl_fail(e, "cannot create a Vulkan instance: %s (is a Vulkan driver installed? "
                           "Debian: apt-get install mesa-vulkan-drivers)", vkl_vk_result_str(r));
    vkl_vk_load_instance(c->inst);
    if (validation && vk.vkCreateDebugUtilsMessengerEXT) {
        VkDebugUtilsMessengerCreateInfoEXT mi = {
            .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
            .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                               VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
            .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
            .pfnUserCallback = on_validation, .pUserData = c};
        VKL_CHECK_VK(vk.vkCreateDebugUtilsMessengerEXT(c->inst, &mi, NULL, &c->messenger), e,
                     "vkCreateDebugUtilsMessengerEXT");
    }
    return 0;
}

static int rank(vkl_dev_type t)
{
    switch (t) {
    case VKL_DEV_DISCRETE: return 4;
    case VKL_DEV_INTEGRATED: return 3;
    case VKL_DEV_VIRTUAL: return 2;
    case VKL_DEV_CPU: return 1;
    default: return 0;
    }
}

/* Chooses a device: an index, "cpu"/"gpu", or a name substring; else the best. */
int vkl_device_match(const vkl_caps *caps, int n, const char *want, const char *origin, vkl_err *e)
{
    char *end;
    long idx = strtol(want, &end, 10);
    if (*want && !*end) {
        if (idx < 0 || idx >= n)
            return vkl_fail(e, "%s%s: only %d Vulkan device(s) exist (see 'vklora devices')", origin, want, n);
        return (int)idx;
    }
    for (int i = 0; *want && i < n; i++) {
        if (!strcasecmp(want, "cpu") && caps[i].type == VKL_DEV_CPU) return i;
        if (!strcasecmp(want, "gpu") && (caps[i].type == VKL_DEV_DISCRETE || caps[i].type == VKL_DEV_INTEGRATED)) return i;
        if (strcasestr(caps[i].name, want)) return i;
    }
    return vkl_fail(e, "%s%s matches none of the %d Vulkan device(s) (an index, cpu, gpu or part of a name; "
                       "see 'vklora devices')", origin, want, n);
}

static int choose_device(vkl_caps *caps, int n, int want_index, const char *want, const char *origin, vkl_err *e)
{
    if (want_index >= 0) {
        if (want_index >= n) return vkl_fail(e, "device %d asked for, but only %d Vulkan device(s) exist", want_index, n);
        return want_index;
    }
    if (want && *want) return vkl_device_match(caps, n, want, origin, e);
    int best = 0;
    for (int i = 1; i < n; i++)
        if (rank(caps[i].type) > rank(caps[best].type)) best = i;
    return best;
}

static int enumerate(vkl_ctx *c, const char *profile, VkPhysicalDevice **pds, vkl_caps **caps, int *n, vkl_err *e)
{
    uint32_t cnt = 0;
    VKL_CHECK_VK(vk.vkEnumeratePhysicalDevices(c->inst, &cnt, NULL), e, "vkEnumeratePhysicalDevices");
    if (cnt == 0)
        return vkl_fail(e, "no Vulkan device found (Debian: apt-get install mesa-vulkan-drivers for the CPU driver lavapipe)");
    *pds = calloc(cnt, sizeof **pds);
    *caps = calloc(cnt, sizeof **caps);
    if (!*pds || !*caps) return vkl_fail(e, "out of host memory");
    VKL_CHECK_VK(vk.vkEnumeratePhysicalDevices(c->inst, &cnt, *pds), e, "vkEnumeratePhysicalDevices");
    for (uint32_t i = 0; i < cnt; i++)
        if (vkl_caps_read((*pds)[i], profile, &(*caps)[i], NULL, e)) return -1;
    *n = (int)cnt;
    return 0;
}

int vkl_list_devices(const char *profile, vkl_caps **out, int *count, vkl_err *e)
{
    vkl_ctx tmp;
    memset(&tmp, 0, sizeof tmp);
    if (!profile) profile = getenv("VKLORA_PROFILE");
    if (create_instance(&tmp, 0, e)) return -1;
    VkPhysicalDevice *pds = NULL;
    int rc = enumerate(&tmp, profile, &pds, out, count, e);
    free(pds);
    vk.vkDestroyInstance(tmp.inst, NULL);
    return rc;
}

static int create_device(vkl_ctx *c, vkl_err *e)
{
    uint32_t nq = 0;
    vk.vkGetPhysicalDeviceQueueFamilyProperties(c->phys, &nq, NULL);
    VkQueueFamilyProperties qp[32];
    if (nq > 32) nq = 32;
    vk.vkGetPhysicalDeviceQueueFamilyProperties(c->phys, &nq, qp);
    int fam = -1;
    /* prefer a compute queue family without graphics (often less contended) */
    for (uint32_t i = 0; i < nq; i++)
        if ((qp[i].queueFlags & VK_QUEUE_COMPUTE_BIT) && !(qp[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) && fam < 0) fam = (int)i;
    for (uint32_t i = 0; i < nq && fam < 0; i++)
        if (qp[i].queueFlags & VK_QUEUE_COMPUTE_BIT) fam = (int)i;
    if (fam < 0) return vkl_fail(e, "device '%s' has no compute queue", c->caps.name);
    c->queue_family = (uint32_t)fam;
    if (!(qp[fam].timestampValidBits)) c->caps.timestamps = 0;

    float prio = 1.0f;
    VkDeviceQueueCreateInfo qci = {.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
                                   .queueFamilyIndex = c->queue_family, .queueCount = 1, .pQueuePriorities = &prio};
    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
                                                .storageBuffer16BitAccess = (VkBool32)c->caps.storage16};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
                                                     .pNext = &s16, .shaderFloat16 = (VkBool32)c->caps.fp16,
                                                     .shaderInt8 = (VkBool32)c->caps.int8};
    VkPhysicalDevice8BitStorageFeatures s8 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES,
                                              .pNext = &f16, .storageBuffer8BitAccess = (VkBool32)c->caps.storage8};
    int v12 = VK_API_VERSION_MINOR(c->caps.api_version) >= 2;
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = v12 ? (void *)&s8 : (void *)&s16};
    VkDeviceCreateInfo dci = {.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, .pNext = &f2,
                              .queueCreateInfoCount = 1, .pQueueCreateInfos = &qci};
    VkResult r = vk.vkCreateDevice(c->phys, &dci, NULL, &c->dev);
    if (r != VK_SUCCESS) return vkl_fail(e, "cannot create a device on '%s': %s", c->caps.name, vkl_vk_result_str(r));
    vk.vkGetDeviceQueue(c->dev, c->queue_family, 0, &c->queue);
    VkCommandPoolCreateInfo pci = {.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
                                   .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
                                   .queueFamilyIndex = c->queue_family};
    VKL_CHECK_VK(vk.vkCreateCommandPool(c->dev, &pci, NULL, &c->cmd_pool), e, "vkCreateCommandPool");
    VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
    VKL_CHECK_VK(vk.vkCreateFence(c->dev, &fci, NULL, &c->fence), e, "vkCreateFence");
    return 0;
}

int vkl_ctx_create(const vkl_ctx_opts *o, vkl_ctx **out, vkl_err *e)
{
    vkl_ctx_opts def;
    if (!o) {
        vkl_ctx_opts_default(&def);
        o = &def;
    }
    *out = NULL;
    vkl_ctx *c = calloc(1, sizeof *c);
    if (!c) return vkl_fail(e, "out of host memory");
    atomic_init(&c->validation_count, 0);
    int validation = o->validation;
    if (validation < 0) {
        const char *v = getenv("VKLORA_VALIDATION");
        validation = v && *v && strcmp(v, "0") != 0;
    }
    c->validation = validation;
    /* fault injection for the tests of what a lost device leaves behind */
    const char *fault = getenv("VKLORA_FAULT_DEVICE_LOST_AT");
    if (fault && *fault) c->fault_lost_at = strtol(fault, NULL, 10);
    const char *profile = o->profile ? o->profile : getenv("VKLORA_PROFILE");
    VkPhysicalDevice *pds = NULL;
    vkl_caps *caps = NULL;
    int n = 0, idx;
    if (create_instance(c, validation, e) || enumerate(c, profile, &pds, &caps, &n, e) ||
        (idx = choose_device(caps, n, o->device, default_spec ? default_spec : getenv("VKLORA_DEVICE"),
                             default_spec ? default_origin : "VKLORA_DEVICE=", e)) < 0) {
        free(pds);
        free(caps);
        vkl_ctx_destroy(c);
        return -1;
    }
    c->phys = pds[idx];
    c->caps = caps[idx];
    vkl_tuning_init(&c->tuning, &c->caps);
    free(pds);
    free(caps);
    int hide = 0;
    vkl_caps scratch = c->caps; /* re-read the "staging" flag of the profile */
    if (vkl_profile_apply(profile, &scratch, &hide, e)) {
        vkl_ctx_destroy(c);
        return -1;
    }
    c->hide_host_visible = hide;
    vk.vkGetPhysicalDeviceMemoryProperties(c->phys, &c->memprops);
    c->block_size = 64ull << 20;
    if (c->block_size > c->caps.max_alloc) c->block_size = c->caps.max_alloc;
    if (create_device(c, e)) {
        vkl_err_prefix(e, "device %d: ", idx);
        vkl_ctx_destroy(c);
        return -1;
    }
    if (!o->no_pipeline_cache) {
        const char *dir = o->cache_dir;
        char buf[900];
        if (!dir) {
            const char *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
            if (x && *x) snprintf(buf, sizeof buf, "%.800s/vklora", x);
            else if (h && *h) snprintf(buf, sizeof buf, "%.800s/.cache/vklora", h);
            else buf[0] = 0;
            dir = buf[0] ? buf : NULL;
        }
        if (dir) {
            char hex[33];
            for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", c->caps.uuid[i]);
            snprintf(c->pcache_path, sizeof c->pcache_path, "%.900s/pipelines-%s.bin", dir, hex);
        }
    }
    if (vkl_pcache_load(c, e)) {
        vkl_ctx_destroy(c);
        return -1;
    }
    *out = c;
    return 0;
}

void vkl_ctx_destroy(vkl_ctx *c)
{
    if (!c) return;
    if (c->dev) {
        vk.vkDeviceWaitIdle(c->dev); /* VK_ERROR_DEVICE_LOST on a lost device: everything is idle then */
        if (c->staging) vkl_buffer_destroy(c->staging);
        vkl_pcache_save(c);
        vkl_pipelines_destroy(c);
        if (c->pcache) vk.vkDestroyPipelineCache(c->dev, c->pcache, NULL);
        vkl_mem_destroy_all(c);
        if (c->fence) vk.vkDestroyFence(c->dev, c->fence, NULL);
        if (c->cmd_pool) vk.vkDestroyCommandPool(c->dev, c->cmd_pool, NULL);
        vk.vkDestroyDevice(c->dev, NULL);
    }
    if (c->messenger) vk.vkDestroyDebugUtilsMessengerEXT(c->inst, c->messenger, NULL);
    if (c->inst) vk.vkDestroyInstance(c->inst, NULL);
    free(c);
}

int vkl_ctx_lost(const vkl_ctx *c) { return c->lost; }

const vkl_caps *vkl_ctx_caps(const vkl_ctx *c) { return &c->caps; }
uint64_t vkl_ctx_validation_count(const vkl_ctx *c) { return atomic_load(&((vkl_ctx *)c)->validation_count); }
int vkl_ctx_validation_enabled(const vkl_ctx *c) { return c->validation; }
uint64_t vkl_ctx_max_binding(const vkl_ctx *c) { return c->caps.max_storage_range; }
