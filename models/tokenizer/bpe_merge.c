#include "tokenizer/bpe_merge.h"

#include <stdlib.h>

typedef struct cand {
    float score;
    int left, right, value;
    unsigned vleft, vright; /* symbol versions when the pair was judged */
} cand;

/* higher score first, then the leftmost pair (symbol indices keep the text's order) */
static int before(const cand *a, const cand *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

typedef struct heap {
    cand *v;
    int n, cap;
} heap;

static int heap_push(heap *h, cand c)
{
    if (h->n == h->cap) {
        int cap = h->cap ? h->cap * 2 : 64;
        cand *v = realloc(h->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        h->v = v;
        h->cap = cap;
    }
    int i = h->n++;
    while (i > 0 && before(&c, &h->v[(i - 1) / 2])) {
        h->v[i] = h->v[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h->v[i] = c;
    return 0;
}

static cand heap_pop(heap *h)
{
    cand top = h->v[0], last = h->v[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c])) c++;
        if (!before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct syms {
    int *prev, *next;
    unsigned *ver; /* 0: merged away; bumped by every merge into the symbol */
} syms;

static int judge(heap *h, const syms *s, int left, int right, vkl_bpe_pair_fn pair, void *user)
{
    if (left < 0 || right < 0) return 0;
    float score = 0;
    int value = pair(user, left, right, &score);
    if (value < 0) return 0;
    return heap_push(h, (cand){score, left, right, value, s->ver[left], s->ver[right]});
}

int vkl_bpe_merge(int n, vkl_bpe_pair_fn pair, vkl_bpe_apply_fn apply, void *user, int *order)
{
    if (n <= 0) return 0;
    syms s = {malloc(sizeof(int) * (size_t)n), malloc(sizeof(int) * (size_t)n), malloc(sizeof(unsigned) * (size_t)n)};
    heap h = {0};
    int rc = -1;
    if (!s.prev || !s.next || !s.ver) goto done;
    for (int i = 0; i < n; i++) {
        s.prev[i] = i - 1;
        s.next[i] = i + 1 < n ? i + 1 : -1;
        s.ver[i] = 1;
    }
    for (int i = 0; i + 1 < n; i++)
        if (judge(&h, &s, i, i + 1, pair, user)) goto done;
    while (h.n) {
        cand c = heap_pop(&h);
        if (!s.ver[c.left] || s.ver[c.left] != c.vleft || s.ver[c.right] != c.vright || s.next[c.left] != c.right)
            continue; /* a neighbouring merge changed this pair */
        apply(user, c.left, c.right, c.value);
        int after = s.next[c.right];
        s.next[c.left] = after;
        if (after >= 0) s.prev[after] = c.left;
        s.ver[c.right] = 0;
        s.ver[c.left]++;
        if (judge(&h, &s, s.prev[c.left], c.left, pair, user) || judge(&h, &s, c.left, after, pair, user)) goto done;
    }
    rc = 0;
    for (int i = 0; i >= 0; i = s.next[i]) order[rc++] = i;
done:
    free(s.prev);
    free(s.next);
    free(s.ver);
    free(h.v);
    return rc;
}
