/* The op table (runtime/ops/op_table.h) holds what it says: for every op the
 * builder file defines it and sets its backward rule, the kernels it lists
 * are dispatched there and have a shader, the tests exist and call it, an op
 * with a backward rule has a gradient test that compares with numbers; and
 * every shader variant built into the library belongs to some op. */
#include "vkl_test.h"
#include "ops/op_table.h"
#include "shader_table.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>

static const char *root(void)
{
    const char *r = getenv("VKLORA_SOURCE_DIR");
    if (!r || !*r) {
        fprintf(stderr, "SKIPPED: VKLORA_SOURCE_DIR not set (run the tests through ctest)\n");
        skip();
    }
    return r;
}

/* The file's text (fails the test when it is missing). */
static char *source(const char *rel, const char *op)
{
    char *s = vkl_test_slurp(root(), rel);
    if (!s) {
        print_error("%s: %s is missing\n", op, rel);
        fail();
    }
    return s;
}

static void upper(const char *in, char *out, size_t n)
{
    size_t i = 0;
    for (; in[i] && i + 1 < n; i++) out[i] = (char)(in[i] >= 'a' && in[i] <= 'z' ? in[i] - 32 : in[i]);
    out[i] = 0;
}

/* Whether shaders/ has the variant: a NAME.comp, or an `// @variant NAME` line. */
static int shader_source_has(const char *variant)
{
    char dir[1200], want[256];
    snprintf(dir, sizeof dir, "%s/shaders", root());
    snprintf(want, sizeof want, "// @variant %s ", variant);
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *x;
    int found = 0;
    while (!found && (x = readdir(d))) {
        size_t n = strlen(x->d_name);
        if (n < 6 || strcmp(x->d_name + n - 5, ".comp")) continue;
        if (n - 5 == strlen(variant) && !strncmp(x->d_name, variant, n - 5)) found = 1;
        char rel[600];
        snprintf(rel, sizeof rel, "shaders/%s", x->d_name);
        char *s = vkl_test_slurp(root(), rel);
        if (s) {
            if (strstr(s, want)) found = 1;
            /* a variant with no definitions ends its line at the name */
            char bare[256];
            snprintf(bare, sizeof bare, "// @variant %s\n", variant);
            if (strstr(s, bare)) found = 1;
            free(s);
        }
    }
    closedir(d);
    return found;
}

static void every_entry_holds(void **state)
{
    (void)state;
    root();
    assert_true(vkl_op_count > 30);
    for (int i = 0; i < vkl_op_count; i++) {
        const vkl_op_info *o = &vkl_op_table[i];
        char call[128];
        snprintf(call, sizeof call, "%s(", o->name);
        assert_non_null(o->builder);
        char *b = source(o->file, o->name);
        if (!strstr(b, call)) {
            print_error("%s is not defined in %s\n", o->name, o->file);
            fail();
        }
        for (int k = 0; k < VKL_OP_MAX_KERNELS && o->kernels[k] != VKL_KERNEL_COUNT; k++) {
            const char *v = vkl_shader_table[o->kernels[k]].name;
            char id[160];
            upper(v, id + snprintf(id, sizeof id, "VKL_KERNEL_"), sizeof id - 11);
            if (!strstr(b, id)) {
                print_error("%s: %s does not dispatch %s\n", o->name, o->file, id);
                fail();
            }
            if (!shader_source_has(v)) {
                print_error("%s: no shader source declares the variant %s\n", o->name, v);
                fail();
            }
        }
        if (!o->reference && !(o->no_reference && *o->no_reference)) {
            print_error("%s has neither a CPU reference nor a word on what checks it\n", o->name);
            fail();
        }
        int rule = strcmp(o->backward, "none") && strcmp(o->backward, "composed");
        if (rule) {
            char set[160];
            snprintf(set, sizeof set, "backward = %s;", o->backward);
            if (!strstr(b, set)) {
                print_error("%s: %s does not set the backward rule %s\n", o->name, o->file, o->backward);
                fail();
            }
        }
        free(b);
        char *t = source(o->test, o->name);
        char via[128];
        snprintf(via, sizeof via, "%s(", o->reached_from ? o->reached_from : o->name);
        if (!strstr(t, via) && !o->no_reference) {
            print_error("%s: %s does not call %.*s\n", o->name, o->test, (int)strlen(via) - 1, via);
            fail();
        }
        free(t);
        int passes_gradient = strcmp(o->backward, "none") && strcmp(o->backward, "backward_detached");
        if (passes_gradient) {
            if (!o->grad_test) {
                print_error("%s has the backward rule %s and no gradient test\n", o->name, o->backward);
                fail();
            }
            char *gt = source(o->grad_test, o->name);
            /* numerical: the shared finite-difference helpers, or the test's own */
            int numeric = strstr(gt, "grad_check.h") || strstr(gt, "finite difference") || strstr(gt, "closed form") ||
                          strstr(gt, "central");
            if (!strstr(gt, via) || !numeric) {
                print_error("%s: %s does not check its gradient against numbers\n", o->name, o->grad_test);
                fail();
            }
            free(gt);
        }
    }
}

static void every_kernel_belongs_to_an_op(void **state)
{
    (void)state;
    for (int k = 0; k < VKL_KERNEL_COUNT; k++) {
        int used = 0;
        for (int i = 0; i < vkl_op_count && !used; i++)
            for (int j = 0; j < VKL_OP_MAX_KERNELS && vkl_op_table[i].kernels[j] != VKL_KERNEL_COUNT; j++)
                used |= vkl_op_table[i].kernels[j] == (vkl_kernel)k;
        if (!used) {
            print_error("the shader variant %s is in no op table entry\n", vkl_shader_table[k].name);
            fail();
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_entry_holds),
        cmocka_unit_test(every_kernel_belongs_to_an_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
