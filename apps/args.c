#include "args.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int refuse(const char *cmd, const char *opt, const char *value, const char *want)
{
    fprintf(stderr, "vklora %s: %s '%s': %s\n", cmd, opt, value, want);
    return VKL_ARGS_USAGE;
}

/* The integer range an option allows: its own, or the type's when lo = hi = 0. */
static void int_range(const vkl_arg *o, long double *lo, long double *hi)
{
    if (o->lo == 0 && o->hi == 0) {
        *lo = o->type == VKL_ARG_INT ? INT_MIN : o->type == VKL_ARG_I64 ? (long double)INT64_MIN : 0;
        *hi = o->type == VKL_ARG_INT ? INT_MAX : o->type == VKL_ARG_I64 ? (long double)INT64_MAX : (long double)ULLONG_MAX;
    } else {
        *lo = o->lo;
        *hi = o->hi;
    }
}

static void describe_int(const vkl_arg *o, char *want, size_t size)
{
    long double lo, hi;
    int_range(o, &lo, &hi);
    if (o->lo == 0 && o->hi == 0)
        snprintf(want, size, o->type == VKL_ARG_U64 ? "expected an integer >= 0" : "expected an integer");
    else
        snprintf(want, size, "expected an integer in [%.0Lf, %.0Lf]", lo, hi);
}

static void describe_real(const vkl_arg *o, char *want, size_t size)
{
    const char *open = o->lo_open ? "(" : "[";
    if (o->lo == 0 && o->hi == 0 && !o->lo_open) snprintf(want, size, "expected a finite number");
    else if (isinf(o->hi)) snprintf(want, size, "expected a number %s %g", o->lo_open ? ">" : ">=", o->lo);
    else snprintf(want, size, "expected a number in %s%g, %g]", open, o->lo, o->hi);
}

/* A whole decimal integer: no space, sign only where the type has one,
 * nothing after the digits. */
static int read_int(const char *cmd, const vkl_arg *o, const char *v)
{
    char want[96];
    describe_int(o, want, sizeof want);
    if (!*v || isspace((unsigned char)v[0]) || (o->type == VKL_ARG_U64 && (v[0] == '-' || v[0] == '+')))
        return refuse(cmd, o->name, v, want);
    char *end;
    errno = 0;
    long double lo, hi;
    int_range(o, &lo, &hi);
    if (o->type == VKL_ARG_U64) {
        unsigned long long x = strtoull(v, &end, 10);
        if (*end || errno || (long double)x < lo || (long double)x > hi) return refuse(cmd, o->name, v, want);
        *(unsigned long long *)o->dest = x;
        return 0;
    }
    long long x = strtoll(v, &end, 10);
    if (*end || errno || (long double)x < lo || (long double)x > hi) return refuse(cmd, o->name, v, want);
    if (o->type == VKL_ARG_INT) *(int *)o->dest = (int)x;
    else *(int64_t *)o->dest = x;
    return 0;
}

static int read_real(const char *cmd, const vkl_arg *o, const char *v)
{
    char want[96];
    describe_real(o, want, sizeof want);
    char *end;
    errno = 0;
    double x = *v && !isspace((unsigned char)v[0]) ? strtod(v, &end) : NAN;
    int ranged = o->lo != 0 || o->hi != 0 || o->lo_open;
    if (!isfinite(x) || *end || (o->type == VKL_ARG_FLOAT && !isfinite((float)x)) ||
        (ranged && (x < o->lo || (o->lo_open && x == o->lo) || x > o->hi)))
        return refuse(cmd, o->name, v, want);
    if (o->type == VKL_ARG_FLOAT) *(float *)o->dest = (float)x;
    else *(double *)o->dest = x;
    return 0;
}

static int read_choice(const char *cmd, const vkl_arg *o, const char *v)
{
    size_t len = strlen(v);
    int index = 0;
    for (const char *p = o->choices; *p; index++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && !strncmp(p, v, n)) {
            *(int *)o->dest = index;
            return 0;
        }
        p += n + (bar != NULL);
    }
    char want[256];
    snprintf(want, sizeof want, "expected one of %s", o->choices);
    return refuse(cmd, o->name, v, want);
}

/* An empty item is refused: in every list an item names something (a file,
 * a stop string), and "" is a slip of the shell's quoting. */
static int read_list(const char *cmd, const vkl_arg *o, const char *v)
{
    vkl_arg_list *l = o->dest;
    if (!*v) return refuse(cmd, o->name, v, "expected a non-empty value");
    if (l->n >= l->max) {
        char want[64];
        snprintf(want, sizeof want, "at most %d may be given", l->max);
        return refuse(cmd, o->name, v, want);
    }
    l->v[l->n++] = v;
    return 0;
}

