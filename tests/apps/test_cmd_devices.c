/* vklora devices: text and JSON list the test device with its real limits. */
#include "vkl_test.h"

#include <cjson/cJSON.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>

static char *run(const char *args, int *status)
{
    char *out = NULL;
    *status = vkl_test_run_cli(NULL, NULL, args, &out);
    return out;
}

static void devices_text_and_json(void **state)
{
    (void)state;
    int st;
    char *txt = run("devices", &st);
    assert_int_equal(st, 0);
    assert_non_null(strstr(txt, "max storage binding:"));
    assert_non_null(strstr(txt, "subgroup size:"));
    free(txt);
    char *js = run("devices --json", &st);
    assert_int_equal(st, 0);
    cJSON *j = cJSON_Parse(js);
    assert_non_null(j);
    assert_true(cJSON_IsArray(j) && cJSON_GetArraySize(j) >= 1);
    int found_cpu = 0;
    for (cJSON *d = j->child; d; d = d->next) {
        assert_true(cJSON_GetObjectItem(d, "max_storage_buffer_range")->valuedouble >= 65536);
        assert_true(cJSON_GetObjectItem(d, "subgroup_size")->valuedouble >= 1);
        if (!strcmp(cJSON_GetObjectItem(d, "type")->valuestring, "CPU")) found_cpu = 1;
    }
    assert_true(found_cpu); /* lavapipe is installed with the test dependencies */
    cJSON_Delete(j);
    free(js);
}

static void bad_options_are_usage_errors(void **state)
{
    (void)state;
    int st;
    free(run("devices --frobnicate", &st));
    assert_int_equal(st, 2);
    free(run("no-such-command", &st));
    assert_int_equal(st, 2);
    char *o = run("--device 99 bench gemm --m 8 --n 8 --k 8", &st);
    assert_int_equal(st, 1);
    assert_non_null(strstr(o, "--device 99")); /* the option given, not the variable */
    free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(devices_text_and_json),
        cmocka_unit_test(bad_options_are_usage_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
