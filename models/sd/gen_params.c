/* A1111 "parameters" text: writer and reader. See gen_params.h for the shape. */
#include "sd/gen_params.h"
#include "io/text.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

static char *xstrndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = 0;
    }
    return d;
}

/* ---- key/value storage ---- */

void vkl_gen_params_init(vkl_gen_params *p)
{
    memset(p, 0, sizeof *p);
    p->prompt = calloc(1, 1);
    p->negative_prompt = calloc(1, 1);
}

void vkl_gen_params_free(vkl_gen_params *p)
{
    if (!p) return;
    for (int i = 0; i < p->count; i++) {
        free(p->keys[i]);
        free(p->values[i]);
    }
    free(p->keys);
    free(p->values);
    free(p->prompt);
    free(p->negative_prompt);
    memset(p, 0, sizeof *p);
}

int vkl_gen_params_set_prompts(vkl_gen_params *p, const char *prompt, const char *negative,
                               vkl_err *e)
{
    char *a = strdup(prompt ? prompt : ""), *b = strdup(negative ? negative : "");
    if (!a || !b) {
        free(a);
        free(b);
        return vkl_fail(e, "out of memory for the prompts");
    }
    free(p->prompt);
    free(p->negative_prompt);
    p->prompt = a;
    p->negative_prompt = b;
    return 0;
}

/* \w in Python's Unicode regexes: letters, digits, '_' - and, for us, any
 * UTF-8 byte >= 0x80 so non-English keys pass through. */
static int is_word(unsigned char c) { return isalnum(c) || c == '_' || c >= 0x80; }
static int is_key_char(unsigned char c) { return is_word(c) || c == ' ' || c == '-' || c == '/'; }

int vkl_gen_params_set(vkl_gen_params *p, const char *key, const char *value, vkl_err *e)
{
    size_t kl = key ? strlen(key) : 0;
    int ok = kl >= 2 && is_word((unsigned char)key[0]);
    for (size_t i = 1; ok && i < kl; i++) ok = is_key_char((unsigned char)key[i]);
    if (!ok)
        return vkl_fail(e, "generation parameter key '%s' is not of the form A1111 reads "
                        "(a word character, then word characters, spaces, '-' or '/')",
                        key ? key : "(null)");
    if (!value) value = "";
    char *v = strdup(value);
    if (!v) return vkl_fail(e, "out of memory for parameter '%s'", key);
    for (int i = 0; i < p->count; i++) {
        if (!strcmp(p->keys[i], key)) {
            free(p->values[i]);
            p->values[i] = v;
            return 0;
        }
    }
    char *k = strdup(key);
    char **nk = realloc(p->keys, (size_t)(p->count + 1) * sizeof *nk);
    if (nk) p->keys = nk;
    char **nv = realloc(p->values, (size_t)(p->count + 1) * sizeof *nv);
    if (nv) p->values = nv;
    if (!k || !nk || !nv) {
        free(k);
        free(v);
        return vkl_fail(e, "out of memory for parameter '%s'", key);
    }
    p->keys[p->count] = k;
    p->values[p->count] = v;
    p->count++;
    return 0;
}

const char *vkl_gen_params_get(const vkl_gen_params *p, const char *key)
{
    for (int i = 0; i < p->count; i++)
        if (!strcmp(p->keys[i], key)) return p->values[i];
    return NULL;
}

int vkl_gen_params_size(const vkl_gen_params *p, int *width, int *height)
{
    const char *v = vkl_gen_params_get(p, "Size");
    int w, h, n = 0;
    if (!v || sscanf(v, "%d%*[x]%d%n", &w, &h, &n) != 2 || v[n] != 0 || w < 1 || h < 1) return -1;
    *width = w;
    *height = h;
    return 0;
}

/* ---- writing ---- */

/* A1111 quotes a value holding ',', ':' or '\n' with json.dumps(ensure_ascii=False).
 * We also quote values with leading/trailing blanks or a leading '"', which
 * its parser would otherwise trim or misread; it still reads them back. */
static int needs_quote(const char *v)
{
    size_t n = strlen(v);
    if (n == 0) return 0;
    if (strpbrk(v, ",:\n")) return 1;
    return v[0] == '"' || isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1]);
}

