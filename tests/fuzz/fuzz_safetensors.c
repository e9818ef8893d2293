/* libFuzzer target: any byte string either opens as a safetensors file whose
 * every tensor can then be read (as stored and as f32), or is rejected with a
 * message; never a crash, leak or out-of-bounds access. */
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vkl_st_file *f;
    vkl_err e;
    if (vkl_st_open_memory(data, size, "fuzz", &f, &e)) {
        if (!e.msg[0] || strncmp(e.msg, "fuzz: ", 6)) abort(); /* every error names its source */
        return 0;
    }
    for (int i = 0; i < vkl_st_count(f); i++) {
        const vkl_st_tensor *t = vkl_st_at(f, i);
        if (vkl_st_find(f, t->name) != t) abort();
        /* validated sizes: the data lies inside the input */
        if ((const uint8_t *)t->data < data || (const uint8_t *)t->data + t->nbytes > data + size) abort();
        void *native = malloc(t->nbytes + 1);
        float *f32 = malloc(t->nelem * sizeof *f32 + 1);
        if (!native || !f32) abort();
        if (vkl_st_read(f, t, t->dtype, native, &e)) abort();
        if (memcmp(native, t->data, t->nbytes)) abort();
        if (vkl_st_read_f32(f, t->name, f32, t->nelem, &e)) abort();
        free(native);
        free(f32);
    }
    for (int i = 0; i < vkl_st_meta_count(f); i++)
        if (vkl_st_meta_get(f, vkl_st_meta_key(f, i)) == NULL) abort();
    vkl_st_close(f);
    return 0;
}
