/* Training from uploaded images: POST /vklora/v1/train may carry
 * "uploads": [{"image": BASE64, "caption": TEXT}, ...] in place of a
 * server-side "images" folder. The images (PNG, JPEG, BMP, GIF or TGA, each
 * checked whole before anything is written) and their captions become
 * --data-root/uploads/NAME/NNNN.EXT + NNNN.txt, the image-folder layout
 * `vklora train` reads; the folder is built under a hidden temporary name
 * and moved into place whole, so a failed or interrupted upload never
 * leaves a half folder that a later job could train on. */
#include "serve/serve.h"
#include "serve/serve_json.h"

#include "io/dir.h"
#include "io/image.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_UPLOADS 1000

static int write_bytes(const char *path, const void *data, size_t n, vkl_err *e)
{
    FILE *f = fopen(path, "wb");
    if (!f) return vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
    int bad = fwrite(data, 1, n, f) != n;
    bad |= fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    return bad ? vkl_fail(e, "cannot write %s: %s", path, strerror(errno)) : 0;
}

/* One upload, checked and written as tmp/NNNN.EXT (+ NNNN.txt). */
static int write_one(vkl_server *s, const cJSON *it, int i, const char *tmp, vkl_err *e)
{
    if (!cJSON_IsObject(it)) return vkl_fail(e, "'uploads[%d]' must be an object {\"image\": BASE64, \"caption\": TEXT}", i);
    const char *b64 = NULL, *caption = NULL;
    if (sj_str(it, "image", SIZE_MAX, &b64, e) || sj_str(it, "caption", 64 * 1024, &caption, e)) {
        char msg[1100];
        snprintf(msg, sizeof msg, "'uploads[%d]': %s", i, e->msg);
        return vkl_fail(e, "%s", msg);
    }
    if (!b64) return vkl_fail(e, "'uploads[%d]' has no 'image' (a base64 image)", i);
    for (const cJSON *k = it->child; k; k = k->next)
        if (strcmp(k->string, "image") && strcmp(k->string, "caption"))
            return vkl_fail(e, "'uploads[%d].%s': an upload has 'image' and 'caption' only", i, k->string);
    uint8_t *bytes = NULL;
    size_t len = 0;
    vkl_err be = {{0}};
    if (sj_base64_decode(b64, &bytes, &len, &be)) return vkl_fail(e, "'uploads[%d].image': %s", i, be.msg);
    char label[32];
    snprintf(label, sizeof label, "uploads[%d]", i);
    /* the whole file is decoded once, so a corrupt image is refused here
     * rather than found by the training job later */
    vkl_image_info info;
    vkl_image im = {0};
    int bad = vkl_image_info_memory(bytes, len, label, &info, e);
    if (!bad && ((long long)info.width > 4LL * s->lim.max_side || (long long)info.height > 4LL * s->lim.max_side))
        bad = vkl_fail(e, "'%s' is %dx%d; this server takes images of at most %d pixels a side", label, info.width,
                       info.height, 4 * s->lim.max_side);
    if (!bad) bad = vkl_image_read_memory(bytes, len, label, 3, VKL_PIX_U8, &im, NULL, e);
    vkl_image_free(&im);
    char ext[16], path[4400];
    if (!bad) {
        snprintf(ext, sizeof ext, "%s", vkl_image_format_name(info.format));
        for (char *p = ext; *p; p++) *p = (char)tolower((unsigned char)*p);
        snprintf(path, sizeof path, "%s/%04d.%s", tmp, i + 1, ext);
        bad = write_bytes(path, bytes, len, e);
    }
    free(bytes);
    if (!bad && caption) {
        snprintf(path, sizeof path, "%s/%04d.txt", tmp, i + 1);
        bad = write_bytes(path, caption, strlen(caption), e);
    }
    return bad;
}

int serve_train_uploads(vkl_server *s, const cJSON *uploads, const char *name, char *rel, size_t cap, vkl_err *e)
{
    if (!cJSON_IsArray(uploads) || !uploads->child)
        return vkl_fail(e, "'uploads' must be a non-empty list of {\"image\": BASE64, \"caption\": TEXT}");
    int n = cJSON_GetArraySize(uploads);
    if (n > MAX_UPLOADS) return vkl_fail(e, "'uploads' holds %d images; at most %d", n, MAX_UPLOADS);
    char dir[4096], final[4200], tmp[4300];
    snprintf(dir, sizeof dir, "%s/uploads", s->data_root);
    snprintf(final, sizeof final, "%s/%s", dir, name);
    struct stat st;
    if (!stat(final, &st)) return vkl_fail(e, "'name' \"%s\": the upload folder %s exists already", name, final);
    static int counter; /* requests of one name at once each build their own folder */
    snprintf(tmp, sizeof tmp, "%s/.%s.tmp-%ld-%d", dir, name, (long)getpid(), __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    if (vkl_mkdir_p(dir)) return vkl_fail(e, "cannot make %s: %s", dir, strerror(errno));
    vkl_err ig = {{0}};
    vkl_dir_remove(tmp, &ig); /* a leftover of an earlier failed upload */
    if (mkdir(tmp, 0755)) return vkl_fail(e, "cannot make %s: %s", tmp, strerror(errno));
    int i = 0, bad = 0;
    for (const cJSON *it = uploads->child; it && !bad; it = it->next, i++) bad = write_one(s, it, i, tmp, e);
    if (!bad) bad = vkl_dir_install(tmp, final, 0, e);
    if (bad) {
        vkl_dir_remove(tmp, &ig);
        return -1;
    }
    snprintf(rel, cap, "uploads/%s", name);
    return 0;
}
