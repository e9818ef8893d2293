#include "shape.h"

#include <stdio.h>

void vkl_shape_str(int ndim, const int64_t *shape, char *out, size_t size)
{
    if (!size) return;
    size_t k = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < ndim && k < size; i++)
        k += (size_t)snprintf(out + k, size - k, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (k < size) snprintf(out + k, size - k, "]");
}

int vkl_shape_same(int na, const int64_t *a, int nb, const int64_t *b)
{
    if (na != nb) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

int vkl_shape_same_squeezed(int na, const int64_t *a, int nb, const int64_t *b)
{
    while (na > 1 && a[na - 1] == 1) na--;
    while (nb > 1 && b[nb - 1] == 1) nb--;
    return vkl_shape_same(na, a, nb, b);
}
