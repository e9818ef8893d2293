/* Context creation, device profiles, the validation hook, memory statistics,
 * host copies on both the mapped and the staging path, the pipeline cache. */
#include "vkl_test.h"
#include "vkl_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void validation_layer_catches_misuse(void **state)
{
    (void)state;
    if (!getenv("VKLORA_VALIDATION") || !strcmp(getenv("VKLORA_VALIDATION"), "0")) skip();
    vkl_ctx *c = vkl_test_ctx(NULL);
    assert_true(vkl_ctx_validation_enabled(c));
    /* a zero-sized buffer is invalid usage: the layer must report it */
    VkBufferCreateInfo bci = {.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, .size = 0,
                              .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT};
    VkBuffer b = VK_NULL_HANDLE;
    fprintf(stderr, "(the next validation message is expected)\n");
    if (vk.vkCreateBuffer(c->dev, &bci, NULL, &b) == VK_SUCCESS && b) vk.vkDestroyBuffer(c->dev, b, NULL);
    assert_true(vkl_ctx_validation_count(c) > 0);
    vkl_ctx_destroy(c);
}

static void profiles_hide_features(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx("portable,binding=64K,alloc=32M");
    const vkl_caps *k = vkl_ctx_caps(c);
    assert_false(k->fp16);
    assert_false(k->storage16);
    assert_false(k->subgroup_arith);
    assert_int_equal(k->max_storage_range, 65536);
    assert_true(k->max_alloc <= (32u << 20));
    assert_string_equal(k->profile, "portable,binding=64K,alloc=32M");
    vkl_test_ctx_done(c);

    vkl_ctx_opts o;
    vkl_ctx_opts_default(&o);
    o.profile = "turbo";
    vkl_err e = {{0}};
    assert_int_equal(vkl_ctx_create(&o, &c, &e), -1);
    assert_non_null(strstr(e.msg, "unknown device profile setting 'turbo'"));
}

static void bad_device_choice_is_clear(void **state)
{
    (void)state;
    vkl_ctx_opts o;
    vkl_ctx_opts_default(&o);
    o.device = 99;
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_ctx_create(&o, &c, &e), -1);
    assert_non_null(strstr(e.msg, "device 99 asked for"));
    assert_null(c);
}

static void host_copies_and_stats(void **state)
{
    (void)state;
    const char *profiles[2] = {"default", "staging"};
    for (int p = 0; p < 2; p++) {
        vkl_ctx *c = vkl_test_ctx(profiles[p]);
        vkl_mem_stats s0, s1, s2;
        vkl_mem_get_stats(c, &s0);
        /* larger than the 16 MiB staging buffer, so the chunked path runs */
        size_t n = (20u << 20) / 4 + 3;
        float *x = malloc(n * 4), *y = malloc(n * 4);
        for (size_t i = 0; i < n; i++) x[i] = (float)i * 0.5f;
        int64_t shape[1] = {(int64_t)n};
        vkl_err e = {{0}};
        vkl_tensor *t = vkl_tensor_new(c, VKL_F32, 1, shape, &e);
        assert_non_null(t);
        vkl_mem_get_stats(c, &s1);
        assert_true(s1.total_current >= s0.total_current + n * 4);
        assert_int_equal(vkl_tensor_upload(c, t, x, VKL_F32, &e), 0);
        memset(y, 0, n * 4);
        assert_int_equal(vkl_tensor_download(c, t, y, VKL_F32, &e), 0);
        assert_memory_equal(x, y, n * 4);
        vkl_tensor_free(t);
        vkl_mem_get_stats(c, &s2);
        assert_true(s2.total_peak >= s1.total_current);
        free(x);
        free(y);
        vkl_test_ctx_done(c);
    }
}

static void many_small_buffers_reuse_blocks(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_buffer *b[300];
    vkl_err e = {{0}};
    for (int i = 0; i < 300; i++) assert_int_equal(vkl_buffer_create(c, 1000 + i * 37, VKL_MEM_DEVICE, &b[i], &e), 0);
    for (int i = 0; i < 300; i += 2) vkl_buffer_destroy(b[i]);
    for (int i = 0; i < 300; i += 2) assert_int_equal(vkl_buffer_create(c, 900, VKL_MEM_DEVICE, &b[i], &e), 0);
    /* distinct live buffers never overlap */
    for (int i = 0; i < 300; i++)
        for (int j = i + 1; j < 300; j++)
            if (b[i]->block == b[j]->block)
                assert_true(b[i]->offset + b[i]->size <= b[j]->offset || b[j]->offset + b[j]->size <= b[i]->offset);
    vkl_mem_stats s;
    vkl_mem_get_stats(c, &s);
    for (int i = 0; i < 300; i++) vkl_buffer_destroy(b[i]);
    vkl_mem_stats s2;
    vkl_mem_get_stats(c, &s2);
    assert_int_equal(s2.total_current, 0);
    vkl_test_ctx_done(c);
}

static void corrupt_pipeline_cache_is_ignored(void **state)
{
    (void)state;
    const char *dir = vkl_test_tmpdir();
    vkl_ctx_opts o;
    vkl_ctx_opts_default(&o);
    o.cache_dir = dir;
    vkl_ctx *c = NULL;
    vkl_err e = {{0}};
    assert_int_equal(vkl_ctx_create(&o, &c, &e), 0);
    char path[1024];
    snprintf(path, sizeof path, "%s", c->pcache_path);
    vkl_pipeline *p;
    assert_int_equal(vkl_pipeline_get(c, VKL_KERNEL_BINARY, 3, (uint32_t[]){0, 0, 0}, 3, &p, &e), 0);
    vkl_ctx_destroy(c);
    assert_int_equal(access(path, F_OK), 0); /* written at exit */
    /* corrupt it: a second context must still start and work */
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 40, SEEK_SET);
    fputs("garbage garbage garbage", f);
    fclose(f);
    assert_int_equal(vkl_ctx_create(&o, &c, &e), 0);
    assert_int_equal(vkl_pipeline_get(c, VKL_KERNEL_BINARY, 3, (uint32_t[]){0, 0, 0}, 3, &p, &e), 0);
    vkl_ctx_destroy(c);
    /* truncated to a few bytes */
    f = fopen(path, "wb");
    fputs("VKL", f);
    fclose(f);
    assert_int_equal(vkl_ctx_create(&o, &c, &e), 0);
    vkl_ctx_destroy(c);
    vkl_test_rmtree(dir);
}

/* Kernels are named by their shader_ids.h constants, so a misspelt one
 * does not compile; a value out of the table's range is refused. */
static void unknown_shader_is_clear(void **state)
{
    (void)state;
    vkl_ctx *c = vkl_test_ctx(NULL);
    vkl_pipeline *p;
    vkl_err e = {{0}};
    assert_int_equal(vkl_pipeline_get(c, VKL_KERNEL_COUNT, 1, NULL, 0, &p, &e), -1);
    assert_non_null(strstr(e.msg, "is not built into this program"));
    vkl_test_ctx_done(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(validation_layer_catches_misuse),
        cmocka_unit_test(profiles_hide_features),
        cmocka_unit_test(bad_device_choice_is_clear),
        cmocka_unit_test(host_copies_and_stats),
        cmocka_unit_test(many_small_buffers_reuse_blocks),
        cmocka_unit_test(corrupt_pipeline_cache_is_ignored),
        cmocka_unit_test(unknown_shader_is_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
