/* Caption folders -> a word-level vocabulary: every word the encoder will see
 * is counted exactly as it will be split at encoding time (word_split.c), so
 * a caption never meets an unknown word unless min_count left it out. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "word_level.h"
#include "io/text.h"
#include "word_tokenizer.h"

typedef struct {
    vkl_strmap index; /* word -> position in words/count */
    char **words;
    size_t *count;
    size_t n, cap;
    vkl_word_build_stats st;
} counter;

static char *const SPECIALS[] = {VKL_WL_BOS, VKL_WL_EOS, VKL_WL_UNK};

void vkl_word_build_opts_default(vkl_word_build_opts *o)
{
    o->min_count = 1;
    o->max_length = 77;
    o->force = 0;
}

void vkl_wl_vocab_free(vkl_wl_vocab *v)
{
    for (size_t i = 0; i < v->n; i++)
        free(v->words[i]);
    free(v->words);
    v->words = NULL;
    v->n = 0;
}

static int count_word(counter *c, const char *w, size_t len)
{
    int32_t i = vkl_strmap_get(&c->index, w, len);
    if (i >= 0) {
        c->count[i]++;
        return 0;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        char **words = realloc(c->words, cap * sizeof *words);
        if (!words)
            return -1;
        c->words = words;
        size_t *count = realloc(c->count, cap * sizeof *count);
        if (!count)
            return -1;
        c->count = count;
        c->cap = cap;
    }
    if (c->n >= INT32_MAX || !(c->words[c->n] = strndup(w, len)))
        return -1;
    c->count[c->n] = 1;
    return vkl_strmap_put(&c->index, w, len, (int32_t)c->n++);
}

static int count_text(counter *c, const char *text, size_t len, const char *file, vkl_err *e)
{
    size_t pos = 0;
    while (pos < len) {
        size_t which, mlen;
        size_t at = pos + vkl_wl_find_added(text + pos, len - pos, SPECIALS, 3, &which, &mlen);
        if (at > pos) {
            char *words;
            vkl_i32buf spans = {0};
            if (vkl_wl_pretokenize(text + pos, at - pos, 1, file, &words, &spans, e))
                return -1;
            int rc = 0;
            for (size_t k = 0; k < spans.n && !rc; k += 2) {
                const char *w = words + spans.v[k];
                size_t wl = (size_t)(spans.v[k + 1] - spans.v[k]);
                /* a U+0000 word has no place in a C string or in cJSON's
                 * keys; leaving it out makes it encode as <|unk|> */
                if (memchr(w, 0, wl))
                    continue;
                c->st.n_words++;
                if (count_word(c, w, wl))
                    rc = vkl_fail(e, "%s: out of memory counting words", file);
            }
            free(words);
            vkl_i32buf_free(&spans);
            if (rc)
                return -1;
        }
        pos = at + mlen;
    }
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with_txt(const char *s)
{
    size_t n = strlen(s);
    return n > 4 && strcmp(s + n - 4, ".txt") == 0;
}

/* Reads dir's caption files and sub-folders in name order. */
static int scan_dir(counter *c, const char *dir, vkl_err *e)
{
    DIR *d = opendir(dir);
    if (!d)
        return vkl_fail(e, "cannot read caption folder %s: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (struct dirent *x; !rc && (x = readdir(d));) {
        if (x->d_name[0] == '.')
            continue; /* ".", "..", and hidden files such as editors' backups */
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = vkl_fail(e, "%s: out of memory listing the folder", dir);
                break;
            }
            names = nn;
        }
        if (!(names[n] = strdup(x->d_name)))
            rc = vkl_fail(e, "%s: out of memory listing the folder", dir);
        else
            n++;
    }
    closedir(d);
    if (!rc && n)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n && !rc; i++) {
        size_t pl = strlen(dir) + strlen(names[i]) + 2;
        char *p = malloc(pl);
        struct stat st;
        if (!p) {
            rc = vkl_fail(e, "out of memory");
            break;
        }
        snprintf(p, pl, "%s/%s", dir, names[i]);
        if (stat(p, &st)) {
            rc = vkl_fail(e, "cannot read %s: %s", p, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = scan_dir(c, p, e);
        } else if (S_ISREG(st.st_mode) && ends_with_txt(names[i])) {
            char *text;
            size_t len;
            rc = vkl_read_text_file(p, VKL_CLIP_MAX_FILE_BYTES, &text, &len, e);
            if (!rc) {
                rc = count_text(c, text, len, p, e);
                free(text);
                c->st.n_files++;
            }
        }
        free(p);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

typedef struct {
    char *word;
    size_t count;
} entry;

/* Most used first; ties in byte order, so the ids never depend on the order
 * the files were read or on the hash table. */
static int by_count(const void *a, const void *b)
{
    const entry *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->word, y->word);
}

static void counter_free(counter *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->words[i]);
    free(c->words);
    free(c->count);
    vkl_strmap_free(&c->index);
}

/* The words kept, in id order (copies). */
static int make_vocab(counter *c, int min_count, vkl_wl_vocab *v, vkl_err *e)
{
    entry *all = malloc((c->n ? c->n : 1) * sizeof *all);
    v->words = malloc((c->n ? c->n : 1) * sizeof *v->words);
    if (!all || !v->words) {
        free(all);
        return vkl_fail(e, "out of memory sorting %zu words", c->n);
    }
    for (size_t i = 0; i < c->n; i++)
        all[i] = (entry){c->words[i], c->count[i]};
    qsort(all, c->n, sizeof *all, by_count);
    for (size_t k = 0; k < c->n; k++)
        if (all[k].count >= (size_t)min_count)
            v->words[v->n++] = strdup(all[k].word);
    free(all);
    for (size_t k = 0; k < v->n; k++)
        if (!v->words[k])
            return vkl_fail(e, "out of memory sorting %zu words", c->n);
    return 0;
}

int vkl_word_tokenizer_build(const char *const *dirs, size_t n_dirs, const vkl_word_build_opts *o,
                             const char *outdir, vkl_word_build_stats *st, vkl_err *e)
{
    vkl_word_build_opts def;
    if (!o) {
        vkl_word_build_opts_default(&def);
        o = &def;
    }
    if (o->min_count < 1)
        return vkl_fail(e, "min_count must be at least 1, not %d", o->min_count);
    if (o->max_length < 2)
        return vkl_fail(e, "max_length must be at least 2 (BOS and EOS), not %d", o->max_length);
    if (!n_dirs)
        return vkl_fail(e, "no caption folder given");
    struct stat sb;
    if (!o->force && stat(outdir, &sb) == 0)
        return vkl_fail(e, "%s exists (use --force to replace it)", outdir);
    counter c = {0};
    vkl_wl_vocab v = {0};
    int rc = 0;
    for (size_t i = 0; i < n_dirs && !rc; i++)
        rc = scan_dir(&c, dirs[i], e);
    if (!rc && !c.st.n_files)
        rc = vkl_fail(e, "no *.txt caption files in %s%s", dirs[0], n_dirs > 1 ? " and the other folders" : "");
    if (!rc)
        rc = make_vocab(&c, o->min_count, &v, e);
    c.st.n_distinct = c.n;
    c.st.vocab_size = 3 + v.n;
    if (!rc)
        rc = vkl_wl_save(&v, o->max_length, outdir, o->force, e);
    if (!rc && st)
        *st = c.st;
    vkl_wl_vocab_free(&v);
    counter_free(&c);
    return rc;
}
