/* CPU reference of the cross-entropy op in double precision. */
#include "ref/vkl_ref.h"

#include <math.h>

static int valid(int32_t t, int64_t V, int ignore) { return t >= 0 && t < V && t != ignore; }

static double row_lse(const float *x, int64_t V)
{
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < V; v++) m = x[v] > m ? x[v] : m;
    for (int64_t v = 0; v < V; v++) s += exp(x[v] - m);
    return m + log(s);
}

double vkl_ref_cross_entropy(const float *x, int64_t rows, int64_t V, const int32_t *t, int ignore_index,
                             float *row_loss)
{
    double sum = 0;
    int64_t cnt = 0;
    for (int64_t r = 0; r < rows; r++) {
        double l = 0;
        if (valid(t[r], V, ignore_index)) {
            l = row_lse(x + r * V, V) - x[r * V + t[r]];
            cnt++;
        }
        if (row_loss) row_loss[r] = (float)l;
        sum += l;
    }
    return sum / (double)cnt;
}

void vkl_ref_cross_entropy_backward(const float *x, int64_t rows, int64_t V, const int32_t *t, int ignore_index,
                                    double dy, float *dx)
{
    int64_t cnt = 0;
    for (int64_t r = 0; r < rows; r++) cnt += valid(t[r], V, ignore_index);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * V;
        if (!valid(t[r], V, ignore_index)) {
            for (int64_t v = 0; v < V; v++) dx[r * V + v] = 0;
            continue;
        }
        double lse = row_lse(xr, V), g = dy / (double)cnt;
        for (int64_t v = 0; v < V; v++) dx[r * V + v] = (float)(g * (exp(xr[v] - lse) - (v == t[r])));
    }
}
