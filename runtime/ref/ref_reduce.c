/* CPU reference for reduce_rows.comp. */
#include "vkl_ref.h"

#include <math.h>

void vkl_ref_reduce_rows(int op, const float *x, int64_t rows, int64_t n, float *y)
{
    for (int64_t r = 0; r < rows; r++) {
        double acc = op == 0 ? 0 : -INFINITY;
        for (int64_t k = 0; k < n; k++) {
            double v = x[r * n + k];
            acc = op == 0 ? acc + v : (v > acc ? v : acc);
        }
        y[r] = (float)acc;
    }
}
