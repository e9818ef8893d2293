/* The heap-driven BPE merge against the rule it replaces, written out here
 * as the plain rescanning loop: on random strings over a small alphabet with
 * a merge table full of equal scores (so the leftmost-on-ties rule is
 * exercised on nearly every merge), both must leave the same symbols. */
#include "vkl_test.h"
#include "tokenizer/bpe_merge.h"

#include <stdlib.h>
#include <string.h>

#define MAXSYM 256
#define MAXLEN 4

typedef struct toy {
    char sym[MAXSYM][MAXLEN * 64 + 1];
} toy;

/* Every string of 2..MAXLEN letters merges, scored 0..3 by a hash; a few
 * strings (hash % 7 == 0) do not merge at all. */
static int toy_score(const char *s, float *score)
{
    size_t n = strlen(s);
    if (n < 2 || n > MAXLEN) return -1;
    unsigned h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    if (h % 7 == 0) return -1;
    *score = (float)(h % 4);
    return (int)(h % 1000);
}

static int toy_pair(void *user, int left, int right, float *score)
{
    toy *t = user;
    char buf[2 * (MAXLEN * 64) + 2];
    snprintf(buf, sizeof buf, "%s%s", t->sym[left], t->sym[right]);
    return toy_score(buf, score);
}

static void append(char *dst, const char *src)
{
    size_t la = strlen(dst), lb = strlen(src);
    memmove(dst + la, src, lb + 1);
}

static void toy_apply(void *user, int left, int right, int value)
{
    toy *t = user;
    (void)value;
    append(t->sym[left], t->sym[right]);
}

/* the rescanning loop: best score, leftmost on ties */
static int naive(char (*sym)[MAXLEN * 64 + 1], int n)
{
    for (;;) {
        int best = -1;
        float bs = 0;
        for (int i = 0; i + 1 < n; i++) {
            char buf[2 * (MAXLEN * 64) + 2];
            float sc;
            snprintf(buf, sizeof buf, "%s%s", sym[i], sym[i + 1]);
            if (toy_score(buf, &sc) >= 0 && (best < 0 || sc > bs)) {
                best = i;
                bs = sc;
            }
        }
        if (best < 0) return n;
        append(sym[best], sym[best + 1]);
        memmove(&sym[best + 1], &sym[best + 2], sizeof sym[0] * (size_t)(n - best - 2));
        n--;
    }
}

static void heap_merge_equals_rescanning(void **state)
{
    (void)state;
    static toy a, b;
    vkl_test_rng r;
    vkl_test_rng_seed(&r, 99);
    int order[MAXSYM], merges = 0;
    for (int round = 0; round < 400; round++) {
        int n = vkl_test_rng_int(&r, 1, 120);
        for (int i = 0; i < n; i++) {
            a.sym[i][0] = b.sym[i][0] = (char)('a' + vkl_test_rng_int(&r, 0, 2));
            a.sym[i][1] = b.sym[i][1] = 0;
        }
        int m = vkl_bpe_merge(n, toy_pair, toy_apply, &a, order);
        int want = naive(b.sym, n);
        assert_int_equal(m, want);
        for (int i = 0; i < m; i++) assert_string_equal(a.sym[order[i]], b.sym[i]);
        merges += n - m;
    }
    assert_true(merges > 1000); /* the table really merges */
    assert_int_equal(vkl_bpe_merge(0, toy_pair, toy_apply, &a, order), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(heap_merge_equals_rescanning)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
