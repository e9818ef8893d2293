/* The commands' argument parser (apps/args.h): every kind of value read in
 * both spellings; and every refusal (trailing junk, out of range, not finite,
 * missing value, unknown option, a flag given a value, a value that is the
 * next option, too many positional arguments, an unknown choice, an empty or
 * one too many item of a repeatable option) exits with
 * the usage status and one line naming the option and the value, with the
 * destinations of refused values left as they were. */
#include "vkl_test.h"
#include "args.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct opts {
    int force, steps, dtype, called;
    int64_t tokens;
    unsigned long long seed;
    double sigma, l1;
    float lr;
    const char *model, *out;
    const char *items[2];
    vkl_arg_list list;
} opts;

static int count_calls(const char *cmd, const char *opt, const char *value, void *dest)
{
    if (!strcmp(value, "bad")) {
        fprintf(stderr, "vklora %s: %s '%s': refused by its reader\n", cmd, opt, value);
        return 1;
    }
    ++*(int *)dest;
    return 0;
}

/* The table, as a command declares it. */
static int table(opts *o, vkl_arg *t)
{
    const vkl_arg all[] = {
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&o->force), .help = "replace"},
        {"--model", NULL, VKL_ARG_STR, VKL_AS_STR(&o->model), .help = "M  the model"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&o->out), .help = "OUT"},
        {"--steps", NULL, VKL_ARG_INT, VKL_AS_INT(&o->steps), 1, 100, .help = "N  steps"},
        {"--tokens", NULL, VKL_ARG_I64, VKL_AS_I64(&o->tokens), 1, 1e12, .help = "T"},
        {"--seed", NULL, VKL_ARG_U64, VKL_AS_U64(&o->seed), .help = "S"},
        {"--sigma", NULL, VKL_ARG_DOUBLE, VKL_AS_DOUBLE(&o->sigma), 0, 3, 1, .help = "X"},
        {"--l1", NULL, VKL_ARG_DOUBLE, VKL_AS_DOUBLE(&o->l1), 0, INFINITY, .help = "X"},
        {"--lr", NULL, VKL_ARG_FLOAT, VKL_AS_FLOAT(&o->lr), .help = "X"},
        {"--dtype", NULL, VKL_ARG_CHOICE, VKL_AS_INT(&o->dtype), .choices = "f32|f16|bf16"},
        {"--call", NULL, VKL_ARG_CALL, &o->called, .call = count_calls},
        {"--item", "-i", VKL_ARG_LIST, VKL_AS_LIST(&o->list), .help = "X  repeatable"},
    };
    memcpy(t, all, sizeof all);
    return (int)(sizeof all / sizeof *all);
}

static void defaults(opts *o)
{
    memset(o, 0, sizeof *o);
    o->steps = 40;
    o->tokens = 7;
    o->seed = 9;
    o->sigma = 0.2;
    o->l1 = 0.05;
    o->lr = 1e-3f;
    o->model = "m0";
    o->list = (vkl_arg_list){o->items, 2, 0};
}

/* Parses the words of line (split at spaces) as "vklora t LINE"; stderr's
 * text in said. String values point into the words, valid until the next call. */
static int parse(const char *line, opts *o, vkl_args_rest *rest, char *said, size_t size)
{
    static char buf[512];
    char *argv[32];
    int argc = 0;
    snprintf(buf, sizeof buf, "t %s", line);
    for (char *tok = strtok(buf, " "); tok && argc < 32; tok = strtok(NULL, " ")) argv[argc++] = tok;
    vkl_arg t[16];
    int n = table(o, t);
    fflush(stderr);
    FILE *cap = tmpfile();
    assert_non_null(cap);
    int saved = dup(2);
    dup2(fileno(cap), 2);
    int rc = vkl_args_parse("t", t, n, argc, argv, rest);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(cap);
    size_t got = fread(said, 1, size - 1, cap);
    said[got] = 0;
    fclose(cap);
    return rc;
}

