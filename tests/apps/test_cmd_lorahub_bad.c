/* `vklora lorahub` on bad input: one adapter, a missing file, an adapter of
 * another model (a language model's), another rank, another alpha, a module
 * fewer (written here from a trained adapter), a missing image folder: each
 * fails with a message naming the cause and writes neither the output nor its
 * log; an existing output is kept without --force. */
#include "sd_lorahub_fixture.h"

#include <sys/stat.h>

/* A copy of src with the first module changed: mode 'r' halves its rank,
 * 'a' doubles its alpha, 'd' drops it. */
static void rewrite(const char *src, const char *dst, char mode)
{
    vkl_st_file *f = NULL;
    vkl_err e = {{0}};
    if (vkl_st_open(path_in(src), &f, &e)) fail_msg("%s", e.msg);
    char first[512] = "";
    for (int i = 0; i < vkl_st_count(f) && !first[0]; i++) {
        const char *n = vkl_st_at(f, i)->name, *d = strstr(n, ".lora_down.weight");
        if (d) snprintf(first, sizeof first, "%.*s.", (int)(d - n), n);
    }
    assert_true(first[0]);
    vkl_st_writer *w = vkl_st_writer_new();
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        float *x = read_all(f, t);
        int64_t shape[VKL_ST_MAX_DIMS];
        memcpy(shape, t->shape, sizeof shape);
        int mine = !strncmp(t->name, first, strlen(first));
        if (mine && mode == 'd') {
            free(x);
            continue;
        }
        if (mine && mode == 'a' && ends_with(t->name, ".alpha")) x[0] *= 2;
        if (mine && mode == 'r' && ends_with(t->name, ".lora_down.weight")) shape[0] /= 2; /* the first rows */
        if (mine && mode == 'r' && ends_with(t->name, ".lora_up.weight")) {
            /* the first columns of [out, r, ...] */
            int64_t out = t->shape[0], r = t->shape[1], inner = (int64_t)t->nelem / (out * r);
            for (int64_t o = 0; o < out; o++)
                memmove(x + o * (r / 2) * inner, x + o * r * inner, sizeof(float) * (size_t)((r / 2) * inner));
            shape[1] = r / 2;
        }
        if (mine && mode == 'r' && ends_with(t->name, ".alpha")) x[0] /= 2; /* the same scale */
        if (vkl_st_writer_add(w, t->name, VKL_F32, t->ndim, shape, x, &e)) fail_msg("%s", e.msg);
        free(x);
    }
    if (vkl_st_writer_finish(w, path_in(dst), &e)) fail_msg("%s", e.msg);
    vkl_st_writer_free(w);
    vkl_st_close(f);
}

static void expect_fail(const char *adapters, const char *images, int status, const char *w1, const char *w2)
{
    char args[2048], *log = NULL;
    snprintf(args, sizeof args, "lorahub --model '%s' --adapters %s --images %s -o bad.safetensors --steps 2 " COMMON,
             vkl_test_shared_path(SD), adapters, images);
    int st = vkl_test_cli(args, NULL, &log);
    printf("  --adapters %s: status %d: %s", adapters, st, log ? log : "\n");
    assert_int_equal(st, status);
    assert_non_null(strstr(log, w1));
    if (w2) assert_non_null(strstr(log, w2));
    free(log);
    struct stat s;
    assert_int_not_equal(stat(path_in("bad.safetensors"), &s), 0);
    assert_int_not_equal(stat(path_in("bad_lorahub.csv"), &s), 0);
}

static void test_bad_input(void **state)
{
    (void)state;
    VKL_REQUIRE_SHARED(IMAGES);
    VKL_REQUIRE_SHARED(SD);
    train("ta", "a.safetensors", 1); /* only its shapes matter */
    rewrite("a.safetensors", "r2.safetensors", 'r');
    rewrite("a.safetensors", "alpha.safetensors", 'a');
    rewrite("a.safetensors", "fewer.safetensors", 'd');
    char lm[1100];
    snprintf(lm, sizeof lm, "a.safetensors,'%s'", vkl_test_shared_path("refkit/lm/tiny-llama-lora/adapter_model.safetensors"));
    expect_fail("a.safetensors", "few", 2, "at least 2", NULL);
    expect_fail("a.safetensors,missing.safetensors", "few", 1, "missing.safetensors", "No such file");
    expect_fail(lm, "few", 1, "adapter_model.safetensors", NULL);
    expect_fail("a.safetensors,r2.safetensors", "few", 1, "ranks", "r2.safetensors");
    expect_fail("a.safetensors,alpha.safetensors", "few", 1, "scale", "alpha.safetensors");
    expect_fail("a.safetensors,fewer.safetensors", "few", 1, "same modules", "fewer.safetensors");
    expect_fail("a.safetensors,a.safetensors", "no-such-folder", 1, "no-such-folder", NULL);
    /* an existing output is kept without --force */
    FILE *f = fopen(path_in("bad.safetensors"), "w");
    fputs("keep", f);
    fclose(f);
    char args[2048], *log = NULL;
    snprintf(args, sizeof args, "lorahub --model '%s' --adapters a.safetensors,a.safetensors --images few "
             "-o bad.safetensors --steps 2 " COMMON, vkl_test_shared_path(SD));
    assert_int_equal(vkl_test_cli(args, NULL, &log), 1);
    assert_non_null(strstr(log, "--force"));
    free(log);
    char *kept = vkl_test_slurp(vkl_test_dir, "bad.safetensors");
    assert_string_equal(kept, "keep");
    free(kept);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_input),
    };
    return cmocka_run_group_tests(tests, setup, vkl_test_group_teardown);
}
