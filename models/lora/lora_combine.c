/* Adapter combination by rank concatenation or truncated SVD (lora_combine.h). */
#include "lora/lora_combine.h"
#include "lora/lora_delta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const vkl_lora_module *m;
    double w;
} contrib;

static int plain_lora(const vkl_lora_module *m)
{
    return m->kind == VKL_LORA_KIND_LORA && !m->t[VKL_LORA_MID].data && !m->t[VKL_LORA_MAG].data;
}

static int new_module(vkl_lora *out, const vkl_lora_module *first, vkl_lora_module **mo, vkl_err *e)
{
    vkl_lora_module *m = vkl_lora_add_module(out, e);
    if (!m) return -1;
    m->name = first->name ? strdup(first->name) : NULL;
    m->kname = strdup(first->kname);
    m->source = strdup(first->kname);
    if (!m->kname || !m->source || (first->name && !m->name)) return vkl_fail(e, "out of memory");
    m->wndim = first->wndim;
    memcpy(m->wshape, first->wshape, sizeof m->wshape);
    m->stride = first->stride;
    m->padding = first->padding;
    *mo = m;
    return 0;
}

/* Output factors of rank R: down [R, in(,kh,kw)], up [out, R(,1,1)]. */
static int alloc_factors(vkl_lora_module *m, int R, vkl_err *e)
{
    int64_t ds[4] = {R, m->wshape[1], m->wshape[2], m->wshape[3]};
    int64_t us[4] = {m->wshape[0], R, 1, 1};
    int nd = m->wndim == 4 ? 4 : 2;
    if (m->wndim != 4 && m->wndim != 2) {
        ds[1] = (int64_t)(vkl_lora_wnelem(m) / (uint64_t)m->wshape[0]);
        m->wndim = 2;
        m->wshape[1] = ds[1];
    }
    if (!vkl_lora_tensor_alloc(&m->t[VKL_LORA_DOWN], nd, ds, e) || !vkl_lora_tensor_alloc(&m->t[VKL_LORA_UP], nd, us, e))
        return -1;
    m->kind = VKL_LORA_KIND_LORA;
    m->rank = R;
    m->alpha = (float)R;
    m->has_alpha = 1;
    m->scale = 1;
    return 0;
}

static int concat(const contrib *c, int nc, vkl_lora_module *m, vkl_err *e)
{
    int R = 0;
    for (int i = 0; i < nc; i++) {
        const vkl_lora_module *x = c[i].m;
        if (!plain_lora(x))
            return vkl_fail(e, "%s: %s%s module cannot be concatenated; give --rank to merge by SVD",
                            vkl_lora_module_label(x), vkl_lora_kind_name(x->kind),
                            x->t[VKL_LORA_MID].data ? " (Tucker)" : "");
        const vkl_lora_tensor *d0 = &c[0].m->t[VKL_LORA_DOWN], *d = &x->t[VKL_LORA_DOWN];
        if (d->ndim != d0->ndim || memcmp(d->shape + 1, d0->shape + 1, 3 * sizeof(int64_t)))
            return vkl_fail(e, "%s: down factors of different kernel shapes cannot be concatenated; give --rank",
                            vkl_lora_module_label(x));
        R += x->rank;
    }
    if (alloc_factors(m, R, e)) return -1;
    int64_t O = m->wshape[0], X = (int64_t)(vkl_lora_tensor_nelem(&c[0].m->t[VKL_LORA_DOWN]) / (uint64_t)c[0].m->rank);
    float *down = m->t[VKL_LORA_DOWN].data, *up = m->t[VKL_LORA_UP].data;
    int r0 = 0;
    for (int i = 0; i < nc; i++) {
        const vkl_lora_module *x = c[i].m;
        int r = x->rank;
        memcpy(down + (int64_t)r0 * X, x->t[VKL_LORA_DOWN].data, (size_t)(r * X) * sizeof(float));
        double f = c[i].w * x->scale;
        for (int64_t o = 0; o < O; o++)
            for (int k = 0; k < r; k++) up[o * R + r0 + k] = (float)(f * x->t[VKL_LORA_UP].data[o * r + k]);
        r0 += r;
    }
    return 0;
}

static double sumsq(const double *s, int from, int n)
{
    double x = 0;
    for (int i = from; i < n; i++) x += s[i] * s[i];
    return x;
}

/* QR of q [X x K] by modified Gram-Schmidt with one re-orthogonalisation:
 * q becomes orthonormal columns (zero where dependent), r [K x K] upper. */
