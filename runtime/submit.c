/* One-shot command buffers for copies, and the barrier every recording uses
 * at its edges. Every submission is waited for: the runtime never has two
 * submissions in flight, so host access after a wait is always safe. */
#include "vkl_internal.h"

void vkl_cmd_full_barrier(VkCommandBuffer cb)
{
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT};
    vk.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT, 0, 1, &mb,
                            0, NULL, 0, NULL);
}

int vkl_oneshot_begin(vkl_ctx *c, VkCommandBuffer *cb, vkl_err *e)
{
    VkCommandBufferAllocateInfo ai = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
                                      .commandPool = c->cmd_pool, .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
                                      .commandBufferCount = 1};
    VKL_CHECK_VK(vk.vkAllocateCommandBuffers(c->dev, &ai, cb), e, "vkAllocateCommandBuffers");
    VkCommandBufferBeginInfo bi = {.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
                                   .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT};
    VKL_CHECK_VK(vk.vkBeginCommandBuffer(*cb, &bi), e, "vkBeginCommandBuffer");
    vkl_cmd_full_barrier(*cb);
    return 0;
}

static int device_lost(vkl_ctx *c, vkl_err *e)
{
    c->lost = 1;
    return vkl_fail(e, "the device was lost (VK_ERROR_DEVICE_LOST: a driver reset, a GPU hang or the device "
                       "removed); nothing more can run on it: start again (training: --resume from the last "
                       "saved state)");
}

int vkl_submit_wait(vkl_ctx *c, VkCommandBuffer cb, vkl_err *e)
{
    if (c->lost) return device_lost(c, e);
    if (c->fault_lost_at > 0 && ++c->submits == c->fault_lost_at) return device_lost(c, e);
    VkSubmitInfo si = {.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO, .commandBufferCount = 1, .pCommandBuffers = &cb};
    VKL_CHECK_VK(vk.vkResetFences(c->dev, 1, &c->fence), e, "vkResetFences");
    VkResult r = vk.vkQueueSubmit(c->queue, 1, &si, c->fence);
    if (r == VK_ERROR_DEVICE_LOST) return device_lost(c, e);
    if (r != VK_SUCCESS) return vkl_fail(e, "vkQueueSubmit failed: %s", vkl_vk_result_str(r));
    /* wait in slices so a hung device is reported rather than waited on forever */
    int waited_s = 0;
    while ((r = vk.vkWaitForFences(c->dev, 1, &c->fence, VK_TRUE, 1000000000ull)) == VK_TIMEOUT) {
        if (++waited_s >= 3600) return vkl_fail(e, "the device did not finish its work within an hour");
    }
    if (r == VK_ERROR_DEVICE_LOST) return device_lost(c, e);
    if (r != VK_SUCCESS) return vkl_fail(e, "waiting for the device failed: %s", vkl_vk_result_str(r));
    return 0;
}

int vkl_oneshot_submit(vkl_ctx *c, VkCommandBuffer cb, vkl_err *e)
{
    /* make transfer writes visible to later shader and host reads */
    VkMemoryBarrier mb = {.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
                          .srcAccessMask = VK_ACCESS_MEMORY_WRITE_BIT,
                          .dstAccessMask = VK_ACCESS_MEMORY_READ_BIT | VK_ACCESS_MEMORY_WRITE_BIT | VK_ACCESS_HOST_READ_BIT};
    vk.vkCmdPipelineBarrier(cb, VK_PIPELINE_STAGE_ALL_COMMANDS_BIT,
                            VK_PIPELINE_STAGE_ALL_COMMANDS_BIT | VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
    int rc = -1;
    VkResult r = vk.vkEndCommandBuffer(cb);
    if (r != VK_SUCCESS) vkl_fail(e, "vkEndCommandBuffer failed: %s", vkl_vk_result_str(r));
    else rc = vkl_submit_wait(c, cb, e);
    vk.vkFreeCommandBuffers(c->dev, c->cmd_pool, 1, &cb);
    return rc;
}
