/* CPU references for glue.comp (GEGLU, SwiGLU), in double precision. */
#include "vkl_ref.h"

#include <math.h>

void vkl_ref_geglu(const float *x, int64_t rows, int64_t F, float *y)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t f = 0; f < F; f++) {
            double v = x[r * 2 * F + f], gate = x[r * 2 * F + F + f];
            y[r * F + f] = (float)(v * 0.5 * gate * (1 + erf(gate / sqrt(2.0))));
        }
}

void vkl_ref_swiglu(const float *gate, const float *up, int64_t n, float *y)
{
    for (int64_t i = 0; i < n; i++) {
        double a = gate[i];
        y[i] = (float)(a / (1 + exp(-a)) * up[i]);
    }
}