static void qr(double *q, int64_t X, int K, double *r)
{
    memset(r, 0, (size_t)K * K * sizeof *r);
    for (int k = 0; k < K; k++) {
        double n0 = 0;
        for (int64_t x = 0; x < X; x++) n0 += q[x * K + k] * q[x * K + k];
        for (int pass = 0; pass < 2; pass++)
            for (int j = 0; j < k; j++) {
                double d = 0;
                for (int64_t x = 0; x < X; x++) d += q[x * K + j] * q[x * K + k];
                r[j * K + k] += d;
                for (int64_t x = 0; x < X; x++) q[x * K + k] -= d * q[x * K + j];
            }
        double nk = 0;
        for (int64_t x = 0; x < X; x++) nk += q[x * K + k] * q[x * K + k];
        nk = sqrt(nk);
        int dep = nk <= 1e-13 * sqrt(n0);
        r[k * K + k] = dep ? 0 : nk;
        for (int64_t x = 0; x < X; x++) q[x * K + k] = dep ? 0 : q[x * K + k] / nk;
    }
}

/* SVD of sum_i w_i s_i up_i down_i without forming it: down stack = Q R,
 * B = P R^T (O x K), B = U S V^T, delta = U S (Q V)^T. */
static int svd_factored(const contrib *c, int nc, vkl_lora_module *m, int R, double *err, double *nrm, vkl_err *e)
{
    int K = 0;
    for (int i = 0; i < nc; i++) K += c[i].m->rank;
    int64_t O = m->wshape[0], X = (int64_t)(vkl_lora_wnelem(m) / (uint64_t)O);
    double *q = calloc((size_t)(X * K), sizeof *q), *r = malloc((size_t)K * K * sizeof *r);
    double *b = calloc((size_t)(O * K), sizeof *b), *s = malloc((size_t)K * sizeof *s);
    double *v = malloc((size_t)K * K * sizeof *v), *p = calloc((size_t)(O * K), sizeof *p);
    int rc = 0;
    if (!q || !r || !b || !s || !v || !p) {
        rc = vkl_fail(e, "out of memory");
        goto done;
    }
    for (int i = 0, k0 = 0; i < nc; i++) {
        const vkl_lora_module *x = c[i].m;
        double f = c[i].w * x->scale;
        for (int k = 0; k < x->rank; k++) {
            for (int64_t j = 0; j < X; j++) q[j * K + k0 + k] = x->t[VKL_LORA_DOWN].data[k * X + j];
            for (int64_t o = 0; o < O; o++) p[o * K + k0 + k] = f * x->t[VKL_LORA_UP].data[o * x->rank + k];
        }
        k0 += x->rank;
    }
    qr(q, X, K, r);
    for (int64_t o = 0; o < O; o++)
        for (int j = 0; j < K; j++) {
            double t = 0;
            for (int k = j; k < K; k++) t += p[o * K + k] * r[j * K + k];
            b[o * K + j] = t;
        }
    if (vkl_svd_jacobi(b, (int)O, K, s, v) < 0) {
        rc = vkl_fail(e, "%s: SVD did not converge", vkl_lora_module_label(m));
        goto done;
    }
    int Rk = R < K ? R : K;
    if (Rk > O) Rk = (int)O;
    if (alloc_factors(m, Rk, e)) {
        rc = -1;
        goto done;
    }
    for (int64_t o = 0; o < O; o++)
        for (int k = 0; k < Rk; k++) m->t[VKL_LORA_UP].data[o * Rk + k] = (float)b[o * K + k];
    for (int k = 0; k < Rk; k++)
        for (int64_t x = 0; x < X; x++) {
            double t = 0;
            for (int j = 0; j < K; j++) t += q[x * K + j] * v[j * K + k];
            m->t[VKL_LORA_DOWN].data[k * X + x] = (float)t;
        }
    *nrm = sqrt(sumsq(s, 0, K));
    *err = sqrt(sumsq(s, Rk, K));
done:
    free(q);
    free(r);
    free(b);
    free(s);
    free(v);
    free(p);
    return rc;
}

