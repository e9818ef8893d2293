/* Finding and reading the vocabulary: a diffusers/transformers tokenizer
 * folder (vocab.json + merges.txt) or openai/CLIP's bpe_simple_vocab_16e6.txt.gz,
 * or a word-level tokenizer.json (word_level_load.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>
#include <cjson/cJSON.h>

#include "word_level.h"
#include "io/text.h"


static int is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int join(char *out, size_t cap, const char *dir, const char *name, vkl_err *e)
{
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap)
        return vkl_fail(e, "path too long: %s/%s", dir, name);
    return 0;
}

static int folder_has(const char *dir, const char *name)
{
    char p[4096];
    return join(p, sizeof p, dir, name, NULL) == 0 && is_file(p);
}

/* A folder holds a BPE vocabulary (vocab.json + merges.txt) or a word-level
 * tokenizer.json; BPE wins where both are present, as it always loaded. */
static int folder_is_tokenizer(const char *dir)
{
    return (folder_has(dir, "vocab.json") && folder_has(dir, "merges.txt")) || folder_has(dir, "tokenizer.json");
}

int vkl_clip_vocab_resolve(const char *path, char *out, size_t cap, vkl_err *e)
{
    const char *from = "argument";
    if (!path || !*path) {
        path = getenv("VKLORA_CLIP_VOCAB");
        from = "VKLORA_CLIP_VOCAB";
    }
    if (!path || !*path)
        return vkl_fail(e, "no CLIP vocabulary given: pass a path or set VKLORA_CLIP_VOCAB to a "
                           "tokenizer folder (vocab.json + merges.txt, or a word-level tokenizer.json) "
                           "or bpe_simple_vocab_16e6.txt.gz");
    if (is_dir(path)) {
        char sub[4096];
        if (folder_is_tokenizer(path)) {
            if (strlen(path) >= cap)
                return vkl_fail(e, "path too long: %s", path);
            strcpy(out, path);
            return 0;
        }
        if (join(sub, sizeof sub, path, "tokenizer", NULL) == 0 && folder_is_tokenizer(sub))
            return join(out, cap, path, "tokenizer", e);
        return vkl_fail(e, "CLIP vocabulary folder %s (from %s) has no vocab.json + merges.txt nor "
                           "tokenizer.json (nor tokenizer/ with them)", path, from);
    }
    if (!is_file(path))
        return vkl_fail(e, "CLIP vocabulary %s (from %s): %s", path, from,
                        errno ? strerror(errno) : "not a file or folder");
    if (strlen(path) >= cap)
        return vkl_fail(e, "path too long: %s", path);
    strcpy(out, path);
    return 0;
}

/* Splits a merges line as Python's str.split() does for ASCII whitespace and
 * requires exactly two parts. */
static int split_merge(const char *l, size_t n, const char **a, size_t *al, const char **b, size_t *bl)
{
    const char *p[3];
    size_t pl[3];
    int k = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && (l[i] == ' ' || l[i] == '\t' || l[i] == '\r'))
            i++;
        if (i == n)
            break;
        size_t s = i;
        while (i < n && l[i] != ' ' && l[i] != '\t' && l[i] != '\r')
            i++;
        if (k == 3)
            return -1;
        p[k] = l + s;
        pl[k++] = i - s;
    }
    if (k != 2)
        return -1;
    *a = p[0]; *al = pl[0]; *b = p[1]; *bl = pl[1];
    return 0;
}

/* Adds merges from lines 1..VKL_CLIP_MAX_MERGES of text (line 0 is the
 * "#version" header), as both CLIP and transformers slice them. */
