/* CPU references for binary.comp, unary.comp. */
#include "vkl_ref.h"

#include <math.h>

static int64_t at(const int64_t c[4], const int64_t s[4]) { return c[0] * s[0] + c[1] * s[1] + c[2] * s[2] + c[3] * s[3]; }

void vkl_ref_binary(int op, const float *a, const int64_t as[4], const float *b, const int64_t bs[4], float *y,
                    const int64_t ys[4])
{
    int64_t c[4], i = 0;
    for (c[0] = 0; c[0] < ys[0]; c[0]++)
        for (c[1] = 0; c[1] < ys[1]; c[1]++)
            for (c[2] = 0; c[2] < ys[2]; c[2]++)
                for (c[3] = 0; c[3] < ys[3]; c[3]++, i++) {
                    double x = a[at(c, as)], z = b[at(c, bs)];
                    y[i] = (float)(op == 0 ? x + z : op == 1 ? x - z : op == 2 ? x * z : x / z);
                }
}

double vkl_ref_unary1(int op, double x)
{
    switch (op) {
    case 0: return x;
    case 1: return x / (1 + exp(-x));
    case 2: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case 3: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case 4: return x / (1 + exp(-1.702 * x));
    case 5: return x > 0 ? x : 0;
    case 6: return exp(x);
    case 7: return x * x;
    case 8: return 1 / (1 + exp(-x));
    case 9: return sqrt(x);
    default: return tanh(x);
    }
}

void vkl_ref_unary(int op, float alpha, float beta, const float *x, const int64_t xs[4], float *y, const int64_t ys[4])
{
    int64_t c[4], i = 0;
    for (c[0] = 0; c[0] < ys[0]; c[0]++)
        for (c[1] = 0; c[1] < ys[1]; c[1]++)
            for (c[2] = 0; c[2] < ys[2]; c[2]++)
                for (c[3] = 0; c[3] < ys[3]; c[3]++, i++)
                    y[i] = (float)vkl_ref_unary1(op, (double)alpha * x[at(c, xs)] + beta);
}