static void put_json_string(vkl_strbuf *b, const char *v)
{
    vkl_strbuf_puts(b, "\"");
    for (const unsigned char *s = (const unsigned char *)v; *s; s++) {
        switch (*s) {
        case '"': vkl_strbuf_puts(b, "\\\""); break;
        case '\\': vkl_strbuf_puts(b, "\\\\"); break;
        case '\n': vkl_strbuf_puts(b, "\\n"); break;
        case '\r': vkl_strbuf_puts(b, "\\r"); break;
        case '\t': vkl_strbuf_puts(b, "\\t"); break;
        case '\b': vkl_strbuf_puts(b, "\\b"); break;
        case '\f': vkl_strbuf_puts(b, "\\f"); break;
        default:
            if (*s < 0x20) vkl_strbuf_printf(b, "\\u%04x", *s);
            else vkl_strbuf_putn(b, (const char *)s, 1);
        }
    }
    vkl_strbuf_puts(b, "\"");
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

int vkl_gen_params_format(const vkl_gen_params *p, char **out, vkl_err *e)
{
    *out = NULL;
    vkl_strbuf b = {0};
    vkl_strbuf_puts(&b, p->prompt ? p->prompt : "");
    if (p->negative_prompt && p->negative_prompt[0]) {
        vkl_strbuf_puts(&b, "\nNegative prompt: ");
        vkl_strbuf_puts(&b, p->negative_prompt);
    }
    vkl_strbuf_puts(&b, "\n");
    for (int i = 0; i < p->count; i++) {
        if (i) vkl_strbuf_puts(&b, ", ");
        if (!strcmp(p->keys[i], p->values[i])) { /* A1111 writes a flag whose value is its name bare */
            vkl_strbuf_puts(&b, p->keys[i]);
            continue;
        }
        vkl_strbuf_puts(&b, p->keys[i]);
        vkl_strbuf_puts(&b, ": ");
        if (needs_quote(p->values[i])) put_json_string(&b, p->values[i]);
        else vkl_strbuf_puts(&b, p->values[i]);
    }
    if (b.failed || !b.s) {
        free(b.s);
        return vkl_fail(e, "out of memory formatting generation parameters");
    }
    /* Python's str.strip() */
    size_t lo = 0, hi = b.len;
    while (lo < hi && is_space(b.s[lo])) lo++;
    while (hi > lo && is_space(b.s[hi - 1])) hi--;
    memmove(b.s, b.s + lo, hi - lo);
    b.s[hi - lo] = 0;
    *out = b.s;
    return 0;
}

/* Shortest decimal that reads back as the same double; integral values have
 * no ".0", as A1111 shows "CFG scale: 7" and "Denoising strength: 0.75". */
static void fmt_num(char *buf, size_t n, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

int vkl_gen_params_from_settings(const vkl_gen_settings *s, vkl_gen_params *p, vkl_err *e)
{
    vkl_gen_params_init(p);
    char num[64];
    int rc = vkl_gen_params_set_prompts(p, s->prompt, s->negative_prompt, e);
#define SET(k, v) do { if (!rc) rc = vkl_gen_params_set(p, k, v, e); } while (0)
    snprintf(num, sizeof num, "%d", s->steps);
    SET("Steps", num);
    if (s->sampler) SET("Sampler", s->sampler);
    if (s->schedule_type) SET("Schedule type", s->schedule_type);
    fmt_num(num, sizeof num, s->cfg_scale);
    SET("CFG scale", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)s->seed);
    SET("Seed", num);
    snprintf(num, sizeof num, "%dx%d", s->width, s->height);
    SET("Size", num);
    if (s->model_hash) SET("Model hash", s->model_hash);
    if (s->model) SET("Model", s->model);
    if (s->vae_hash) SET("VAE hash", s->vae_hash);
    if (s->vae) SET("VAE", s->vae);
    if (s->denoising_strength >= 0) {
        fmt_num(num, sizeof num, s->denoising_strength);
        SET("Denoising strength", num);
    }
    if (s->clip_skip > 1) {
        snprintf(num, sizeof num, "%d", s->clip_skip);
        SET("Clip skip", num);
    }
    if (s->nloras > 0 && !rc) {
        vkl_strbuf b = {0};
        for (int i = 0; i < s->nloras; i++) {
            if (i) vkl_strbuf_puts(&b, ", ");
            for (const char *c = s->loras[i].name ? s->loras[i].name : ""; *c; c++)
                if (*c != ':' && *c != ',') vkl_strbuf_putn(&b, c, 1);
            vkl_strbuf_puts(&b, ": ");
            vkl_strbuf_puts(&b, s->loras[i].hash ? s->loras[i].hash : "");
        }
        if (b.failed) rc = vkl_fail(e, "out of memory for Lora hashes");
        SET("Lora hashes", b.s);
        free(b.s);
    }
    if (s->version) SET("Version", s->version);
#undef SET
    if (rc) vkl_gen_params_free(p);
    return rc;
}

/* ---- reading ---- */

static void put_utf8(vkl_strbuf *b, unsigned cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) u[0] = (char)cp, n = 1;
    else if (cp < 0x800) u[0] = (char)(0xc0 | cp >> 6), u[1] = (char)(0x80 | (cp & 0x3f)), n = 2;
    else if (cp < 0x10000)
        u[0] = (char)(0xe0 | cp >> 12), u[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
        u[2] = (char)(0x80 | (cp & 0x3f)), n = 3;
    else
        u[0] = (char)(0xf0 | cp >> 18), u[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), u[3] = (char)(0x80 | (cp & 0x3f)), n = 4;
    vkl_strbuf_putn(b, u, n);
}

static int hex4(const char *s, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)s[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return -1;
        *v = *v << 4 | (unsigned)d;
    }
    return 0;
}

