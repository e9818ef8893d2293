/* The command line of a command or benchmark, read against a table of its
 * options: each option's type, range and destination. One strict reading for
 * every command: a number with anything after it, out of its range, or not
 * finite is refused; so is an option without its value or one the table does
 * not know. Every refusal is one line on stderr in one format,
 *
 *     vklora CMD: --opt 'VALUE': expected an integer in [1, 100]
 *     vklora CMD: --opt needs a value
 *     vklora CMD: unknown option '--x'
 *
 * and the parse returns 2 (the usage exit status). Values come as
 * `--opt VALUE` or `--opt=VALUE`. */
#ifndef VKL_APP_ARGS_H
#define VKL_APP_ARGS_H

#include <stdint.h>
#include <stdio.h>

typedef enum vkl_arg_type {
    VKL_ARG_FLAG,   /* int: set to 1; takes no value */
    VKL_ARG_STR,    /* const char *: the value as given (not copied) */
    VKL_ARG_INT,    /* int, decimal, in [lo, hi] */
    VKL_ARG_I64,    /* int64_t, decimal, in [lo, hi] */
    VKL_ARG_U64,    /* unsigned long long, decimal, no sign; hi = 0: any */
    VKL_ARG_DOUBLE, /* finite double in [lo, hi] ((lo, hi] with lo_open) */
    VKL_ARG_FLOAT,  /* the same, stored as float */
    VKL_ARG_CHOICE, /* int: the index of the value in choices, "f32|f16|bf16" */
    VKL_ARG_CALL,   /* call(cmd, opt, value, dest): 0, or nonzero after printing why */
    VKL_ARG_LIST,   /* vkl_arg_list: a repeatable option; each non-empty value appended */
} vkl_arg_type;

typedef struct vkl_arg {
    const char *name;  /* "--steps" */
    const char *alias; /* another spelling ("-o"), or NULL */
    vkl_arg_type type;
    void *dest;
    /* numbers: the range; lo = hi = 0 means any value the type holds */
    double lo, hi;
    int lo_open;          /* lo itself is refused: (lo, hi] */
    const char *choices;  /* VKL_ARG_CHOICE */
    int (*call)(const char *cmd, const char *opt, const char *value, void *dest);
    const char *help;     /* one line for vkl_args_help: "N  steps of the search" */
} vkl_arg;

/* Values in order: a repeatable option's (VKL_ARG_LIST: more than max are
 * refused, "--lora 'x': at most 8 may be given"), or what was left after
 * the options, the positional arguments (vkl_args_rest: more than max are
 * refused, "unexpected argument 'x'"). */
typedef struct vkl_arg_list {
    const char **v; /* the caller's array of max entries */
    int max;
    int n; /* how many were given */
} vkl_arg_list;
typedef vkl_arg_list vkl_args_rest;

/* A destination of the type its entry's kind writes, or a compile error
 * (dest is a void pointer: without these a table could write an int into
 * an int64_t unnoticed). E.g. {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&steps), 1, 100}. */
#define VKL_AS_INT(p) _Generic((p), int *: (void *)(p))
#define VKL_AS_I64(p) _Generic((p), int64_t *: (void *)(p))
#define VKL_AS_U64(p) _Generic((p), unsigned long long *: (void *)(p))
#define VKL_AS_DOUBLE(p) _Generic((p), double *: (void *)(p))
#define VKL_AS_FLOAT(p) _Generic((p), float *: (void *)(p))
#define VKL_AS_STR(p) _Generic((p), const char **: (void *)(p))
#define VKL_AS_LIST(p) _Generic((p), vkl_arg_list *: (void *)(p))

enum { VKL_ARGS_OK = 0, VKL_ARGS_HELP = 1, VKL_ARGS_USAGE = 2 };

/* Reads argv[1..argc) (argv[0] is the command's name) against the n options
 * of table, writing each value to its destination. cmd names the command in
 * messages ("lorahub", "bench gemm"). rest may be NULL (no positional
 * arguments). "--" ends the options. Returns VKL_ARGS_OK, VKL_ARGS_HELP when
 * -h or --help was given (nothing else is checked; the caller prints its
 * usage and exits 0), or VKL_ARGS_USAGE after printing the refusal. */
int vkl_args_parse(const char *cmd, const vkl_arg *table, int n, int argc, char **argv, vkl_args_rest *rest);

/* One value read as the table's option opt would read it (for values that
 * come from elsewhere, e.g. a list's items); the same messages. */
int vkl_args_value(const char *cmd, const vkl_arg *opt, const char *value);

/* Prints each option of the table with its help line and, for numbers and
 * strings, the destination's present value as the default. */
void vkl_args_help(FILE *f, const vkl_arg *table, int n);

#endif
