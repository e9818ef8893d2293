/* Unicode NFC: canonical decomposition, canonical ordering, canonical
 * composition (UAX #15), with Hangul handled arithmetically. */
#include "unicode.h"
#include "unicode_tables.h"

#define SBASE 0xAC00u
#define LBASE 0x1100u
#define VBASE 0x1161u
#define TBASE 0x11A7u
#define LCOUNT 19u
#define VCOUNT 21u
#define TCOUNT 28u
#define NCOUNT (VCOUNT * TCOUNT)
#define SCOUNT (LCOUNT * NCOUNT)

static const vkl_uc_triple *find_decomp(uint32_t cp)
{
    size_t lo = 0, hi = vkl_uc_decomp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (vkl_uc_decomp[mid].a == cp)
            return &vkl_uc_decomp[mid];
        if (vkl_uc_decomp[mid].a < cp)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static uint32_t compose_pair(uint32_t a, uint32_t b)
{
    if (a >= LBASE && a < LBASE + LCOUNT && b >= VBASE && b < VBASE + VCOUNT)
        return SBASE + ((a - LBASE) * VCOUNT + (b - VBASE)) * TCOUNT;
    if (a >= SBASE && a < SBASE + SCOUNT && (a - SBASE) % TCOUNT == 0 && b > TBASE &&
        b < TBASE + TCOUNT)
        return a + (b - TBASE);
    size_t lo = 0, hi = vkl_uc_comp_count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const vkl_uc_triple *t = &vkl_uc_comp[mid];
        if (t->a == a && t->b == b)
            return t->c;
        if (t->a < a || (t->a == a && t->b < b))
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int decompose(uint32_t cp, vkl_ucbuf *out, int depth)
{
    if (cp >= SBASE && cp < SBASE + SCOUNT) {
        uint32_t s = cp - SBASE;
        if (vkl_ucbuf_push(out, LBASE + s / NCOUNT) || vkl_ucbuf_push(out, VBASE + (s % NCOUNT) / TCOUNT))
            return -1;
        if (s % TCOUNT && vkl_ucbuf_push(out, TBASE + s % TCOUNT))
            return -1;
        return 0;
    }
    const vkl_uc_triple *d = cp < 0xC0 ? NULL : find_decomp(cp);
    if (!d || depth > 8) /* Unicode decompositions are at most 4 deep */
        return vkl_ucbuf_push(out, cp);
    if (decompose(d->b, out, depth + 1))
        return -1;
    return d->c ? decompose(d->c, out, depth + 1) : 0;
}

int vkl_uc_nfc(const uint32_t *in, size_t n, vkl_ucbuf *out)
{
    vkl_ucbuf d = {0};
    int rc = -1;
    for (size_t i = 0; i < n; i++)
        if (decompose(in[i], &d, 0))
            goto done;
    /* Canonical ordering: stable insertion sort of each run of non-starters. */
    for (size_t i = 1; i < d.n; i++) {
        int cc = vkl_uc_ccc(d.v[i]);
        if (cc == 0)
            continue;
        uint32_t c = d.v[i];
        size_t j = i;
        while (j > 0) {
            int pc = vkl_uc_ccc(d.v[j - 1]);
            if (pc <= cc)
                break;
            d.v[j] = d.v[j - 1];
            j--;
        }
        d.v[j] = c;
    }
    size_t starter = (size_t)-1;
    int last_cc = 0;
    for (size_t i = 0; i < d.n; i++) {
        uint32_t c = d.v[i];
        int cc = vkl_uc_ccc(c);
        if (starter != (size_t)-1) {
            int adjacent = out->n - 1 == starter;
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                uint32_t comp = compose_pair(out->v[starter], c);
                if (comp) {
                    out->v[starter] = comp;
                    continue;
                }
            }
        }
        if (vkl_ucbuf_push(out, c))
            goto done;
        if (cc == 0)
            starter = out->n - 1;
        last_cc = cc;
    }
    rc = 0;
done:
    vkl_ucbuf_free(&d);
    return rc;
}