static int add_merges(vkl_clip_tokenizer *t, const char *text, size_t len, const char *what,
                      int build_vocab, vkl_err *e)
{
    size_t pos = 0, line = 0;
    uint32_t rank = 0;
    while (pos <= len && rank < VKL_CLIP_MAX_MERGES) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - text) : len;
        if (line > 0) {
            const char *a, *b;
            size_t al, bl;
            if (!nl && end == pos)
                break; /* trailing newline at end of file */
            if (split_merge(text + pos, end - pos, &a, &al, &b, &bl))
                return vkl_fail(e, "%s line %zu: expected two tokens separated by a space", what, line + 1);
            if (build_vocab) {
                char buf[512];
                if (al + bl > sizeof buf)
                    return vkl_fail(e, "%s line %zu: token too long", what, line + 1);
                memcpy(buf, a, al);
                memcpy(buf + al, b, bl);
                if (vkl_clip_vocab_add(t, buf, al + bl, 512 + (int32_t)rank))
                    return vkl_fail(e, "%s: out of memory", what);
            }
            if (vkl_clip_merge_add(t, a, al, b, bl, rank, e)) {
                vkl_err_prefix(e, "%s line %zu: ", what, line + 1);
                return -1;
            }
            rank++;
        }
        line++;
        if (!nl)
            break;
        pos = end + 1;
    }
    if (rank < VKL_CLIP_MAX_MERGES)
        return vkl_fail(e, "%s: only %u merges, CLIP needs %d (truncated or not a CLIP vocabulary?)",
                        what, rank, VKL_CLIP_MAX_MERGES);
    return 0;
}

static int validate_utf8(const char *s, size_t n, const char *what, vkl_err *e)
{
    vkl_ucbuf tmp = {0};
    int rc = vkl_utf8_decode(s, n, &tmp, e);
    vkl_ucbuf_free(&tmp);
    if (rc)
        vkl_err_prefix(e, "%s: ", what);
    return rc;
}

int vkl_clip_load_folder(vkl_clip_tokenizer *t, const char *dir, vkl_err *e)
{
    char vpath[4096], mpath[4096];
    if (join(vpath, sizeof vpath, dir, "vocab.json", e) || join(mpath, sizeof mpath, dir, "merges.txt", e))
        return -1;
    char *buf;
    size_t len;
    if (vkl_read_text_file(vpath, VKL_CLIP_MAX_FILE_BYTES, &buf, &len, e))
        return -1;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return vkl_fail(e, "%s: not a JSON object (corrupt vocab.json?)", vpath);
    }
    int rc = 0;
    for (cJSON *it = root->child; it; it = it->next) {
        double d = it->valuedouble;
        if (!cJSON_IsNumber(it) || d < 0 || d >= (1 << 24) || d != (double)(int32_t)d) {
            rc = vkl_fail(e, "%s: token \"%.64s\" has no valid id", vpath, it->string ? it->string : "");
            break;
        }
        if (vkl_clip_vocab_add(t, it->string, strlen(it->string), (int32_t)d)) {
            rc = vkl_fail(e, "%s: out of memory", vpath);
            break;
        }
    }
    cJSON_Delete(root);
    if (rc || vkl_clip_vocab_finish(t, vpath, e))
        return -1;
    if (vkl_read_text_file(mpath, VKL_CLIP_MAX_FILE_BYTES, &buf, &len, e))
        return -1;
    rc = validate_utf8(buf, len, mpath, e);
    if (!rc)
        rc = add_merges(t, buf, len, mpath, 0, e);
    free(buf);
    return rc;
}

