/* libFuzzer target: any byte string either opens as a GGUF file whose every
 * metadata value and tensor can then be used (values read, tensors within
 * the input, dequantised on the CPU, either tokenizer built and run when the
 * metadata holds one),
 * or is rejected with a message naming its source; never a crash, leak or
 * out-of-bounds access. */
#include "io/gguf.h"
#include "ref/ref_gguf.h"
#include "tokenizer/bbpe.h"
#include "tokenizer/sp_gguf.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vkl_gguf_file *f;
    vkl_err e;
    if (vkl_gguf_open_memory(data, size, "fuzz", &f, &e)) {
        if (!e.msg[0] || strncmp(e.msg, "fuzz: ", 6)) abort(); /* every error names its source */
        return 0;
    }
    for (int i = 0; i < vkl_gguf_kv_count(f); i++) {
        const vkl_gguf_kv *kv = vkl_gguf_kv_at(f, i);
        if (vkl_gguf_kv_find(f, kv->key) != kv) abort();
        if (kv->type == VKL_GGUF_STRING && strlen(kv->s) > kv->len) abort();
        if (kv->type != VKL_GGUF_ARRAY) continue;
        for (uint64_t j = 0; j < kv->n; j++) {
            if (kv->atype == VKL_GGUF_STRING) {
                if (strlen(kv->strs[j]) > kv->lens[j]) abort();
            } else {
                (void)vkl_gguf_arr_num(kv, j);
            }
        }
    }
    for (int i = 0; i < vkl_gguf_count(f); i++) {
        const vkl_gguf_tensor *t = vkl_gguf_at(f, i);
        if (vkl_gguf_find(f, t->name) != t) abort();
        if (t->data < data || t->nbytes > size || t->data + t->nbytes > data + size) abort();
        /* small tensors only (the values' bytes are inside the input, but the
         * element count of a large F32 tensor makes each run slow; the
         * dequantisers are checked exhaustively by test_gguf_dequant) */
        if (t->nelem <= (1u << 12)) {
            float *y = malloc(sizeof(float) * (size_t)t->nelem + 1);
            if (!y || vkl_ref_gguf_dequant(t->type, t->data, t->nelem, y)) abort();
            free(y);
        }
    }
    vkl_sp *sp = NULL;
    if (!vkl_sp_from_gguf(f, &sp, &e)) {
        int32_t *ids = NULL;
        int n = 0;
        if (!vkl_sp_encode(sp, "Hello w\xc3\xb6rld 12", &ids, &n, &e)) free(vkl_sp_decode(sp, ids, n));
        free(ids);
        vkl_sp_free(sp);
    }
    vkl_bbpe *bp = NULL;
    if (!vkl_bbpe_from_gguf(f, &bp, &e)) {
        int32_t *ids = NULL;
        int n = 0;
        if (!vkl_bbpe_encode(bp, "Hello w\xc3\xb6rld's  12!\n", &ids, &n, &e)) free(vkl_bbpe_decode(bp, ids, n));
        free(ids);
        vkl_bbpe_free(bp);
    }
    vkl_gguf_close(f);
    return 0;
}
