#include "serve/serve_json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const cJSON *field(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

int sj_int(const cJSON *obj, const char *key, long long lo, long long hi, long long *out, vkl_err *e)
{
    const cJSON *v = field(obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return vkl_fail(e, "'%s' must be an integer", key);
    double d = v->valuedouble;
    /* 20.0 is an integer (JSON does not tell them apart); 20.5 is not */
    if (!isfinite(d) || d != floor(d)) return vkl_fail(e, "'%s' must be an integer, not %g", key, d);
    if (d < (double)lo || d > (double)hi) return vkl_fail(e, "'%s' %.0f is outside [%lld, %lld]", key, d, lo, hi);
    *out = (long long)d;
    return 0;
}

int sj_num(const cJSON *obj, const char *key, double lo, double hi, double *out, vkl_err *e)
{
    const cJSON *v = field(obj, key);
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble)) return vkl_fail(e, "'%s' must be a number", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return vkl_fail(e, "'%s' %g is outside [%g, %g]", key, v->valuedouble, lo, hi);
    *out = v->valuedouble;
    return 0;
}

int sj_str(const cJSON *obj, const char *key, size_t max_len, const char **out, vkl_err *e)
{
    const cJSON *v = field(obj, key);
    if (!v) return 0;
    if (!cJSON_IsString(v)) return vkl_fail(e, "'%s' must be a string", key);
    if (strlen(v->valuestring) > max_len) return vkl_fail(e, "'%s' is longer than %zu bytes", key, max_len);
    *out = v->valuestring;
    return 0;
}

int sj_bool(const cJSON *obj, const char *key, int *out, vkl_err *e)
{
    const cJSON *v = field(obj, key);
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return vkl_fail(e, "'%s' must be true or false", key);
    *out = cJSON_IsTrue(v);
    return 0;
}

char *sj_error_body(const char *error, const char *detail)
{
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "error", error);
    cJSON_AddStringToObject(o, "detail", detail ? detail : "");
    return sj_print_free(o);
}

char *sj_print_free(cJSON *obj)
{
    if (!obj) return NULL;
    char *s = cJSON_PrintUnformatted(obj);
    cJSON_Delete(obj);
    return s;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sj_base64_encode(const uint8_t *d, size_t n)
{
    char *s = malloc((n + 2) / 3 * 4 + 1), *p = s;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *p++ = b64[v >> 18 & 63];
        *p++ = b64[v >> 12 & 63];
        *p++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *p++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *p = 0;
    return s;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int sj_base64_decode(const char *text, uint8_t **out, size_t *n, vkl_err *e)
{
    *out = NULL;
    *n = 0;
    if (!strncmp(text, "data:", 5)) {
        const char *comma = strstr(text, ";base64,");
        if (!comma) return vkl_fail(e, "a data: URL without ';base64,'");
        text = comma + 8;
    }
    size_t len = strlen(text);
    while (len && text[len - 1] == '=') len--;
    if (strlen(text) - len > 2 || len % 4 == 1) return vkl_fail(e, "not base64: its length does not fit");
    uint8_t *d = malloc(len / 4 * 3 + 3);
    if (!d) return vkl_fail(e, "out of host memory");
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value(text[i]);
        if (v < 0) {
            free(d);
            return vkl_fail(e, "not base64: character %zu (0x%02x) is outside the alphabet", i,
                            (unsigned)(unsigned char)text[i]);
        }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out = d;
    *n = o;
    return 0;
}
