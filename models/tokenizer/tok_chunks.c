#include "tokenizer/tok_chunks.h"

size_t vkl_tok_chunk_end(const char *text, size_t start, size_t len, size_t min_len)
{
    for (size_t p = start + (min_len ? min_len : 1); p + 1 < len; p++)
        if (text[p] == ' ' && text[p - 1] != ' ' && text[p + 1] != ' ') return p;
    return len;
}