int vkl_clip_load_bpe_gz(vkl_clip_tokenizer *t, const char *file, vkl_err *e)
{
    gzFile gz = gzopen(file, "rb");
    if (!gz)
        return vkl_fail(e, "%s: %s", file, strerror(errno ? errno : ENOMEM));
    /* Only the first 48895 lines are used: stop reading once they are in. */
    size_t cap = 1 << 20, n = 0, lines = 0;
    char *b = malloc(cap);
    int rc = 0;
    while (b && lines <= VKL_CLIP_MAX_MERGES) {
        if (n == cap) {
            if (cap >= VKL_CLIP_MAX_FILE_BYTES) {
                rc = vkl_fail(e, "%s: over %zu MiB before %d merges, not a CLIP vocabulary", file,
                              (size_t)(VKL_CLIP_MAX_FILE_BYTES >> 20), VKL_CLIP_MAX_MERGES);
                break;
            }
            char *nb = realloc(b, cap * 2);
            if (!nb)
                break;
            b = nb;
            cap *= 2;
        }
        int r = gzread(gz, b + n, (unsigned)(cap - n < (1u << 20) ? cap - n : (1u << 20)));
        if (r < 0) {
            int zerr;
            const char *msg = gzerror(gz, &zerr);
            rc = vkl_fail(e, "%s: corrupt gzip data (%s)", file, msg);
            break;
        }
        if (r == 0)
            break;
        for (int i = 0; i < r; i++)
            lines += b[n + (size_t)i] == '\n';
        n += (size_t)r;
    }
    gzclose(gz);
    if (!b)
        return vkl_fail(e, "%s: out of memory", file);
    if (!rc)
        rc = validate_utf8(b, n, file, e);
    if (!rc) {
        /* Ids as openai/CLIP's SimpleTokenizer numbers them: 256 byte symbols,
         * the same with </w>, one per merge, then the two specials. */
        for (int i = 0; i < 256 && !rc; i++) {
            unsigned char s[8];
            size_t k = vkl_utf8_put(vkl_clip_byte_cp(vkl_clip_byte_order(i)), s);
            memcpy(s + k, "</w>", 4);
            if (vkl_clip_vocab_add(t, (const char *)s, k, i) ||
                vkl_clip_vocab_add(t, (const char *)s, k + 4, 256 + i))
                rc = vkl_fail(e, "out of memory");
        }
    }
    if (!rc)
        rc = add_merges(t, b, n, file, 1, e);
    free(b);
    if (rc)
        return -1;
    int32_t next = 512 + VKL_CLIP_MAX_MERGES;
    if (vkl_clip_vocab_add(t, "<|startoftext|>", 15, next) || vkl_clip_vocab_add(t, "<|endoftext|>", 13, next + 1))
        return vkl_fail(e, "out of memory");
    return vkl_clip_vocab_finish(t, file, e);
}

static int ends_with(const char *s, const char *tail)
{
    size_t n = strlen(s), k = strlen(tail);
    return n >= k && strcmp(s + n - k, tail) == 0;
}

static int load_dir(vkl_clip_tokenizer *t, const char *dir, vkl_err *e)
{
    if (folder_has(dir, "vocab.json") && folder_has(dir, "merges.txt"))
        return vkl_clip_load_folder(t, dir, e) || vkl_clip_pad_from_folder(t, dir, e) ? -1 : 0;
    char file[4096], config[4096];
    if (join(file, sizeof file, dir, "tokenizer.json", e) || join(config, sizeof config, dir, "tokenizer_config.json", e))
        return -1;
    return vkl_wl_load(t, file, config, e);
}

int vkl_clip_tokenizer_load(vkl_clip_tokenizer **out, const char *path, vkl_err *e)
{
    char where[4096];
    *out = NULL;
    if (vkl_clip_vocab_resolve(path, where, sizeof where, e))
        return -1;
    vkl_clip_tokenizer *t = calloc(1, sizeof *t);
    if (!t || !(t->source = strdup(where))) {
        free(t);
        return vkl_fail(e, "out of memory loading %s", where);
    }
    t->pad = -1;
    int rc = is_dir(where) ? load_dir(t, where, e)
             : ends_with(where, ".json") ? vkl_wl_load(t, where, NULL, e)
                                         : vkl_clip_load_bpe_gz(t, where, e);
    if (rc) {
        vkl_clip_tokenizer_free(t);
        return -1;
    }
    if (t->pad < 0)
        t->pad = t->eos; /* no pad_token in a config: pad with EOS, as SD 1.x */
    *out = t;
    return 0;
}

void vkl_clip_tokenizer_free(vkl_clip_tokenizer *t)
{
    if (!t)
        return;
    free(t->source);
    vkl_ucbuf_free(&t->pad_text);
    vkl_strmap_free(&t->vocab);
    free(t->strs);
    free(t->str_off);
    free(t->mkey);
    free(t->mrank);
    free(t->mres);
    vkl_strmap_free(&t->cache);
    vkl_i32buf_free(&t->pool);
    for (size_t i = 0; i < t->n_added; i++)
        free(t->added[i]);
    free(t->added);
    free(t->added_id);
    free(t);
}
