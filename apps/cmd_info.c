/* `vklora info [--json] FILE...`: says what a file is. The file type is
 * sniffed from its first bytes (the extension only breaks ties), then one
 * report function per type takes over; new types add a row to `types`. */
#include "app.h"
#include "args.h"
#include "info.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const char *name;
    /* head: the first n (<= 16) bytes of the file */
    int (*sniff)(const char *path, const uint8_t *head, size_t n);
    int (*report)(const char *path, int json);
} file_type;

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* u64 little-endian header length, then the JSON object's '{'. A file named
 * .safetensors that does not look like one still goes to the reader, whose
 * error then says what is wrong with it. */
static int sniff_safetensors(const char *path, const uint8_t *head, size_t n)
{
    return (n >= 9 && head[8] == '{') || ends_with(path, ".safetensors");
}

/* Signatures of the formats the image reader takes; TGA has none, so its
 * extension decides. A damaged file named like an image still goes to the
 * image reader, whose error then says what is wrong with it. */
static int sniff_image(const char *path, const uint8_t *head, size_t n)
{
    if (n >= 8 && !memcmp(head, "\x89PNG\r\n\x1a\n", 8)) return 1;
    if (n >= 3 && head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff) return 1;
    if (n >= 6 && (!memcmp(head, "GIF87a", 6) || !memcmp(head, "GIF89a", 6))) return 1;
    if (n >= 2 && head[0] == 'B' && head[1] == 'M') return 1;
    static const char *ext[] = {".png", ".PNG", ".jpg", ".JPG", ".jpeg", ".JPEG", ".bmp",
                                ".BMP", ".gif", ".GIF", ".tga", ".TGA"};
    for (size_t i = 0; i < sizeof ext / sizeof *ext; i++)
        if (ends_with(path, ext[i])) return 1;
    return 0;
}

static int sniff_gguf(const char *path, const uint8_t *head, size_t n)
{
    return (n >= 4 && !memcmp(head, "GGUF", 4)) || ends_with(path, ".gguf");
}

static const file_type types[] = {
    {"gguf", sniff_gguf, vkl_info_gguf},
    {"safetensors", sniff_safetensors, vkl_info_safetensors},
    {"image", sniff_image, vkl_info_image},
};

static int info_one(const char *path, int json)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        vkl_log(VKL_LOG_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    if (S_ISDIR(st.st_mode)) return vkl_info_folder(path, json);
    if (!S_ISREG(st.st_mode)) {
        vkl_log(VKL_LOG_ERROR, "%s: not a regular file", path);
        return 1;
    }
    uint8_t head[16];
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        vkl_log(VKL_LOG_ERROR, "%s: cannot open: %s", path, strerror(errno));
        return 1;
    }
    size_t n = fread(head, 1, sizeof head, fp);
    fclose(fp);
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (types[i].sniff(path, head, n)) return types[i].report(path, json);
    vkl_log(VKL_LOG_ERROR, "%s: unrecognised file type (vklora info reads: safetensors, GGUF, PNG, JPEG, BMP, GIF, TGA)", path);
    return 1;
}

static int usage(FILE *f)
{
    fprintf(f, "usage: vklora info [--json] FILE...\n"
                    "  Describes each FILE: for .safetensors the tensor count, bytes per dtype,\n"
                    "  metadata, and what it holds (SD checkpoint, diffusers component, LoRA\n"
                    "  adapter with its format, ranks, alphas and target modules); for GGUF the\n"
                    "  version, model or adapter, tensors per block type and the metadata; for images\n"
                    "  (PNG, JPEG, BMP, GIF, TGA) the format, size and channels, and the\n"
                    "  generation parameters stored in a PNG (AUTOMATIC1111's PNG Info).\n"
                    "  --json  print the same as JSON (an array when there are several files)\n");
    return 2;
}

int vkl_cmd_info(int argc, char **argv)
{
    int json = 0;
    const char **files = calloc((size_t)argc, sizeof *files);
    if (!files) return 1;
    const vkl_arg opts[] = {{"--json", NULL, VKL_ARG_FLAG, VKL_AS_INT(&json), .help = " print JSON"}};
    vkl_args_rest rest = {files, argc, 0};
    int prc = vkl_args_parse("info", opts, 1, argc, argv, &rest);
    int nfiles = rest.n;
    if (prc || !nfiles) {
        free(files);
        return prc == VKL_ARGS_HELP ? usage(stdout), 0 : usage(stderr);
    }
    int rc = 0;
    if (json && nfiles > 1) puts("[");
    for (int i = 0; i < nfiles; i++) {
        if (json && nfiles > 1 && i) puts(",");
        if (!json && i) putchar('\n');
        if (info_one(files[i], json)) rc = 1;
    }
    free(files);
    if (json && nfiles > 1) puts("]");
    return rc;
}