int vkl_args_value(const char *cmd, const vkl_arg *o, const char *v)
{
    switch (o->type) {
    case VKL_ARG_FLAG:
        fprintf(stderr, "vklora %s: %s takes no value\n", cmd, o->name);
        return VKL_ARGS_USAGE;
    case VKL_ARG_STR:
        *(const char **)o->dest = v;
        return 0;
    case VKL_ARG_INT:
    case VKL_ARG_I64:
    case VKL_ARG_U64:
        return read_int(cmd, o, v);
    case VKL_ARG_DOUBLE:
    case VKL_ARG_FLOAT:
        return read_real(cmd, o, v);
    case VKL_ARG_CHOICE:
        return read_choice(cmd, o, v);
    case VKL_ARG_CALL:
        return o->call(cmd, o->name, v, o->dest) ? VKL_ARGS_USAGE : 0;
    case VKL_ARG_LIST:
        return read_list(cmd, o, v);
    }
    return VKL_ARGS_USAGE;
}

/* The option named by arg (up to its '=', if any), or NULL. */
static const vkl_arg *find(const vkl_arg *table, int n, const char *arg, size_t len)
{
    for (int i = 0; i < n; i++) {
        const char *names[2] = {table[i].name, table[i].alias};
        for (int k = 0; k < 2; k++)
            if (names[k] && strlen(names[k]) == len && !strncmp(names[k], arg, len)) return &table[i];
    }
    return NULL;
}

/* An argument that is itself an option ("--lr", "-o"), not a value such as
 * "-5" or "-". */
static int looks_like_option(const char *s)
{
    return s[0] == '-' && s[1] && !isdigit((unsigned char)s[1]) && s[1] != '.';
}

int vkl_args_parse(const char *cmd, const vkl_arg *table, int n, int argc, char **argv, vkl_args_rest *rest)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--")) break;
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return VKL_ARGS_HELP;
    if (rest) rest->n = 0;
    int options = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options && !strcmp(a, "--")) {
            options = 0;
            continue;
        }
        if (!options || !looks_like_option(a)) {
            if (!rest || rest->n >= rest->max) {
                fprintf(stderr, "vklora %s: unexpected argument '%s'\n", cmd, a);
                return VKL_ARGS_USAGE;
            }
            rest->v[rest->n++] = a;
            continue;
        }
        const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        const vkl_arg *o = find(table, n, a, eq ? (size_t)(eq - a) : strlen(a));
        if (!o) {
            fprintf(stderr, "vklora %s: unknown option '%.*s'\n", cmd, eq ? (int)(eq - a) : (int)strlen(a), a);
            return VKL_ARGS_USAGE;
        }
        if (o->type == VKL_ARG_FLAG) {
            if (eq) return vkl_args_value(cmd, o, eq + 1);
            *(int *)o->dest = 1;
            continue;
        }
        const char *v = eq ? eq + 1 : i + 1 < argc ? argv[i + 1] : NULL;
        /* "--model --force": the next option is not the model's path */
        if (!v || (!eq && !strncmp(v, "--", 2) && v[2])) {
            fprintf(stderr, "vklora %s: %s needs a value\n", cmd, o->name);
            return VKL_ARGS_USAGE;
        }
        if (!eq) i++;
        int rc = vkl_args_value(cmd, o, v);
        if (rc) return rc;
    }
    return VKL_ARGS_OK;
}

void vkl_args_help(FILE *f, const vkl_arg *table, int n)
{
    for (int i = 0; i < n; i++) {
        const vkl_arg *o = &table[i];
        char def[64] = "";
        switch (o->type) {
        case VKL_ARG_STR:
            if (*(const char **)o->dest) snprintf(def, sizeof def, " (%s)", *(const char **)o->dest);
            break;
        case VKL_ARG_INT: snprintf(def, sizeof def, " (%d)", *(int *)o->dest); break;
        case VKL_ARG_I64: snprintf(def, sizeof def, " (%" PRId64 ")", *(int64_t *)o->dest); break;
        case VKL_ARG_U64: snprintf(def, sizeof def, " (%llu)", *(unsigned long long *)o->dest); break;
        case VKL_ARG_DOUBLE: snprintf(def, sizeof def, " (%g)", *(double *)o->dest); break;
        case VKL_ARG_FLOAT: snprintf(def, sizeof def, " (%g)", *(float *)o->dest); break;
        case VKL_ARG_CHOICE: {
            /* the default is the choice the destination holds */
            const char *p = o->choices;
            for (int k = *(int *)o->dest; k > 0 && p; k--) p = strchr(p, '|'), p = p ? p + 1 : NULL;
            if (p) snprintf(def, sizeof def, " (%.*s)", (int)strcspn(p, "|"), p);
            break;
        }
        default: break;
        }
        fprintf(f, "  %s%s%s %s%s\n", o->name, o->alias ? ", " : "", o->alias ? o->alias : "", o->help ? o->help : "",
                def);
    }
}
