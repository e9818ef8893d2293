/* Reading a device's limits and features once, and device profiles that hide
 * optional features so every fallback path can run on lavapipe in CI. */
#include "vkl_internal.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static int has_ext(VkExtensionProperties *ex, uint32_t n, const char *name)
{
    for (uint32_t i = 0; i < n; i++)
        if (!strcmp(ex[i].extensionName, name)) return 1;
    return 0;
}

int vkl_caps_read(VkPhysicalDevice pd, const char *profile, vkl_caps *c, uint64_t *unused,
                  vkl_err *e)
{
    (void)unused;
    memset(c, 0, sizeof *c);
    VkPhysicalDeviceProperties p0;
    vk.vkGetPhysicalDeviceProperties(pd, &p0);
    c->api_version = p0.apiVersion;
    if (VK_API_VERSION_MINOR(p0.apiVersion) < 1 && VK_API_VERSION_MAJOR(p0.apiVersion) == 1)
        return vkl_fail(e, "device '%s' supports only Vulkan 1.0; vklora needs Vulkan 1.1",
                        p0.deviceName);

    VkPhysicalDeviceSubgroupProperties sg = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
    VkPhysicalDeviceMaintenance3Properties m3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, .pNext = &sg};
    VkPhysicalDeviceIDProperties idp = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES, .pNext = &m3};
    VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES, .pNext = &idp};
    int v12 = VK_API_VERSION_MINOR(p0.apiVersion) >= 2 || VK_API_VERSION_MAJOR(p0.apiVersion) > 1;
    VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
                                      .pNext = v12 ? (void *)&drv : (void *)&idp};
    vk.vkGetPhysicalDeviceProperties2(pd, &p2);
    const VkPhysicalDeviceLimits *L = &p0.limits;

    snprintf(c->name, sizeof c->name, "%s", p0.deviceName);
    if (v12) snprintf(c->driver, sizeof c->driver, "%.120s %.120s", drv.driverName, drv.driverInfo);
    c->vendor_id = p0.vendorID;
    c->device_id = p0.deviceID;
    c->driver_version = p0.driverVersion;
    memcpy(c->uuid, idp.deviceUUID, 16);
    switch (p0.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: c->type = VKL_DEV_DISCRETE; break;
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: c->type = VKL_DEV_INTEGRATED; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: c->type = VKL_DEV_VIRTUAL; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: c->type = VKL_DEV_CPU; break;
    default: c->type = VKL_DEV_OTHER;
    }
    c->subgroup_size = sg.subgroupSize;
    int sg_compute = (sg.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0;
    c->subgroup_arith = sg_compute && (sg.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    c->subgroup_shuffle = sg_compute && (sg.supportedOperations & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    c->max_shared_memory = L->maxComputeSharedMemorySize;
    c->max_wg_invocations = L->maxComputeWorkGroupInvocations;
    for (int i = 0; i < 3; i++) {
        c->max_wg_size[i] = L->maxComputeWorkGroupSize[i];
        c->max_wg_count[i] = L->maxComputeWorkGroupCount[i];
    }
    c->max_push_constants = L->maxPushConstantsSize;
    c->max_storage_range = L->maxStorageBufferRange;
    c->max_alloc = m3.maxMemoryAllocationSize;
    c->storage_align = L->minStorageBufferOffsetAlignment;
    c->timestamps = L->timestampComputeAndGraphics && L->timestampPeriod > 0;
    c->timestamp_period_ns = L->timestampPeriod;

    VkPhysicalDevice16BitStorageFeatures s16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES, .pNext = &s16};
    VkPhysicalDevice8BitStorageFeatures s8 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES, .pNext = &f16};
    VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
                                    .pNext = v12 ? (void *)&s8 : (void *)&s16};
    vk.vkGetPhysicalDeviceFeatures2(pd, &f2);
    c->storage16 = s16.storageBuffer16BitAccess;
    c->fp16 = v12 && f16.shaderFloat16;
    c->int8 = v12 && f16.shaderInt8;
    c->storage8 = v12 && s8.storageBuffer8BitAccess;

    uint32_t next = 0;
    vk.vkEnumerateDeviceExtensionProperties(pd, NULL, &next, NULL);
    VkExtensionProperties *ex = calloc(next ? next : 1, sizeof *ex);
    if (!ex) return vkl_fail(e, "out of host memory");
    vk.vkEnumerateDeviceExtensionProperties(pd, NULL, &next, ex);
    c->coopmat = has_ext(ex, next, "VK_KHR_cooperative_matrix");
    free(ex);

    VkPhysicalDeviceMemoryProperties mp;
    vk.vkGetPhysicalDeviceMemoryProperties(pd, &mp);
    c->nheaps = (int)(mp.memoryHeapCount > 16 ? 16 : mp.memoryHeapCount);
    for (int h = 0; h < c->nheaps; h++) {
        c->heaps[h].size = mp.memoryHeaps[h].size;
        c->heaps[h].device_local = (mp.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0;
    }
    int uma = 0;
    for (uint32_t t = 0; t < mp.memoryTypeCount; t++) {
        VkMemoryPropertyFlags f = mp.memoryTypes[t].propertyFlags;
        uint32_t h = mp.memoryTypes[t].heapIndex;
        if (h < 16 && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT)) c->heaps[h].host_visible = 1;
        if ((f & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) && (f & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) &&
            (f & VK_MEMORY_PROPERTY_HOST_COHERENT_BIT) && c->type != VKL_DEV_DISCRETE)
            uma = 1;
    }
    c->uma = uma;
    int hide = 0;
    return vkl_profile_apply(profile, c, &hide, e);
}