static void values_in_both_spellings(void **state)
{
    (void)state;
    opts o;
    defaults(&o);
    char said[512];
    const char *words[3];
    vkl_args_rest rest = {words, 2, 0};
    assert_int_equal(parse("--force --model m1 -o out.x --steps=100 --tokens 1000000000000 --seed 18446744073709551615 "
                           "--sigma 3 --l1=0 --lr -2.5e-4 --dtype bf16 --call x --call=y a.txt - -- --b",
                           &o, &rest, said, sizeof said),
                     VKL_ARGS_USAGE); /* three positional arguments, two allowed */
    assert_non_null(strstr(said, "unexpected argument '--b'"));
    defaults(&o);
    rest.max = 3;
    assert_int_equal(parse("--force --model m1 -o out.x --steps=100 --tokens 1000000000000 --seed 18446744073709551615 "
                           "--sigma 3 --l1=0 --lr -2.5e-4 --dtype bf16 --call x --call=y --item p -i q a.txt - -- --b",
                           &o, &rest, said, sizeof said),
                     VKL_ARGS_OK);
    assert_string_equal(said, "");
    assert_int_equal(o.force, 1);
    assert_string_equal(o.model, "m1");
    assert_string_equal(o.out, "out.x");
    assert_int_equal(o.steps, 100);
    assert_true(o.tokens == 1000000000000LL);
    assert_true(o.seed == 18446744073709551615ULL);
    assert_true(o.sigma == 3 && o.l1 == 0 && o.lr == -2.5e-4f);
    assert_int_equal(o.dtype, 2);
    assert_int_equal(o.called, 2);
    assert_int_equal(o.list.n, 2);
    assert_string_equal(o.items[0], "p");
    assert_string_equal(o.items[1], "q");
    assert_int_equal(rest.n, 3);
    assert_string_equal(rest.v[0], "a.txt");
    assert_string_equal(rest.v[1], "-");
    assert_string_equal(rest.v[2], "--b");
    /* a value may be empty with '=', and a string may start with one dash */
    defaults(&o);
    assert_int_equal(parse("--model= -o -x", &o, NULL, said, sizeof said), VKL_ARGS_OK);
    assert_string_equal(o.model, "");
    assert_string_equal(o.out, "-x");
}

static void help_wins_and_lists_the_table(void **state)
{
    (void)state;
    opts o;
    defaults(&o);
    char said[512];
    assert_int_equal(parse("--steps 0 --help", &o, NULL, said, sizeof said), VKL_ARGS_HELP);
    assert_int_equal(parse("-h", &o, NULL, said, sizeof said), VKL_ARGS_HELP);
    /* after "--" it is an argument like any other */
    const char *words[1];
    vkl_args_rest rest = {words, 1, 0};
    assert_int_equal(parse("-- --help", &o, &rest, said, sizeof said), VKL_ARGS_OK);
    assert_string_equal(rest.v[0], "--help");
    vkl_arg t[16];
    int n = table(&o, t);
    FILE *f = tmpfile();
    vkl_args_help(f, t, n);
    rewind(f);
    char text[2048];
    text[fread(text, 1, sizeof text - 1, f)] = 0;
    fclose(f);
    assert_non_null(strstr(text, "  --steps N  steps (40)\n"));
    assert_non_null(strstr(text, "  --model M  the model (m0)\n"));
    assert_non_null(strstr(text, "  --output, -o OUT\n"));
    assert_non_null(strstr(text, "--dtype  (f32)"));
}

