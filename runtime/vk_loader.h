/* Vulkan entry points, loaded at run time from libvulkan.so.1 so that a
 * machine without a Vulkan loader gets a clear message instead of a failure
 * to start. One process-wide table, filled once. */
#ifndef VKL_VK_LOADER_H
#define VKL_VK_LOADER_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include "vkl_base.h"

#define VKL_VK_GLOBAL_FUNCS(X)                                                                     \
    X(vkCreateInstance) X(vkEnumerateInstanceLayerProperties)                                      \
    X(vkEnumerateInstanceExtensionProperties) X(vkEnumerateInstanceVersion)

#define VKL_VK_INSTANCE_FUNCS(X)                                                                   \
    X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)            \
    X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2)                              \
    X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceQueueFamilyProperties)             \
    X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice) X(vkGetDeviceProcAddr)               \
    X(vkCreateDebugUtilsMessengerEXT) X(vkDestroyDebugUtilsMessengerEXT)                           \
    X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkAllocateMemory) X(vkFreeMemory) X(vkMapMemory)      \
    X(vkUnmapMemory) X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements)         \
    X(vkBindBufferMemory) X(vkCreateShaderModule) X(vkDestroyShaderModule)                         \
    X(vkCreateDescriptorSetLayout) X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout)       \
    X(vkDestroyPipelineLayout) X(vkCreateComputePipelines) X(vkDestroyPipeline)                    \
    X(vkCreatePipelineCache) X(vkDestroyPipelineCache) X(vkGetPipelineCacheData)                   \
    X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool) X(vkAllocateDescriptorSets)               \
    X(vkUpdateDescriptorSets) X(vkCreateCommandPool) X(vkDestroyCommandPool)                       \
    X(vkAllocateCommandBuffers) X(vkFreeCommandBuffers) X(vkBeginCommandBuffer)                    \
    X(vkEndCommandBuffer) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants)    \
    X(vkCmdDispatch) X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdResetQueryPool)             \
    X(vkCmdWriteTimestamp) X(vkCreateQueryPool) X(vkDestroyQueryPool) X(vkGetQueryPoolResults)     \
    X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) X(vkResetFences) X(vkQueueSubmit)        \
    X(vkDeviceWaitIdle) X(vkFlushMappedMemoryRanges) X(vkInvalidateMappedMemoryRanges)            \
    X(vkCmdFillBuffer)

typedef struct vkl_vk {
    PFN_vkGetInstanceProcAddr vkGetInstanceProcAddr;
#define VKL_DECL(f) PFN_##f f;
    VKL_VK_GLOBAL_FUNCS(VKL_DECL)
    VKL_VK_INSTANCE_FUNCS(VKL_DECL)
#undef VKL_DECL
} vkl_vk;

extern vkl_vk vk;

/* Opens the loader (once). */
int vkl_vk_load_global(vkl_err *e);
/* Fills instance-level and device-level pointers for this instance. Functions
 * of extensions that are absent stay NULL. */
void vkl_vk_load_instance(VkInstance inst);
const char *vkl_vk_result_str(VkResult r);

#endif