/* Profiles: comma-separated tokens.
 *   default          nothing hidden
 *   portable         no fp16/int8 arithmetic, no 16/8-bit storage, no subgroup ops, no coopmat
 *   nosubgroup       no subgroup ops
 *   staging          device memory treated as not host-visible (uploads through staging copies)
 *   binding=BYTES    maxStorageBufferRange lowered (K/M suffixes allowed)
 *   alloc=BYTES      maxMemoryAllocationSize lowered
 *   memory=BYTES     the device memory a context may hold in all (a small card,
 *                    or out-of-memory paths tested on a large one) */
static int parse_bytes(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s) return -1;
    if (*end == 'K' || *end == 'k') v <<= 10, end++;
    else if (*end == 'M' || *end == 'm') v <<= 20, end++;
    else if (*end == 'G' || *end == 'g') v <<= 30, end++;
    if (*end) return -1;
    *out = v;
    return 0;
}

int vkl_profile_apply(const char *profile, vkl_caps *c, int *hide_host_visible, vkl_err *e)
{
    if (!profile || !*profile) profile = "default";
    snprintf(c->profile, sizeof c->profile, "%s", profile);
    char buf[256];
    snprintf(buf, sizeof buf, "%s", profile);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        uint64_t v;
        if (!strcmp(tok, "default")) {
        } else if (!strcmp(tok, "portable")) {
            c->fp16 = c->int8 = c->storage16 = c->storage8 = 0;
            c->subgroup_arith = c->subgroup_shuffle = 0;
            c->coopmat = 0;
        } else if (!strcmp(tok, "nosubgroup")) {
            c->subgroup_arith = c->subgroup_shuffle = 0;
        } else if (!strcmp(tok, "staging")) {
            *hide_host_visible = 1;
            c->uma = 0;
        } else if (!strncmp(tok, "binding=", 8) && parse_bytes(tok + 8, &v) == 0) {
            if (v < 256) return vkl_fail(e, "device profile '%s': binding limit below 256 bytes", profile);
            if (v < c->max_storage_range) c->max_storage_range = v;
        } else if (!strncmp(tok, "alloc=", 6) && parse_bytes(tok + 6, &v) == 0) {
            if (v < c->max_alloc) c->max_alloc = v;
        } else if (!strncmp(tok, "memory=", 7) && parse_bytes(tok + 7, &v) == 0) {
            if (v < 65536) return vkl_fail(e, "device profile '%s': memory budget below 64 KiB", profile);
            c->memory_budget = v;
        } else {
            return vkl_fail(e, "unknown device profile setting '%s' (known: default, portable, "
                               "nosubgroup, staging, binding=BYTES, alloc=BYTES, memory=BYTES)", tok);
        }
    }
    return 0;
}

static const char *type_name(vkl_dev_type t)
{
    switch (t) {
    case VKL_DEV_DISCRETE: return "discrete GPU";
    case VKL_DEV_INTEGRATED: return "integrated GPU";
    case VKL_DEV_VIRTUAL: return "virtual GPU";
    case VKL_DEV_CPU: return "CPU";
    default: return "other";
    }
}

