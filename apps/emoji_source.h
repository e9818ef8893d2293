/* Provenance of a generated emoji dataset: SOURCE.md names the Debian
 * packages the images and captions came from, their versions and licences,
 * and the command that made it. */
#ifndef VKL_EMOJI_SOURCE_H
#define VKL_EMOJI_SOURCE_H

#include "vkl_base.h"

/* Where the Debian packages install the inputs. */
#define VKL_EMOJI_NOTO_FONT "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
#define VKL_EMOJI_GEMOJIONE_PNG "/usr/share/rubygems-integration/all/gems/gemojione-3.3.0/assets/png"
#define VKL_EMOJI_UNICODE_DATA "/usr/share/unicode/UnicodeData.txt"
#define VKL_EMOJI_CLDR_EN "/usr/share/unicode/cldr/common/annotations/en.xml"

/* The Version: of an installed Debian package from the dpkg status file
 * (status_path; NULL = /var/lib/dpkg/status), or "unknown". */
void vkl_dpkg_version(const char *status_path, const char *package, char *out, size_t n);

typedef struct vkl_emoji_provenance {
    int from_font;              /* 1: a CBDT font (Noto), 0: a PNG folder (gemojione) */
    const char *images;         /* the --font file or --png-dir folder */
    const char *unicode_data;   /* UnicodeData.txt */
    const char *cldr;           /* annotations/en.xml, or NULL */
    const char *command;        /* the command line, as run */
    int count, size;
} vkl_emoji_provenance;

int vkl_emoji_write_source(const char *path, const vkl_emoji_provenance *p, vkl_err *e);

#endif
