/* SentencePiece BPE models (tokenizer.model, as LLaMA uses): the ModelProto
 * is read with a minimal protobuf reader (pieces: string, score, type;
 * trainer_spec: model_type, byte_fallback; normalizer_spec:
 * add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces).
 * Encoding as sentencepiece's BPE model: spaces become U+2581 with a dummy
 * prefix, the text is split into characters, the adjacent pair whose
 * concatenation is a piece with the highest score is merged (leftmost on
 * ties) until none is left; a symbol that is not a piece becomes its UTF-8
 * bytes' <0xXX> pieces (byte fallback) or <unk>. The normalization rule is
 * taken as identity (the rule's precompiled map is not applied). */
#ifndef VKL_SP_BPE_H
#define VKL_SP_BPE_H

#include "vkl_base.h"

typedef enum {
    VKL_SP_NORMAL = 1, VKL_SP_UNKNOWN = 2, VKL_SP_CONTROL = 3, VKL_SP_USER_DEFINED = 4, VKL_SP_UNUSED = 5,
    VKL_SP_BYTE = 6
} vkl_sp_type;

typedef struct vkl_sp vkl_sp;

int vkl_sp_load(const char *path, vkl_sp **out, vkl_err *e);
int vkl_sp_load_memory(const void *buf, size_t size, const char *label, vkl_sp **out, vkl_err *e);
void vkl_sp_free(vkl_sp *s);
int vkl_sp_size(const vkl_sp *s);
const char *vkl_sp_piece(const vkl_sp *s, int id);
float vkl_sp_score(const vkl_sp *s, int id);
int vkl_sp_type_of(const vkl_sp *s, int id);
int vkl_sp_find(const vkl_sp *s, const char *piece); /* id or -1 */
int vkl_sp_unk(const vkl_sp *s);
/* normalizer_spec.add_dummy_prefix (a space before the text) */
int vkl_sp_add_dummy_prefix(const vkl_sp *s);

/* text: UTF-8 (other bytes are byte-fallback symbols). ids malloc'd. */
int vkl_sp_encode(const vkl_sp *s, const char *text, int32_t **ids, int *n, vkl_err *e);
/* Text of ids: control pieces dropped, U+2581 as space, byte pieces joined
 * (invalid UTF-8 as U+FFFD per byte), <unk> as " \u2047 ", the dummy-prefix
 * space of the first piece removed. malloc'd. */
char *vkl_sp_decode(const vkl_sp *s, const int32_t *ids, int n);

#endif
