/* AUTOMATIC1111's emphasis syntax (modules/prompt_parser.py,
 * parse_prompt_attention), reproduced token for token, including its quirks:
 * a lone backslash disappears, a ":1.2)" or ")" with no open "(" stays text,
 * and weights are products of doubles in the same order. */
#include <stdlib.h>
#include <string.h>

#include "clip_internal.h"

typedef struct {
    vkl_prompt_span *v;
    size_t n, cap;
} spanbuf;

static int add(spanbuf *b, const char *s, size_t len, double w)
{
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 16;
        vkl_prompt_span *v = realloc(b->v, cap * sizeof *v);
        if (!v)
            return -1;
        b->v = v;
        b->cap = cap;
    }
    char *t = malloc(len + 1);
    if (!t)
        return -1;
    memcpy(t, s, len);
    t[len] = 0;
    b->v[b->n].text = t;
    b->v[b->n].weight = w;
    b->n++;
    return 0;
}

/* Code point at p (valid UTF-8 assumed, checked by the caller) and its length. */
static uint32_t cp_at(const char *p, size_t *len)
{
    vkl_ucbuf one = {0};
    const unsigned char *u = (const unsigned char *)p;
    size_t n = u[0] < 0x80 ? 1 : u[0] < 0xE0 ? 2 : u[0] < 0xF0 ? 3 : 4;
    uint32_t c = u[0];
    if (vkl_utf8_decode(p, n, &one, NULL) == 0 && one.n == 1)
        c = one.v[0];
    vkl_ucbuf_free(&one);
    *len = n;
    return c;
}

/* Python's \w: letters, numbers, underscore. */
static int is_word(uint32_t c)
{
    int k = vkl_uc_class(c);
    return c == '_' || k == VKL_UC_LETTER || k == VKL_UC_NUMBER;
}

static size_t prev_start(const char *s, size_t i)
{
    size_t j = i - 1;
    while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80)
        j--;
    return j;
}

static uint32_t cp_before(const char *s, size_t i)
{
    size_t l;
    return cp_at(s + prev_start(s, i), &l);
}

static int py_space_at(const char *s, size_t i, size_t end, size_t *len)
{
    if (i >= end)
        return 0;
    uint32_t c = cp_at(s + i, len);
    return vkl_uc_is_py_space(c);
}

/* re.split(r"\s*\bBREAK\b\s*", text): appends the parts with BREAK spans between. */
static int add_text(spanbuf *b, const char *s, size_t len)
{
    size_t part = 0, i = 0;
    while (i + 5 <= len) {
        if (memcmp(s + i, "BREAK", 5) != 0) {
            i++;
            continue;
        }
        size_t l;
        int left_ok = i == 0 || !is_word(cp_before(s, i));
        int right_ok = i + 5 == len || !is_word(cp_at(s + i + 5, &l));
        if (!left_ok || !right_ok) {
            i++;
            continue;
        }
        size_t ms = i; /* extend over whitespace on the left, not into the previous part */
        while (ms > part) {
            size_t p = prev_start(s, ms);
            if (!py_space_at(s, p, len, &l))
                break;
            ms = p;
        }
        size_t me = i + 5;
        while (py_space_at(s, me, len, &l))
            me += l;
        if (add(b, s + part, ms - part, 1.0) || add(b, "BREAK", 5, -1.0))
            return -1;
        part = i = me;
    }
    return add(b, s + part, len - part, 1.0);
}

static void multiply(spanbuf *b, size_t from, double m)
{
    for (size_t p = from; p < b->n; p++)
        b->v[p].weight *= m;
}

/* ":\s*([+-]?[.\d]+)\s*\)" at s[i]; returns the match length, 0 if none. */
static size_t weight_close(const char *s, size_t i, size_t len, size_t *ns, size_t *ne)
{
    size_t j = i + 1, l;
    while (py_space_at(s, j, len, &l))
        j += l;
    *ns = j;
    if (j < len && (s[j] == '+' || s[j] == '-'))
        j++;
    size_t d = j;
    while (j < len && ((s[j] >= '0' && s[j] <= '9') || s[j] == '.'))
        j++;
    if (j == d)
        return 0;
    *ne = j;
    while (py_space_at(s, j, len, &l))
        j += l;
    if (j >= len || s[j] != ')')
        return 0;
    return j + 1 - i;
}