/* json.loads of a string literal s[0..n) (quotes included); NULL if invalid,
 * in which case A1111 keeps the text as it was. */
static char *json_unquote(const char *s, size_t n)
{
    if (n < 2 || s[0] != '"' || s[n - 1] != '"') return NULL;
    vkl_strbuf b = {0};
    vkl_strbuf_puts(&b, "");
    for (size_t i = 1; i < n - 1; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c < 0x20) goto bad; /* JSON forbids both unescaped */
        if (c != '\\') {
            vkl_strbuf_putn(&b, (const char *)&s[i], 1);
            continue;
        }
        if (++i >= n - 1) goto bad;
        switch (s[i]) {
        case '"': vkl_strbuf_puts(&b, "\""); break;
        case '\\': vkl_strbuf_puts(&b, "\\"); break;
        case '/': vkl_strbuf_puts(&b, "/"); break;
        case 'b': vkl_strbuf_puts(&b, "\b"); break;
        case 'f': vkl_strbuf_puts(&b, "\f"); break;
        case 'n': vkl_strbuf_puts(&b, "\n"); break;
        case 'r': vkl_strbuf_puts(&b, "\r"); break;
        case 't': vkl_strbuf_puts(&b, "\t"); break;
        case 'u': {
            unsigned cp, lo;
            /* content ends at n - 2; the four hex digits are s[i+1..i+4] */
            if (i + 4 > n - 2 || hex4(s + i + 1, &cp)) goto bad;
            i += 4;
            if (cp >= 0xd800 && cp < 0xdc00 && i + 6 <= n - 2 && s[i + 1] == '\\' &&
                s[i + 2] == 'u' && !hex4(s + i + 3, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                i += 6;
            }
            put_utf8(&b, cp);
            break;
        }
        default: goto bad;
        }
    }
    if (b.failed) goto bad;
    return b.s;
bad:
    free(b.s);
    return NULL;
}

typedef struct {
    const char *k, *v;
    size_t kn, vn;
} kv_span;

/* One match of A1111's re_param at exactly pos:
 *   \s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)
 * returns the end of the match, or NULL. */
static const char *match_param(const char *pos, kv_span *m)
{
    const char *s = pos;
    while (is_space(*s)) s++;
    if (!is_word((unsigned char)*s)) return NULL;
    const char *k = s++;
    if (!is_key_char((unsigned char)*s)) return NULL;
    while (is_key_char((unsigned char)*s)) s++;
    if (*s != ':') return NULL;
    m->k = k;
    m->kn = (size_t)(s - k);
    s++;
    while (is_space(*s)) s++;
    if (*s == '"') {
        /* the quoted branch: at least one element, then a closing quote
         * followed by ',' or the end */
        const char *q = s + 1;
        int elems = 0;
        for (;;) {
            if (*q == '\\' && q[1] && q[1] != '\n') q += 2, elems++;
            else if (*q && *q != '\\' && *q != '"') q++, elems++;
            else break;
        }
        if (*q == '"' && elems > 0 && (q[1] == ',' || q[1] == 0)) {
            m->v = s;
            m->vn = (size_t)(q + 1 - s);
            return q[1] == ',' ? q + 2 : q + 1;
        }
    }
    const char *v = s;
    while (*s && *s != ',') s++;
    m->v = v;
    m->vn = (size_t)(s - v);
    return *s == ',' ? s + 1 : s;
}

