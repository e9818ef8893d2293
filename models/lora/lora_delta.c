/* delta W per module kind, in double (see lora_delta.h for the conventions). */
#include "lora/lora_delta.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T(r) (&m->t[VKL_LORA_##r])

/* c[M,N] = a[M,K] @ b[K,N] (row-major, f32 in, double out). */
static void mm(const float *a, const float *b, double *c, int64_t M, int64_t K, int64_t N)
{
    for (int64_t i = 0; i < M; i++) {
        double *ci = c + i * N;
        for (int64_t j = 0; j < N; j++) ci[j] = 0;
        for (int64_t k = 0; k < K; k++) {
            double x = a[i * K + k];
            const float *bk = b + k * N;
            for (int64_t j = 0; j < N; j++) ci[j] += x * bk[j];
        }
    }
}

static int64_t rest(const vkl_lora_tensor *t)
{
    int64_t n = 1;
    for (int i = 1; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* out[p, r, k, l] = sum_ij t[i,j,k,l] b[j,r] a[i,p]; t [I,J,K], a [I,P], b [J,R]. */
static void tucker(const vkl_lora_tensor *t, const vkl_lora_tensor *a, const vkl_lora_tensor *b, double *out)
{
    int64_t I = t->shape[0], J = t->shape[1], KK = t->shape[2] * t->shape[3];
    int64_t P = a->shape[1], R = b->shape[1];
    /* tb[i, r, kk] = sum_j t[i,j,kk] b[j,r] */
    double *tb = calloc((size_t)(I * R * KK), sizeof *tb);
    if (!tb) return;
    for (int64_t i = 0; i < I; i++)
        for (int64_t j = 0; j < J; j++)
            for (int64_t r = 0; r < R; r++) {
                double bj = b->data[j * R + r];
                for (int64_t q = 0; q < KK; q++) tb[(i * R + r) * KK + q] += t->data[(i * J + j) * KK + q] * bj;
            }
    memset(out, 0, (size_t)(P * R * KK) * sizeof *out);
    for (int64_t i = 0; i < I; i++)
        for (int64_t p = 0; p < P; p++) {
            double ap = a->data[i * P + p];
            for (int64_t x = 0; x < R * KK; x++) out[p * R * KK + x] += ap * tb[i * R * KK + x];
        }
    free(tb);
}

static int lora(const vkl_lora_module *m, double *out, uint64_t n)
{
    const vkl_lora_tensor *u = T(UP), *d = T(DOWN), *mid = T(MID);
    int64_t O = u->shape[0], R = u->shape[1];
    if (!mid->data) {
        mm(u->data, d->data, out, O, R, rest(d));
        return 0;
    }
    /* Tucker LoCon: td[r, i, kk] = sum_s mid[r,s,kk] down[s,i], then up @ td */
    int64_t S = mid->shape[1], KK = mid->shape[2] * mid->shape[3], I = d->shape[1];
    double *td = calloc((size_t)(R * I * KK), sizeof *td);
    if (!td) return -1;
    for (int64_t r = 0; r < R; r++)
        for (int64_t s = 0; s < S; s++)
            for (int64_t i = 0; i < I; i++) {
                double ds = d->data[s * I + i];
                for (int64_t q = 0; q < KK; q++) td[(r * I + i) * KK + q] += mid->data[(r * S + s) * KK + q] * ds;
            }
    memset(out, 0, (size_t)n * sizeof *out);
    for (int64_t o = 0; o < O; o++)
        for (int64_t r = 0; r < R; r++) {
            double ur = u->data[o * R + r];
            for (int64_t x = 0; x < I * KK; x++) out[o * I * KK + x] += ur * td[r * I * KK + x];
        }
    free(td);
    return 0;
}

static int loha(const vkl_lora_module *m, double *out, uint64_t n)
{
    double *p2 = malloc((size_t)n * sizeof *p2);
    if (!p2) return -1;
    if (T(HADA_T1)->data) {
        tucker(T(HADA_T1), T(HADA_W1A), T(HADA_W1B), out);
        tucker(T(HADA_T2), T(HADA_W2A), T(HADA_W2B), p2);
    } else {
        mm(T(HADA_W1A)->data, T(HADA_W1B)->data, out, T(HADA_W1A)->shape[0], T(HADA_W1A)->shape[1],
           T(HADA_W1B)->shape[1]);
        mm(T(HADA_W2A)->data, T(HADA_W2B)->data, p2, T(HADA_W2A)->shape[0], T(HADA_W2A)->shape[1],
           T(HADA_W2B)->shape[1]);
    }
    for (uint64_t i = 0; i < n; i++) out[i] *= p2[i];
    free(p2);
    return 0;
}

static int lokr(const vkl_lora_module *m, double *out, uint64_t n)
{
    int64_t A, C, B, X; /* w1 [A,C], w2 [B, X] with X = d * kernel */
    double *w1, *w2;
    if (T(LOKR_W1)->data) {
        A = T(LOKR_W1)->shape[0];
        C = T(LOKR_W1)->shape[1];
    } else {
        A = T(LOKR_W1A)->shape[0];
        C = T(LOKR_W1B)->shape[1];
    }
    if (T(LOKR_W2)->data) {
        B = T(LOKR_W2)->shape[0];
        X = rest(T(LOKR_W2));
    } else if (T(LOKR_T2)->data) {
        B = T(LOKR_W2A)->shape[1];
        X = T(LOKR_W2B)->shape[1] * T(LOKR_T2)->shape[2] * T(LOKR_T2)->shape[3];
    } else {
        B = T(LOKR_W2A)->shape[0];
        X = T(LOKR_W2B)->shape[1];
    }
    if ((uint64_t)(A * B * C * X) != n) return -1;
    w1 = malloc((size_t)(A * C) * sizeof *w1);
    w2 = malloc((size_t)(B * X) * sizeof *w2);
    if (!w1 || !w2) {
        free(w1);
        free(w2);
        return -1;
    }
    if (T(LOKR_W1)->data)
        for (int64_t i = 0; i < A * C; i++) w1[i] = T(LOKR_W1)->data[i];
    else
        mm(T(LOKR_W1A)->data, T(LOKR_W1B)->data, w1, A, T(LOKR_W1A)->shape[1], C);
    if (T(LOKR_W2)->data)
        for (int64_t i = 0; i < B * X; i++) w2[i] = T(LOKR_W2)->data[i];
    else if (T(LOKR_T2)->data)
        tucker(T(LOKR_T2), T(LOKR_W2A), T(LOKR_W2B), w2);
    else
        mm(T(LOKR_W2A)->data, T(LOKR_W2B)->data, w2, B, T(LOKR_W2A)->shape[1], X);
    /* W[(a*B+b), (c*X + x)] = w1[a,c] * w2[b,x]; with w2 = [B, d, kh, kw] the
     * column c*X + x is exactly (c*d + j)*kernel + q of W [A*B, C*d, kh, kw]. */
    for (int64_t a = 0; a < A; a++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < C; c++) {
                double s = w1[a * C + c];
                double *o = out + (a * B + b) * C * X + c * X;
                for (int64_t x = 0; x < X; x++) o[x] = s * w2[b * X + x];
            }
    free(w1);
    free(w2);
    return 0;
}

int vkl_lora_product(const vkl_lora_module *m, double *out, vkl_err *e)
{
    uint64_t n = vkl_lora_wnelem(m);
    int rc;
    switch (m->kind) {
    case VKL_LORA_KIND_LORA:
    case VKL_LORA_KIND_DORA: rc = lora(m, out, n); break;
    case VKL_LORA_KIND_LOHA: rc = loha(m, out, n); break;
    case VKL_LORA_KIND_LOKR: rc = lokr(m, out, n); break;
    case VKL_LORA_KIND_IA3:
        return vkl_fail(e, "%s: an IA3 module scales the weight (W * l on rows or columns); it has no additive delta W "
                           "to combine, convert or apply as one", vkl_lora_module_label(m));
    default: rc = -1;
    }
    if (rc) return vkl_fail(e, "%s: cannot compute delta W (out of memory or inconsistent shapes)",
                            vkl_lora_module_label(m));
    return 0;
}

/* W' = mag / ||W + D|| * (W + D); out holds D on entry and W' - W on exit. */
static int dora(const vkl_lora_module *m, const float *base, double *out, vkl_err *e)
{
    const vkl_lora_tensor *g = T(MAG);
    int64_t O = m->wshape[0], I = m->wndim > 1 ? m->wshape[1] : 1, KK = 1;
    for (int i = 2; i < m->wndim; i++) KK *= m->wshape[i];
    int out_axis = g->ndim == 1 ? vkl_lora_tensor_nelem(g) == (uint64_t)O : g->shape[0] == O;
    int64_t nn = out_axis ? O : I;
    if (!base) return vkl_fail(e, "%s: DoRA delta depends on the base weight, which was not given", vkl_lora_module_label(m));
    if (vkl_lora_tensor_nelem(g) != (uint64_t)nn)
        return vkl_fail(e, "%s: DoRA magnitude has %llu elements, expected %lld", vkl_lora_module_label(m),
                        (unsigned long long)vkl_lora_tensor_nelem(g), (long long)nn);
    double *norm = calloc((size_t)nn, sizeof *norm);
    if (!norm) return vkl_fail(e, "out of memory");
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t q = 0; q < KK; q++) {
                int64_t x = (o * I + i) * KK + q;
                double v = base[x] + out[x];
                norm[out_axis ? o : i] += v * v;
            }
    for (int64_t o = 0; o < O; o++)
        for (int64_t i = 0; i < I; i++)
            for (int64_t q = 0; q < KK; q++) {
                int64_t x = (o * I + i) * KK + q, k = out_axis ? o : i;
                double nk = sqrt(norm[k]);
                double v = base[x] + out[x];
                out[x] = (nk > 0 ? g->data[k] / nk * v : v) - base[x];
            }
    free(norm);
    return 0;
}

int vkl_lora_delta(const vkl_lora_module *m, const float *base, double *out, vkl_err *e)
{
    if (vkl_lora_product(m, out, e)) return -1;
    uint64_t n = vkl_lora_wnelem(m);
    for (uint64_t i = 0; i < n; i++) out[i] *= m->scale;
    if (T(MAG)->data) return dora(m, base, out, e);
    return 0;
}