void vkl_prompt_spans_free(vkl_prompt_span *spans, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(spans[i].text);
    free(spans);
}

int vkl_prompt_parse(const char *s, vkl_prompt_span **spans, size_t *n, vkl_err *e)
{
    const double round_m = 1.1, square_m = 1 / 1.1;
    size_t len = strlen(s);
    spanbuf b = {0};
    size_t *round = malloc((len + 1) * sizeof *round), *square = malloc((len + 1) * sizeof *square);
    size_t nr = 0, nsq = 0;
    int rc = -1;
    *spans = NULL;
    *n = 0;
    {
        vkl_ucbuf check = {0};
        int bad = vkl_utf8_decode(s, len, &check, e);
        vkl_ucbuf_free(&check);
        if (bad)
            goto done;
    }
    if (!round || !square)
        goto oom;
    for (size_t i = 0; i < len;) {
        char c = s[i];
        size_t ns, ne, m;
        if (c == '\\') {
            /* "\(" "\)" "\[" "\]" "\\" keep the second char; a lone "\" vanishes */
            if (i + 1 < len && strchr("()[]\\", s[i + 1])) {
                if (add(&b, s + i + 1, 1, 1.0))
                    goto oom;
                i += 2;
            } else {
                if (add(&b, "", 0, 1.0))
                    goto oom;
                i += 1;
            }
        } else if (c == '(') {
            round[nr++] = b.n;
            i++;
        } else if (c == '[') {
            square[nsq++] = b.n;
            i++;
        } else if (c == ':' && (m = weight_close(s, i, len, &ns, &ne)) != 0) {
            if (nr) {
                char num[64], *end;
                if (ne - ns >= sizeof num)
                    goto badnum;
                memcpy(num, s + ns, ne - ns);
                num[ne - ns] = 0;
                double w = strtod(num, &end);
                if (*end || end == num)
                    goto badnum;
                multiply(&b, round[--nr], w);
            } else if (add_text(&b, s + i, m)) {
                goto oom;
            }
            i += m;
            continue;
        badnum:
            rc = vkl_fail(e, "prompt weight \"%.*s\" at byte %zu is not a number", (int)(ne - ns), s + ns, ns);
            goto done;
        } else if (c == ')' && nr) {
            multiply(&b, round[--nr], round_m);
            i++;
        } else if (c == ']' && nsq) {
            multiply(&b, square[--nsq], square_m);
            i++;
        } else {
            size_t j = i;
            if (c == ':' || c == ')' || c == ']')
                j++;
            else
                while (j < len && !strchr("\\()[]:", s[j]))
                    j++;
            if (add_text(&b, s + i, j - i))
                goto oom;
            i = j;
        }
    }
    for (size_t k = 0; k < nr; k++)
        multiply(&b, round[k], round_m);
    for (size_t k = 0; k < nsq; k++)
        multiply(&b, square[k], square_m);
    if (b.n == 0 && add(&b, "", 0, 1.0))
        goto oom;
    /* merge runs of identical weights */
    size_t w = 0;
    for (size_t k = 1; k < b.n; k++) {
        if (b.v[k].weight == b.v[w].weight) {
            size_t la = strlen(b.v[w].text), lb = strlen(b.v[k].text);
            char *t = realloc(b.v[w].text, la + lb + 1);
            if (!t)
                goto oom;
            memcpy(t + la, b.v[k].text, lb + 1);
            b.v[w].text = t;
            free(b.v[k].text);
        } else {
            b.v[++w] = b.v[k];
        }
    }
    b.n = w + 1;
    *spans = b.v;
    *n = b.n;
    b.v = NULL;
    b.n = 0;
    rc = 0;
    goto done;
oom:
    rc = vkl_fail(e, "out of memory parsing a prompt of %zu bytes", len);
done:
    vkl_prompt_spans_free(b.v, b.n);
    free(round);
    free(square);
    return rc;
}
