#include "lm_stream.h"

#include <stdlib.h>
#include <string.h>

/* Decodes all ids again: SentencePiece's and llama2.c's text of a piece
 * depends on its neighbours, so the text so far is recomputed rather than
 * appended to; lengths stay small next to a decode step. */
static int redecode(vkl_app_lm_stream *s)
{
    s->len = 0;
    return vkl_app_lm_tok_text(s->tok, s->all, s->n, &s->text, &s->len, &s->cap);
}

int vkl_app_lm_stream_start(vkl_app_lm_stream *s, const vkl_app_lm_tok *tok, const int32_t *prompt, int n_prompt,
                            int max_new, char *const *stops, int n_stops, FILE *out, vkl_err *e)
{
    *s = (vkl_app_lm_stream){.tok = tok, .n = n_prompt, .n_prompt = n_prompt, .stops = stops, .n_stops = n_stops,
                             .out = out};
    s->all = malloc(sizeof(int32_t) * (size_t)(n_prompt + max_new));
    if (!s->all) return vkl_fail(e, "out of host memory");
    memcpy(s->all, prompt, sizeof(int32_t) * (size_t)n_prompt);
    if (redecode(s)) return vkl_fail(e, "out of host memory");
    s->prompt_len = s->len;
    return 0;
}

static const char *generated(const vkl_app_lm_stream *s, size_t *len)
{
    size_t p = s->prompt_len < s->len ? s->prompt_len : s->len;
    *len = s->len - p;
    return s->text ? s->text + p : "";
}

/* End of the last whole UTF-8 character at or before n: a lead byte whose
 * sequence runs past n is held back. */
static size_t whole_chars(const char *g, size_t n)
{
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = (unsigned char)g[n - back];
        if ((c & 0xC0) == 0x80) continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        return need > back ? n - back : n;
    }
    return n;
}

static void print_upto(vkl_app_lm_stream *s, size_t end)
{
    size_t glen;
    const char *g = generated(s, &glen);
    if (!s->out || end <= s->printed) return;
    char *t = vkl_utf8_lossy(g + s->printed, end - s->printed);
    if (t) fputs(t, s->out);
    free(t);
    fflush(s->out);
    s->printed = end;
}

/* First occurrence of pat in g (which may hold NUL bytes), or glen. */
static size_t find(const char *g, size_t glen, const char *pat, size_t n)
{
    for (size_t i = 0; n <= glen && i <= glen - n; i++)
        if (g[i] == pat[0] && !memcmp(g + i, pat, n)) return i;
    return glen;
}

int vkl_app_lm_stream_token(vkl_app_lm_stream *s, int32_t id)
{
    s->all[s->n++] = id;
    if (redecode(s)) return -1;
    size_t glen;
    const char *g = generated(s, &glen);
    size_t safe = glen;
    for (int k = 0; k < s->n_stops; k++) {
        size_t sl = strlen(s->stops[k]), at = find(g, glen, s->stops[k], sl);
        if (at < glen && (!s->stopped || at < s->cut)) {
            s->stopped = 1;
            s->cut = at;
        }
        /* hold back a tail that could still grow into this stop string */
        for (size_t m = sl - 1; m > 0; m--)
            if (m <= glen && !memcmp(g + glen - m, s->stops[k], m)) {
                if (glen - m < safe) safe = glen - m;
                break;
            }
    }
    if (s->stopped) {
        print_upto(s, s->cut);
        return 1;
    }
    print_upto(s, whole_chars(g, safe));
    return 0;
}

void vkl_app_lm_stream_finish(vkl_app_lm_stream *s)
{
    size_t glen;
    generated(s, &glen);
    print_upto(s, s->stopped ? s->cut : glen);
}

char *vkl_app_lm_stream_text(const vkl_app_lm_stream *s)
{
    size_t glen;
    const char *g = generated(s, &glen);
    return vkl_utf8_lossy(g, s->stopped ? s->cut : glen);
}

void vkl_app_lm_stream_free(vkl_app_lm_stream *s)
{
    free(s->all);
    free(s->text);
    s->all = NULL;
    s->text = NULL;
}
