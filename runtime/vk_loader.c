#include "vk_loader.h"

#include <dlfcn.h>
#include <pthread.h>

vkl_vk vk;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void *lib;
static char load_error[512];

static void load_lib(void)
{
    const char *names[] = {"libvulkan.so.1", "libvulkan.so"};
    for (int i = 0; i < 2 && !lib; i++) lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error,
                 "no Vulkan loader found (libvulkan.so.1: %s); on Debian install it with "
                 "'apt-get install libvulkan1 mesa-vulkan-drivers'",
                 dlerror());
        return;
    }
    vk.vkGetInstanceProcAddr = (PFN_vkGetInstanceProcAddr)dlsym(lib, "vkGetInstanceProcAddr");
    if (!vk.vkGetInstanceProcAddr) {
        snprintf(load_error, sizeof load_error, "the Vulkan loader has no vkGetInstanceProcAddr");
        return;
    }
#define VKL_LOAD(f) vk.f = (PFN_##f)vk.vkGetInstanceProcAddr(NULL, #f);
    VKL_VK_GLOBAL_FUNCS(VKL_LOAD)
#undef VKL_LOAD
}

int vkl_vk_load_global(vkl_err *e)
{
    pthread_once(&once, load_lib);
    if (load_error[0]) return vkl_fail(e, "%s", load_error);
    return 0;
}

/* The instance-level entry points come from the first instance and serve
 * every later one (the loader's are dispatching trampolines, valid for any
 * instance while the library is loaded). Loading them once, under a lock,
 * lets threads create their own contexts concurrently without writing the
 * table another thread reads. */
static pthread_mutex_t instance_lock = PTHREAD_MUTEX_INITIALIZER;
static int instance_loaded;

void vkl_vk_load_instance(VkInstance inst)
{
    pthread_mutex_lock(&instance_lock);
    /* an entry still NULL (an extension the first instance did not enable,
     * such as debug utils without validation) is asked for again */
#define VKL_LOAD(f) if (!instance_loaded || !vk.f) vk.f = (PFN_##f)vk.vkGetInstanceProcAddr(inst, #f);
    VKL_VK_INSTANCE_FUNCS(VKL_LOAD)
#undef VKL_LOAD
    instance_loaded = 1;
    pthread_mutex_unlock(&instance_lock);
}

const char *vkl_vk_result_str(VkResult r)
{
    switch (r) {
    case VK_SUCCESS: return "VK_SUCCESS";
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "out of host memory (VK_ERROR_OUT_OF_HOST_MEMORY)";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "out of device memory (VK_ERROR_OUT_OF_DEVICE_MEMORY)";
    case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "device lost (VK_ERROR_DEVICE_LOST)";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "incompatible driver (VK_ERROR_INCOMPATIBLE_DRIVER)";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    case VK_ERROR_INVALID_SHADER_NV: return "invalid shader (VK_ERROR_INVALID_SHADER_NV)";
    default: return "unknown VkResult";
    }
}
