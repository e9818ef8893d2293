/* `vklora tokenizer build --captions DIR... -o OUTDIR`: a word-level
 * tokenizer from caption files, for vklora's own text encoders, written as
 * Hugging Face tokenizer.json + tokenizer_config.json + special_tokens_map.json
 * (models/tokenizer/word_tokenizer.h). */
#include "app.h"

#include "tokenizer/word_tokenizer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DIRS 64

static void usage(FILE *f)
{
    fprintf(f,
            "usage: vklora tokenizer build --captions DIR [--captions DIR2 ...] [--min-count N]\n"
            "                              [--max-length 77] -o OUTDIR [--force]\n"
            "  Builds a word-level tokenizer from every *.txt caption file under the folders\n"
            "  (sub-folders included, read in name order): text is lower-cased and split into\n"
            "  words and punctuation runs as Hugging Face's Lowercase normalizer and Whitespace\n"
            "  pre-tokenizer do (\\w+|[^\\w\\s]+). Ids: 0 <|startoftext|>, 1 <|endoftext|>,\n"
            "  2 <|unk|>, then the words, most used first (ties in byte order).\n"
            "  --min-count N   keep words used at least N times (default 1); the rest encode as <|unk|>\n"
            "  --max-length N  model_max_length in tokenizer_config.json (default 77)\n"
            "  -o OUTDIR       folder to write: tokenizer.json (tokenizers format 1.0, WordLevel),\n"
            "                  tokenizer_config.json, special_tokens_map.json\n"
            "  --force         replace an existing OUTDIR\n"
            "  OUTDIR (or a model folder with it as tokenizer/) loads wherever a CLIP tokenizer\n"
            "  is accepted (--tokenizer, VKLORA_CLIP_VOCAB).\n");
}

static int get_int(const char *opt, const char *v, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "vklora tokenizer build: %s %s: expected an integer in [%ld, %ld]\n", opt, v, lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int build(int argc, char **argv)
{
    const char *dirs[MAX_DIRS], *out = NULL;
    size_t n_dirs = 0;
    vkl_word_build_opts o;
    vkl_word_build_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_value = i + 1 < argc;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--captions") && has_value) {
            if (n_dirs == MAX_DIRS) {
                fprintf(stderr, "vklora tokenizer build: at most %d --captions folders\n", MAX_DIRS);
                return 2;
            }
            dirs[n_dirs++] = argv[++i];
        } else if (!strcmp(a, "--min-count") && has_value) {
            if (get_int(a, argv[++i], 1, 1000000000L, &o.min_count)) return 2;
        } else if (!strcmp(a, "--max-length") && has_value) {
            if (get_int(a, argv[++i], 2, 1000000000L, &o.max_length)) return 2;
        } else if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && has_value) {
            out = argv[++i];
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
        } else {
            fprintf(stderr, "vklora tokenizer build: unexpected argument %s\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (!n_dirs || !out) {
        fprintf(stderr, "vklora tokenizer build: %s\n", !n_dirs ? "--captions DIR is required" : "-o OUTDIR is required");
        usage(stderr);
        return 2;
    }
    vkl_word_build_stats st;
    vkl_err e;
    if (vkl_word_tokenizer_build(dirs, n_dirs, &o, out, &st, &e)) {
        vkl_log(VKL_LOG_ERROR, "%s", e.msg);
        return 1;
    }
    vkl_log(VKL_LOG_INFO, "%zu caption files, %zu words (%zu different)", st.n_files, st.n_words, st.n_distinct);
    /* the figure scripts and people look for, printed even with --quiet */
    printf("vocabulary size: %zu (3 special tokens + %zu words) -> %s\n", st.vocab_size, st.vocab_size - 3, out);
    return 0;
}

int vkl_cmd_tokenizer(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "build")) return build(argc - 1, argv + 1);
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
        usage(stdout);
        return 0;
    }
    if (argc < 2) fprintf(stderr, "vklora tokenizer: missing subcommand\n");
    else fprintf(stderr, "vklora tokenizer: unknown subcommand or option '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