static void every_refusal_names_option_and_value(void **state)
{
    (void)state;
    static const struct {
        const char *args, *says;
    } cases[] = {
        {"--steps 12x", "vklora t: --steps '12x': expected an integer in [1, 100]\n"},
        {"--steps 0", "vklora t: --steps '0': expected an integer in [1, 100]\n"},
        {"--steps 101", "vklora t: --steps '101': expected an integer in [1, 100]\n"},
        {"--steps=", "vklora t: --steps '': expected an integer in [1, 100]\n"},
        {"--steps 1.5", "vklora t: --steps '1.5': expected an integer in [1, 100]\n"},
        {"--steps 99999999999999999999", "vklora t: --steps '99999999999999999999': expected an integer in [1, 100]\n"},
        {"--tokens 0x10", "vklora t: --tokens '0x10': expected an integer in [1, 1000000000000]\n"},
        {"--seed -1", "vklora t: --seed '-1': expected an integer >= 0\n"},
        {"--seed +1", "vklora t: --seed '+1': expected an integer >= 0\n"},
        {"--seed 18446744073709551616", "vklora t: --seed '18446744073709551616': expected an integer >= 0\n"},
        {"--sigma 0", "vklora t: --sigma '0': expected a number in (0, 3]\n"},
        {"--sigma 3.01", "vklora t: --sigma '3.01': expected a number in (0, 3]\n"},
        {"--sigma nan", "vklora t: --sigma 'nan': expected a number in (0, 3]\n"},
        {"--l1 -0.1", "vklora t: --l1 '-0.1': expected a number >= 0\n"},
        {"--l1 inf", "vklora t: --l1 'inf': expected a number >= 0\n"},
        {"--lr 1e-3junk", "vklora t: --lr '1e-3junk': expected a finite number\n"},
        {"--lr 1e39", "vklora t: --lr '1e39': expected a finite number\n"},
        {"--lr -inf", "vklora t: --lr '-inf': expected a finite number\n"},
        {"--dtype f8", "vklora t: --dtype 'f8': expected one of f32|f16|bf16\n"},
        {"--dtype f3", "vklora t: --dtype 'f3': expected one of f32|f16|bf16\n"},
        {"--call bad", "vklora t: --call 'bad': refused by its reader\n"},
        {"--steps", "vklora t: --steps needs a value\n"},
        {"--model --force", "vklora t: --model needs a value\n"},
        {"--frobnicate 1", "vklora t: unknown option '--frobnicate'\n"},
        {"--frob=1", "vklora t: unknown option '--frob'\n"},
        {"-x", "vklora t: unknown option '-x'\n"},
        {"--force=1", "vklora t: --force takes no value\n"},
        {"stray", "vklora t: unexpected argument 'stray'\n"},
        {"--item=", "vklora t: --item '': expected a non-empty value\n"},
        {"--item", "vklora t: --item needs a value\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        opts o, before;
        defaults(&o);
        before = o;
        char said[512];
        int rc = parse(cases[i].args, &o, NULL, said, sizeof said);
        if (rc != VKL_ARGS_USAGE || strcmp(said, cases[i].says)) {
            print_error("%s: status %d, said \"%s\" (want 2, \"%s\")\n", cases[i].args, rc, said, cases[i].says);
            fail();
        }
        /* nothing refused was written */
        assert_int_equal(o.steps, before.steps);
        assert_true(o.tokens == before.tokens && o.seed == before.seed && o.sigma == before.sigma);
        assert_true(o.l1 == before.l1 && o.lr == before.lr && o.dtype == before.dtype && o.called == 0);
        assert_int_equal(o.list.n, 0);
    }
    /* a list takes max items; the one after is refused, the first ones kept */
    opts o;
    defaults(&o);
    char said[512];
    assert_int_equal(parse("--item a -i b --item c", &o, NULL, said, sizeof said), VKL_ARGS_USAGE);
    assert_string_equal(said, "vklora t: --item 'c': at most 2 may be given\n");
    assert_int_equal(o.list.n, 2);
    assert_string_equal(o.items[1], "b");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(values_in_both_spellings),
        cmocka_unit_test(help_wins_and_lists_the_table),
        cmocka_unit_test(every_refusal_names_option_and_value),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