static int svd_dense(const contrib *c, int nc, vkl_lora_module *m, int R, double *err, double *nrm, vkl_err *e)
{
    uint64_t n = vkl_lora_wnelem(m);
    int64_t O = m->wshape[0], X = (int64_t)(n / (uint64_t)O);
    int tr = O < X; /* Jacobi over the smaller dimension's columns */
    int64_t rows = tr ? X : O, cols = tr ? O : X;
    double *d = calloc((size_t)n, sizeof *d), *acc = calloc((size_t)n, sizeof *acc);
    double *s = malloc((size_t)cols * sizeof *s), *v = malloc((size_t)(cols * cols) * sizeof *v);
    int rc = 0;
    if (!d || !acc || !s || !v) {
        rc = vkl_fail(e, "out of memory");
        goto done;
    }
    for (int i = 0; i < nc && !rc; i++) {
        if (c[i].m->t[VKL_LORA_MAG].data) {
            rc = vkl_fail(e, "%s: DoRA delta depends on the base weight; it cannot be merged without the model",
                          vkl_lora_module_label(c[i].m));
            break;
        }
        if ((rc = vkl_lora_delta(c[i].m, NULL, d, e))) break;
        for (uint64_t k = 0; k < n; k++) acc[k] += c[i].w * d[k];
    }
    if (rc) goto done;
    for (int64_t o = 0; o < O; o++)
        for (int64_t x = 0; x < X; x++) d[tr ? x * O + o : o * X + x] = acc[o * X + x];
    if (vkl_svd_jacobi(d, (int)rows, (int)cols, s, v) < 0) {
        rc = vkl_fail(e, "%s: SVD did not converge", vkl_lora_module_label(m));
        goto done;
    }
    int Rk = R < cols ? R : (int)cols;
    if ((rc = alloc_factors(m, Rk, e))) goto done;
    float *up = m->t[VKL_LORA_UP].data, *down = m->t[VKL_LORA_DOWN].data;
    for (int k = 0; k < Rk; k++) {
        if (!tr) {
            for (int64_t o = 0; o < O; o++) up[o * Rk + k] = (float)d[o * cols + k];
            for (int64_t x = 0; x < X; x++) down[k * X + x] = (float)v[x * cols + k];
        } else {
            /* delta^T = (U S) V^T, so delta = V (S U^T): up = V S, down = U^T */
            for (int64_t o = 0; o < O; o++) up[o * Rk + k] = (float)(v[o * cols + k] * s[k]);
            for (int64_t x = 0; x < X; x++) down[k * X + x] = (float)(s[k] > 0 ? d[x * cols + k] / s[k] : 0);
        }
    }
    *nrm = sqrt(sumsq(s, 0, (int)cols));
    *err = sqrt(sumsq(s, Rk, (int)cols));
done:
    free(d);
    free(acc);
    free(s);
    free(v);
    return rc;
}

void vkl_lora_combine_report_free(vkl_lora_combine_report *r)
{
    if (!r) return;
    free(r->rel_err);
    free(r->norm);
    memset(r, 0, sizeof *r);
}

int vkl_lora_combine(const vkl_lora_input *in, int n_in, int rank, vkl_lora *out, vkl_lora_combine_report *rep,
                     vkl_err *e)
{
    memset(out, 0, sizeof *out);
    if (rep) memset(rep, 0, sizeof *rep);
    out->format = VKL_LORA_FMT_KOHYA;
    size_t total = 1;
    for (int i = 0; i < n_in; i++) total += (size_t)(in[i].lora->n > 0 ? in[i].lora->n : 0);
    contrib *c = malloc((size_t)(n_in ? n_in : 1) * sizeof *c);
    double *err = calloc(total, sizeof *err), *nrm = calloc(total, sizeof *nrm);
    int rc = 0;
    if (!c || !err || !nrm) rc = vkl_fail(e, "out of memory");
    for (int i = 0; i < n_in && !rc; i++)
        for (int k = 0; k < in[i].lora->n && !rc; k++) {
            const vkl_lora_module *first = &in[i].lora->m[k];
            if (first->kind == VKL_LORA_KIND_IA3) {
                rc = vkl_fail(e, "%s: IA3 modules scale the weight instead of adding to it and cannot be combined "
                                 "with adapters; apply them at run time or bake them (merge --model)",
                              vkl_lora_module_label(first));
                break;
            }
            if (vkl_lora_find(out, first->kname)) continue; /* already combined */
            int nc = 0;
            for (int j = i; j < n_in; j++) {
                const vkl_lora_module *x = j == i ? first : vkl_lora_find(in[j].lora, first->kname);
                if (!x) continue;
                if (vkl_lora_wnelem(x) != vkl_lora_wnelem(first) || x->wshape[0] != first->wshape[0]) {
                    rc = vkl_fail(e, "%s: the adapters change weights of different shapes", first->kname);
                    break;
                }
                c[nc++] = (contrib){x, in[j].weight};
            }
            vkl_lora_module *m = NULL;
            if (rc || (rc = new_module(out, first, &m, e))) break;
            int idx = out->n - 1;
            if (rank <= 0) rc = concat(c, nc, m, e);
            else {
                int fact = 1;
                for (int j = 0; j < nc; j++) fact &= plain_lora(c[j].m);
                rc = fact ? svd_factored(c, nc, m, rank, &err[idx], &nrm[idx], e)
                          : svd_dense(c, nc, m, rank, &err[idx], &nrm[idx], e);
            }
        }
    free(c);
    if (rc) {
        free(err);
        free(nrm);
        vkl_lora_free(out);
        return -1;
    }
    double te = 0, tn = 0;
    for (int i = 0; i < out->n; i++) {
        te += err[i] * err[i];
        tn += nrm[i] * nrm[i];
        err[i] = nrm[i] > 0 ? err[i] / nrm[i] : 0;
    }
    if (rep) {
        rep->n = out->n;
        rep->rel_err = err;
        rep->norm = nrm;
        rep->total_err = tn > 0 ? sqrt(te / tn) : 0;
    } else {
        free(err);
        free(nrm);
    }
    return 0;
}