/* re.findall over line: try a match at each position, skip a character on failure. */
static int find_params(const char *line, kv_span *out, int max)
{
    int n = 0;
    const char *p = line;
    while (*p) {
        kv_span m;
        const char *end = match_param(p, &m);
        if (!end) {
            p++;
            continue;
        }
        if (out && n < max) out[n] = m;
        n++;
        if (end == p) p++; /* an empty match cannot happen (key needs 2 chars), but never loop */
        else p = end;
    }
    return n;
}

static char *strip_dup(const char *s, size_t n)
{
    while (n && is_space(*s)) s++, n--;
    while (n && is_space(s[n - 1])) n--;
    return xstrndup(s, n);
}

int vkl_gen_params_parse(const char *text, vkl_gen_params *out, vkl_err *e)
{
    vkl_gen_params_init(out);
    if (!out->prompt || !out->negative_prompt) goto oom;
    char *all = strip_dup(text ? text : "", text ? strlen(text) : 0);
    if (!all) goto oom;
    /* split on '\n' */
    int nlines = 1;
    for (char *c = all; *c; c++) nlines += *c == '\n';
    char **lines = malloc((size_t)nlines * sizeof *lines);
    if (!lines) {
        free(all);
        goto oom;
    }
    int li = 0;
    lines[li++] = all;
    for (char *c = all; *c; c++)
        if (*c == '\n') *c = 0, lines[li++] = c + 1;

    const char *last = lines[nlines - 1];
    int nparam = find_params(last, NULL, 0);
    int prompt_lines = nparam >= 3 ? nlines - 1 : nlines;
    vkl_strbuf pr = {0}, neg = {0};
    vkl_strbuf_puts(&pr, "");
    vkl_strbuf_puts(&neg, "");
    int in_neg = 0;
    for (int i = 0; i < prompt_lines; i++) {
        char *line = strip_dup(lines[i], strlen(lines[i]));
        if (!line) {
            pr.failed = 1;
            break;
        }
        const char *l = line;
        char *tail = NULL;
        if (!strncmp(l, "Negative prompt:", 16)) {
            in_neg = 1;
            tail = strip_dup(l + 16, strlen(l + 16));
            l = tail ? tail : "";
        }
        vkl_strbuf *b = in_neg ? &neg : &pr;
        if (b->len) vkl_strbuf_puts(b, "\n");
        vkl_strbuf_puts(b, l);
        free(tail);
        free(line);
    }
    int rc = 0;
    if (pr.failed || neg.failed) {
        rc = -1;
    } else {
        free(out->prompt);
        free(out->negative_prompt);
        out->prompt = pr.s;
        out->negative_prompt = neg.s;
        pr.s = neg.s = NULL;
    }
    free(pr.s);
    free(neg.s);
    if (!rc && nparam >= 3) {
        kv_span *m = malloc((size_t)nparam * sizeof *m);
        if (!m) rc = -1;
        for (int i = 0; !rc && i < nparam; i++) {
            if (i == 0) find_params(last, m, nparam);
            char *k = xstrndup(m[i].k, m[i].kn);
            char *v = NULL;
            if (m[i].vn >= 2 && m[i].v[0] == '"' && m[i].v[m[i].vn - 1] == '"')
                v = json_unquote(m[i].v, m[i].vn);
            if (!v) v = xstrndup(m[i].v, m[i].vn);
            /* keys from the text may end in spaces ("Steps :") - keep them as
             * A1111 does, but store through the same validation */
            if (!k || !v) rc = -1;
            else if (vkl_gen_params_set(out, k, v, e)) rc = -2;
            free(k);
            free(v);
        }
        free(m);
    }
    free(lines);
    free(all);
    if (rc == -1) goto oom;
    if (rc) {
        vkl_gen_params_free(out);
        return -1;
    }
    return 0;
oom:
    vkl_gen_params_free(out);
    return vkl_fail(e, "out of memory parsing generation parameters");
}
