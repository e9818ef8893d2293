/* One-sided (Hestenes) Jacobi SVD: rotate pairs of columns until all are
 * mutually orthogonal; the column norms are then the singular values. Simple,
 * accurate to double rounding, and fast enough for adapter-sized problems
 * (the factored path in lora_combine.c keeps them small). */
#include "lora/lora_combine.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void rotate(double *x, int rows, int stride, int p, int q, double c, double s)
{
    for (int i = 0; i < rows; i++) {
        double xp = x[(size_t)i * stride + p], xq = x[(size_t)i * stride + q];
        x[(size_t)i * stride + p] = c * xp - s * xq;
        x[(size_t)i * stride + q] = s * xp + c * xq;
    }
}

int vkl_svd_jacobi(double *a, int m, int n, double *s, double *v)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) v[(size_t)i * n + j] = i == j;
    int sweep = 0, rotated = 1;
    for (; rotated && sweep < 100; sweep++) {
        rotated = 0;
        for (int p = 0; p < n - 1; p++)
            for (int q = p + 1; q < n; q++) {
                double al = 0, be = 0, ga = 0;
                for (int i = 0; i < m; i++) {
                    double xp = a[(size_t)i * n + p], xq = a[(size_t)i * n + q];
                    al += xp * xp;
                    be += xq * xq;
                    ga += xp * xq;
                }
                if (ga == 0 || fabs(ga) <= 1e-15 * sqrt(al * be)) continue;
                rotated = 1;
                double zeta = (be - al) / (2 * ga);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                double c = 1 / sqrt(1 + t * t), sn = c * t;
                rotate(a, m, n, p, q, c, sn);
                rotate(v, n, n, p, q, c, sn);
            }
    }
    if (rotated) return -1;
    for (int j = 0; j < n; j++) {
        double x = 0;
        for (int i = 0; i < m; i++) x += a[(size_t)i * n + j] * a[(size_t)i * n + j];
        s[j] = sqrt(x);
    }
    /* selection sort of columns by singular value, descending */
    for (int j = 0; j < n; j++) {
        int b = j;
        for (int k = j + 1; k < n; k++)
            if (s[k] > s[b]) b = k;
        if (b == j) continue;
        double t = s[j];
        s[j] = s[b];
        s[b] = t;
        for (int i = 0; i < m; i++) {
            t = a[(size_t)i * n + j];
            a[(size_t)i * n + j] = a[(size_t)i * n + b];
            a[(size_t)i * n + b] = t;
        }
        for (int i = 0; i < n; i++) {
            t = v[(size_t)i * n + j];
            v[(size_t)i * n + j] = v[(size_t)i * n + b];
            v[(size_t)i * n + b] = t;
        }
    }
    return sweep;
}
