/* Captions for single-codepoint emoji: the CLDR English short name
 * (annotations/en.xml, type="tts"), else the Unicode character name
 * (UnicodeData.txt) in lower case. */
#ifndef VKL_EMOJI_NAMES_H
#define VKL_EMOJI_NAMES_H

#include "vkl_base.h"

typedef struct vkl_emoji_name {
    uint32_t cp;
    char *name;
} vkl_emoji_name;

typedef struct vkl_emoji_names {
    vkl_emoji_name *unicode, *cldr; /* each ascending by codepoint, one entry per codepoint */
    size_t nunicode, ncldr;
} vkl_emoji_names;

/* cldr may be NULL (Unicode names only). */
int vkl_emoji_names_load(vkl_emoji_names *n, const char *unicode_data, const char *cldr, vkl_err *e);
void vkl_emoji_names_free(vkl_emoji_names *n);

typedef enum { VKL_CAPTION_NONE = 0, VKL_CAPTION_CLDR, VKL_CAPTION_UNICODE } vkl_caption_source;

/* The caption of cp, or NULL; *from says which list gave it (may be NULL). */
const char *vkl_emoji_caption(const vkl_emoji_names *n, uint32_t cp, vkl_caption_source *from);

/* Codepoints that are not pictures on their own: ASCII, regional indicators,
 * skin-tone modifiers, ZWJ, the keycap combiner, variation selector 16 and
 * tag characters. */
int vkl_emoji_skipped(uint32_t cp);

#endif
