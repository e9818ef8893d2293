/* `vklora tokenizer build --captions DIR... -o OUTDIR`: a word-level
 * tokenizer from caption files, for vklora's own text encoders, written as
 * Hugging Face tokenizer.json + tokenizer_config.json + special_tokens_map.json
 * (models/tokenizer/word_tokenizer.h). */
#include "app.h"
#include "args.h"

#include "tokenizer/word_tokenizer.h"

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

/* --captions DIR, given once per folder */
typedef struct caption_dirs {
    const char *v[MAX_DIRS];
    size_t n;
} caption_dirs;

static int add_dir(const char *cmd, const char *opt, const char *v, void *dest)
{
    caption_dirs *d = dest;
    if (d->n == MAX_DIRS) {
        fprintf(stderr, "vklora %s: %s %s: at most %d folders\n", cmd, opt, v, MAX_DIRS);
        return 1;
    }
    d->v[d->n++] = v;
    return 0;
}

static int build(int argc, char **argv)
{
    const char *out = NULL;
    caption_dirs dirs = {.n = 0};
    vkl_word_build_opts o;
    vkl_word_build_opts_default(&o);
    const vkl_arg opts[] = {
        {"--captions", NULL, VKL_ARG_CALL, &dirs, .call = add_dir, .help = "DIR"},
        {"--min-count", NULL, VKL_ARG_INT, VKL_AS_INT(&o.min_count), 1, 1000000000, .help = "N"},
        {"--max-length", NULL, VKL_ARG_INT, VKL_AS_INT(&o.max_length), 2, 1000000000, .help = "N"},
        {"--output", "-o", VKL_ARG_STR, VKL_AS_STR(&out), .help = "OUTDIR"},
        {"--force", NULL, VKL_ARG_FLAG, VKL_AS_INT(&o.force), .help = " replace OUTDIR"},
    };
    int prc = vkl_args_parse("tokenizer build", opts, (int)(sizeof opts / sizeof *opts), argc, argv, NULL);
    if (prc) {
        usage(prc == VKL_ARGS_HELP ? stdout : stderr);
        return prc == VKL_ARGS_HELP ? 0 : prc;
    }
    if (!dirs.n || !out) {
        fprintf(stderr, "vklora tokenizer build: %s\n", !dirs.n ? "--captions DIR is required" : "-o OUTDIR is required");
        usage(stderr);
        return 2;
    }
    vkl_word_build_stats st;
    vkl_err e;
    if (vkl_word_tokenizer_build(dirs.v, dirs.n, &o, out, &st, &e)) {
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