void vkl_caps_print(const vkl_caps *c, int index, FILE *f)
{
    fprintf(f, "device %d: %s (%s)\n", index, c->name, type_name(c->type));
    fprintf(f, "  driver:              %s\n", c->driver[0] ? c->driver : "(unknown)");
    fprintf(f, "  Vulkan:              %u.%u.%u\n", VK_API_VERSION_MAJOR(c->api_version),
            VK_API_VERSION_MINOR(c->api_version), VK_API_VERSION_PATCH(c->api_version));
    fprintf(f, "  vendor/device id:    0x%04x / 0x%04x\n", c->vendor_id, c->device_id);
    fprintf(f, "  profile:             %s\n", c->profile);
    fprintf(f, "  subgroup size:       %u (arithmetic %s, shuffle %s)\n", c->subgroup_size,
            c->subgroup_arith ? "yes" : "no", c->subgroup_shuffle ? "yes" : "no");
    fprintf(f, "  shared memory:       %u bytes\n", c->max_shared_memory);
    fprintf(f, "  workgroup:           %u invocations, size %u x %u x %u, count %u x %u x %u\n",
            c->max_wg_invocations, c->max_wg_size[0], c->max_wg_size[1], c->max_wg_size[2],
            c->max_wg_count[0], c->max_wg_count[1], c->max_wg_count[2]);
    fprintf(f, "  16-bit storage:      %s\n", c->storage16 ? "yes" : "no");
    fprintf(f, "  8-bit storage:       %s\n", c->storage8 ? "yes" : "no");
    fprintf(f, "  fp16 arithmetic:     %s\n", c->fp16 ? "yes" : "no");
    fprintf(f, "  int8 arithmetic:     %s\n", c->int8 ? "yes" : "no");
    fprintf(f, "  cooperative matrix:  %s\n", c->coopmat ? "yes" : "no");
    fprintf(f, "  max storage binding: %llu bytes (%.0f MiB)\n", (unsigned long long)c->max_storage_range,
            c->max_storage_range / 1048576.0);
    fprintf(f, "  max allocation:      %llu bytes (%.0f MiB)\n", (unsigned long long)c->max_alloc,
            c->max_alloc / 1048576.0);
    fprintf(f, "  storage alignment:   %llu bytes\n", (unsigned long long)c->storage_align);
    fprintf(f, "  push constants:      %u bytes\n", c->max_push_constants);
    fprintf(f, "  timestamps:          %s (period %.3g ns)\n", c->timestamps ? "yes" : "no",
            c->timestamp_period_ns);
    fprintf(f, "  unified memory:      %s\n", c->uma ? "yes" : "no");
    for (int h = 0; h < c->nheaps; h++)
        fprintf(f, "  heap %d:              %.0f MiB%s%s\n", h, c->heaps[h].size / 1048576.0,
                c->heaps[h].device_local ? ", device-local" : "",
                c->heaps[h].host_visible ? ", host-visible" : "");
}

char *vkl_caps_json(const vkl_caps *c, int index)
{
    cJSON *j = cJSON_CreateObject();
    char ver[32];
    snprintf(ver, sizeof ver, "%u.%u.%u", VK_API_VERSION_MAJOR(c->api_version), VK_API_VERSION_MINOR(c->api_version),
             VK_API_VERSION_PATCH(c->api_version));
    cJSON_AddNumberToObject(j, "index", index);
    cJSON_AddStringToObject(j, "name", c->name);
    cJSON_AddStringToObject(j, "type", type_name(c->type));
    cJSON_AddStringToObject(j, "driver", c->driver);
    cJSON_AddStringToObject(j, "api_version", ver);
    cJSON_AddNumberToObject(j, "vendor_id", c->vendor_id);
    cJSON_AddNumberToObject(j, "device_id", c->device_id);
    cJSON_AddStringToObject(j, "profile", c->profile);
    cJSON_AddNumberToObject(j, "subgroup_size", c->subgroup_size);
    cJSON_AddBoolToObject(j, "subgroup_arithmetic", c->subgroup_arith);
    cJSON_AddBoolToObject(j, "subgroup_shuffle", c->subgroup_shuffle);
    cJSON_AddNumberToObject(j, "shared_memory", c->max_shared_memory);
    cJSON_AddNumberToObject(j, "max_workgroup_invocations", c->max_wg_invocations);
    double ws[3] = {c->max_wg_size[0], c->max_wg_size[1], c->max_wg_size[2]};
    double wc[3] = {c->max_wg_count[0], c->max_wg_count[1], c->max_wg_count[2]};
    cJSON_AddItemToObject(j, "max_workgroup_size", cJSON_CreateDoubleArray(ws, 3));
    cJSON_AddItemToObject(j, "max_workgroup_count", cJSON_CreateDoubleArray(wc, 3));
    cJSON_AddBoolToObject(j, "storage16", c->storage16);
    cJSON_AddBoolToObject(j, "storage8", c->storage8);
    cJSON_AddBoolToObject(j, "fp16", c->fp16);
    cJSON_AddBoolToObject(j, "int8", c->int8);
    cJSON_AddBoolToObject(j, "cooperative_matrix", c->coopmat);
    cJSON_AddNumberToObject(j, "max_storage_buffer_range", (double)c->max_storage_range);
    cJSON_AddNumberToObject(j, "max_memory_allocation", (double)c->max_alloc);
    cJSON_AddNumberToObject(j, "storage_alignment", (double)c->storage_align);
    cJSON_AddNumberToObject(j, "push_constants", c->max_push_constants);
    cJSON_AddBoolToObject(j, "timestamps", c->timestamps);
    cJSON_AddBoolToObject(j, "unified_memory", c->uma);
    cJSON *heaps = cJSON_AddArrayToObject(j, "heaps");
    for (int h = 0; h < c->nheaps; h++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "size", (double)c->heaps[h].size);
        cJSON_AddBoolToObject(o, "device_local", c->heaps[h].device_local);
        cJSON_AddBoolToObject(o, "host_visible", c->heaps[h].host_visible);
        cJSON_AddItemToArray(heaps, o);
    }
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}
