/* JSON and base64 for `vklora serve`: request fields read with their types
 * and ranges checked (a wrong one is named in the error), error bodies in
 * one shape, and base64 for the images that go in and out. */
#ifndef VKL_SERVE_JSON_H
#define VKL_SERVE_JSON_H

#include "vkl_base.h"

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* Each reader leaves *out unchanged when key is absent or JSON null (the
 * request keeps the default, as A1111's optional fields do) and fails with
 * a message naming the key otherwise when the value has the wrong type or
 * lies outside [lo, hi]. */
int sj_int(const cJSON *obj, const char *key, long long lo, long long hi, long long *out, vkl_err *e);
int sj_num(const cJSON *obj, const char *key, double lo, double hi, double *out, vkl_err *e);
int sj_str(const cJSON *obj, const char *key, size_t max_len, const char **out, vkl_err *e);
int sj_bool(const cJSON *obj, const char *key, int *out, vkl_err *e);

/* {"error": error, "detail": detail} as a malloc'd string. */
char *sj_error_body(const char *error, const char *detail);
/* cJSON_PrintUnformatted of obj, then cJSON_Delete(obj); NULL when out of memory. */
char *sj_print_free(cJSON *obj);

/* Standard base64 with padding (malloc'd, NUL-terminated). */
char *sj_base64_encode(const uint8_t *data, size_t n);
/* Decodes standard base64 (padding optional, no other characters; a
 * "data:...;base64," prefix is skipped, as A1111 does). *out is malloc'd. */
int sj_base64_decode(const char *text, uint8_t **out, size_t *n, vkl_err *e);

#endif
