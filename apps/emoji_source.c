/* SOURCE.md: enough for someone holding only the dataset to know where every
 * picture and caption came from and under which terms it may be shared. */
#include "emoji_source.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void vkl_dpkg_version(const char *status_path, const char *package, char *out, size_t n)
{
    snprintf(out, n, "unknown");
    FILE *f = fopen(status_path ? status_path : "/var/lib/dpkg/status", "r");
    if (!f) return;
    char line[4096];
    int in_package = 0;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) in_package = 0; /* paragraphs are separated by blank lines */
        else if (!strncmp(line, "Package: ", 9)) in_package = !strcmp(line + 9, package);
        else if (in_package && !strncmp(line, "Version: ", 9)) {
            snprintf(out, n, "%s", line + 9);
            break;
        }
    }
    fclose(f);
}

/* One table row; the package is named only for the file it installs, since
 * another file given on the command line may come from anywhere. */
static void row(FILE *f, const char *what, const char *path, const char *default_path, const char *package)
{
    char version[256] = "unknown", *real = realpath(path, NULL), *real_default = realpath(default_path, NULL);
    int ours = real && real_default && !strcmp(real, real_default);
    free(real);
    free(real_default);
    if (ours) vkl_dpkg_version(NULL, package, version, sizeof version);
    fprintf(f, "| %s | `%s` | %s | %s |\n", what, path, ours ? package : "unknown (not the package's path)", version);
}

int vkl_emoji_write_source(const char *path, const vkl_emoji_provenance *p, vkl_err *e)
{
    FILE *f = fopen(path, "w");
    if (!f) return vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
    fprintf(f, "# Emoji dataset\n\n"
               "%d single-codepoint emoji, %dx%d 8-bit RGB PNG (composited over white, centre-cropped to a square,\n"
               "area-averaged down), each with its caption in NAME.txt beside it; `dataset.tsv` lists them all.\n"
               "Captions are the CLDR English short names (type=\"tts\"), else the Unicode character names in lower case.\n\n"
               "Made by:\n\n    %s\n\n",
            p->count, p->size, p->size, p->command);
    fprintf(f, "## Sources\n\n| what | file | Debian package | version |\n|---|---|---|---|\n");
    if (p->from_font) row(f, "images", p->images, VKL_EMOJI_NOTO_FONT, "fonts-noto-color-emoji");
    else row(f, "images", p->images, VKL_EMOJI_GEMOJIONE_PNG, "ruby-gemojione");
    row(f, "Unicode names", p->unicode_data, VKL_EMOJI_UNICODE_DATA, "unicode-data");
    if (p->cldr) row(f, "CLDR short names", p->cldr, VKL_EMOJI_CLDR_EN, "unicode-cldr-core");
    fprintf(f, "\n## Licences\n\n");
    if (p->from_font)
        fprintf(f, "- Images: Noto Color Emoji by Google. The emoji images are under the Apache License 2.0\n"
                   "  (Apache-2.0); the font as a whole is under the SIL Open Font License 1.1 (OFL-1.1).\n");
    else
        fprintf(f, "- Images: EmojiOne artwork as shipped by gemojione, under the Creative Commons\n"
                   "  Attribution-ShareAlike 4.0 licence (CC-BY-SA-4.0); derived images must keep that licence\n"
                   "  and this attribution: \"Emoji artwork provided by EmojiOne\".\n");
    fprintf(f, "- Captions: Unicode Character Database and CLDR data, under the Unicode licence\n"
               "  (Unicode-DFS-2016), copyright Unicode, Inc.\n");
    if (fclose(f) != 0) return vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
    return 0;
}
