#include "lora_dir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef struct walk {
    vkl_lora_dir_entry *v;
    int n, cap;
    const char *only; /* a name to collect alone; NULL: all */
} walk;

static int is_adapter(const char *file, size_t *stem)
{
    size_t n = strlen(file);
    if (n <= 12 || strcasecmp(file + n - 12, ".safetensors")) return 0;
    *stem = n - 12;
    return 1;
}

static int push(walk *w, const char *path, const char *file, size_t stem, vkl_err *e)
{
    if (w->n == VKL_LORA_DIR_MAX) return vkl_fail(e, "more than %d adapter files under the folder", VKL_LORA_DIR_MAX);
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 32;
        vkl_lora_dir_entry *v = realloc(w->v, sizeof *v * (size_t)cap);
        if (!v) return vkl_fail(e, "out of host memory");
        w->v = v;
        w->cap = cap;
    }
    vkl_lora_dir_entry *x = &w->v[w->n];
    x->name = strndup(file, stem);
    x->path = strdup(path);
    if (!x->name || !x->path) {
        free(x->name);
        free(x->path);
        return vkl_fail(e, "out of host memory");
    }
    w->n++;
    return 0;
}

static int walk_dir(walk *w, const char *dir, int depth, vkl_err *e)
{
    DIR *d = opendir(dir);
    if (!d) {
        /* an unreadable subfolder is left out, as a file browser would; the
         * top folder itself must open */
        return depth ? 0 : vkl_fail(e, "cannot read the adapter folder %s: %s", dir, strerror(errno));
    }
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path) continue;
        struct stat st;
        if (stat(path, &st)) continue; /* a dangling link */
        size_t stem;
        if (S_ISDIR(st.st_mode)) {
            if (depth + 1 <= VKL_LORA_DIR_DEPTH) rc = walk_dir(w, path, depth + 1, e);
        } else if (S_ISREG(st.st_mode) && is_adapter(de->d_name, &stem) &&
                   (!w->only || (strlen(w->only) == stem && !strncmp(w->only, de->d_name, stem)))) {
            rc = push(w, path, de->d_name, stem, e);
        }
    }
    closedir(d);
    return rc;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const vkl_lora_dir_entry *)a)->path, ((const vkl_lora_dir_entry *)b)->path);
}

void vkl_lora_dir_free(vkl_lora_dir_entry *l, int n)
{
    for (int i = 0; i < n; i++) {
        free(l[i].name);
        free(l[i].path);
    }
    free(l);
}

static int collect(const char *dir, const char *only, vkl_lora_dir_entry **out, int *n, vkl_err *e)
{
    walk w = {.only = only};
    if (walk_dir(&w, dir, 0, e)) {
        vkl_lora_dir_free(w.v, w.n);
        return -1;
    }
    if (w.n) qsort(w.v, (size_t)w.n, sizeof *w.v, by_path);
    *out = w.v;
    *n = w.n;
    return 0;
}

int vkl_lora_dir_list(const char *dir, vkl_lora_dir_entry **out, int *n, vkl_err *e)
{
    return collect(dir, NULL, out, n, e);
}

int vkl_lora_dir_find(const char *dir, const char *name, char *path, size_t cap, vkl_err *e)
{
    struct stat st;
    if ((size_t)snprintf(path, cap, "%s/%s.safetensors", dir, name) >= cap)
        return vkl_fail(e, "<lora:%s>: the path is too long", name);
    if (!stat(path, &st) && S_ISREG(st.st_mode)) return 0;
    vkl_lora_dir_entry *l = NULL;
    int n = 0;
    if (collect(dir, name, &l, &n, e)) return -1;
    int rc = 0;
    if (n == 0)
        rc = vkl_fail(e, "<lora:%s>: no %s.safetensors in the adapter folder %s or its subfolders", name, name, dir);
    else if (n > 1)
        rc = vkl_fail(e, "<lora:%s>: %d adapters have that name (%s and %s): rename one", name, n, l[0].path,
                      l[1].path);
    else if ((size_t)snprintf(path, cap, "%s", l[0].path) >= cap)
        rc = vkl_fail(e, "<lora:%s>: the path is too long", name);
    vkl_lora_dir_free(l, n);
    return rc;
}
