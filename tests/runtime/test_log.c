/* The log callback: messages reach the application's function with their
 * level, formatted and without a newline, filtered by the level; NULL gives
 * stderr back. */
#include "vkl_test.h"

#include <string.h>

typedef struct {
    int n;
    vkl_log_level level;
    char last[256];
} seen;

static void on_log(vkl_log_level level, const char *message, void *user)
{
    seen *s = user;
    s->n++;
    s->level = level;
    snprintf(s->last, sizeof s->last, "%s", message);
}

static void callback_gets_messages(void **state)
{
    (void)state;
    seen s = {0};
    vkl_log_level before = vkl_log_get_level();
    vkl_log_set(on_log, &s);
    vkl_log(VKL_LOG_WARN, "adapter %s: %d modules", "a.safetensors", 3);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.level, VKL_LOG_WARN);
    assert_string_equal(s.last, "adapter a.safetensors: 3 modules");
    vkl_log_set_level(VKL_LOG_ERROR);
    vkl_log(VKL_LOG_INFO, "filtered");
    assert_int_equal(s.n, 1);
    vkl_log(VKL_LOG_ERROR, "kept");
    assert_int_equal(s.n, 2);
    assert_string_equal(s.last, "kept");
    vkl_log_set(NULL, NULL);
    vkl_log_set_level(before);
    vkl_log(VKL_LOG_DEBUG, "to stderr, not the callback");
    assert_int_equal(s.n, 2);
    assert_string_equal(vkl_version(), VKL_VERSION_STRING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(callback_gets_messages)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
