#include "io/dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int copy_file(const char *from, const char *to, vkl_err *e)
{
    FILE *a = fopen(from, "rb");
    if (!a) return vkl_fail(e, "cannot read %s: %s", from, strerror(errno));
    FILE *b = fopen(to, "wb");
    if (!b) {
        fclose(a);
        return vkl_fail(e, "cannot write %s: %s", to, strerror(errno));
    }
    char buf[1 << 16];
    size_t k;
    int rc = 0;
    while (!rc && (k = fread(buf, 1, sizeof buf, a)) > 0)
        if (fwrite(buf, 1, k, b) != k) rc = vkl_fail(e, "cannot write %s: %s", to, strerror(errno));
    if (!rc && ferror(a)) rc = vkl_fail(e, "cannot read %s", from);
    fclose(a);
    if (fclose(b) && !rc) rc = vkl_fail(e, "cannot write %s: %s", to, strerror(errno));
    return rc;
}

static int copy_rec(const char *src, const char *dst, const char *rel, int (*skip)(const char *, void *), void *user,
                    vkl_err *e)
{
    if (mkdir(dst, 0755) && errno != EEXIST) return vkl_fail(e, "cannot create %s: %s", dst, strerror(errno));
    DIR *d = opendir(src);
    if (!d) return vkl_fail(e, "cannot list %s: %s", src, strerror(errno));
    struct dirent *x;
    int rc = 0;
    while (!rc && (x = readdir(d))) {
        if (!strcmp(x->d_name, ".") || !strcmp(x->d_name, "..")) continue;
        size_t ns = strlen(src) + strlen(x->d_name) + 2, nd = strlen(dst) + strlen(x->d_name) + 2,
               nr = strlen(rel) + strlen(x->d_name) + 2;
        char *s = malloc(ns), *t = malloc(nd), *r = malloc(nr);
        if (!s || !t || !r) rc = vkl_fail(e, "out of memory");
        struct stat st;
        if (!rc) {
            snprintf(s, ns, "%s/%s", src, x->d_name);
            snprintf(t, nd, "%s/%s", dst, x->d_name);
            snprintf(r, nr, "%s%s%s", rel, *rel ? "/" : "", x->d_name);
            if (stat(s, &st)) rc = vkl_fail(e, "cannot read %s: %s", s, strerror(errno));
        }
        if (!rc && S_ISDIR(st.st_mode)) rc = copy_rec(s, t, r, skip, user, e);
        else if (!rc && S_ISREG(st.st_mode) && !(skip && skip(r, user))) rc = copy_file(s, t, e);
        free(s);
        free(t);
        free(r);
    }
    closedir(d);
    return rc;
}

int vkl_dir_copy(const char *src, const char *dst, int (*skip)(const char *rel, void *user), void *user, vkl_err *e)
{
    return copy_rec(src, dst, "", skip, user, e);
}

int vkl_dir_remove(const char *path, vkl_err *e)
{
    struct stat st;
    if (lstat(path, &st)) return errno == ENOENT ? 0 : vkl_fail(e, "cannot remove %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return unlink(path) ? vkl_fail(e, "cannot remove %s: %s", path, strerror(errno)) : 0;
    DIR *d = opendir(path);
    if (!d) return vkl_fail(e, "cannot list %s: %s", path, strerror(errno));
    struct dirent *x;
    int rc = 0;
    while (!rc && (x = readdir(d))) {
        if (!strcmp(x->d_name, ".") || !strcmp(x->d_name, "..")) continue;
        size_t n = strlen(path) + strlen(x->d_name) + 2;
        char *p = malloc(n);
        if (!p) rc = vkl_fail(e, "out of memory");
        else {
            snprintf(p, n, "%s/%s", path, x->d_name);
            rc = vkl_dir_remove(p, e);
            free(p);
        }
    }
    closedir(d);
    if (!rc && rmdir(path)) rc = vkl_fail(e, "cannot remove %s: %s", path, strerror(errno));
    return rc;
}

/* fsync of the folder holding path, so renames into it survive a power cut;
 * file systems that cannot sync a folder count as done. */
static int sync_parent(const char *path)
{
    char dir[4200];
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) >= sizeof dir) return 0; /* no folder name to open: the rename stands */
    else snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc && (err == EINVAL || err == ENOTSUP)) rc = 0;
    errno = err;
    return rc ? -1 : 0;
}

int vkl_rename_durable(const char *tmp, const char *path)
{
    if (rename(tmp, path)) return -1;
    return sync_parent(path);
}

int vkl_dir_install(const char *tmp, const char *path, int replace, vkl_err *e)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        if (vkl_rename_durable(tmp, path)) return vkl_fail(e, "cannot move %s to %s: %s", tmp, path, strerror(errno));
        return 0;
    }
    if (!replace) return vkl_fail(e, "%s exists (use --force to replace it)", path);
    char old[4200];
    snprintf(old, sizeof old, "%s.old-%ld", path, (long)getpid());
    if (rename(path, old)) return vkl_fail(e, "cannot move %s aside: %s", path, strerror(errno));
    if (vkl_rename_durable(tmp, path)) {
        int err = errno;
        rename(old, path);
        return vkl_fail(e, "cannot move %s to %s: %s", tmp, path, strerror(err));
    }
    return vkl_dir_remove(old, e);
}

int vkl_dir_replace_atomic(const char *tmp, const char *path, vkl_err *e)
{
    struct stat st;
    if (stat(path, &st) != 0) return vkl_dir_install(tmp, path, 0, e);
    if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_EXCHANGE) != 0) {
        if (errno == EINVAL || errno == ENOSYS || errno == ENOTSUP) return vkl_dir_install(tmp, path, 1, e);
        return vkl_fail(e, "cannot replace %s by %s: %s", path, tmp, strerror(errno));
    }
    /* the exchange is durable once the folder holding both names is synced */
    if (sync_parent(path)) return vkl_fail(e, "cannot sync the folder of %s: %s", path, strerror(errno));
    return vkl_dir_remove(tmp, e); /* the old state, now under the temporary name */
}

int vkl_mkdir_p(const char *path)
{
    char tmp[4096];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s", path) >= sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(tmp, 0755) && errno != EEXIST ? -1 : 0;
}

int vkl_write_text_atomic(const char *path, const char *text, vkl_err *e)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%.4100s.tmp%d", path, (int)getpid()) >= (int)sizeof tmp)
        return vkl_fail(e, "%s: path too long", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return vkl_fail(e, "cannot write %s: %s", tmp, strerror(errno));
    int ok = fputs(text, f) >= 0;
    ok = (fflush(f) == 0) && ok && (fsync(fileno(f)) == 0);
    ok = (fclose(f) == 0) && ok;
    if (!ok || vkl_rename_durable(tmp, path) != 0) {
        unlink(tmp);
        return vkl_fail(e, "cannot write %s: %s", path, strerror(errno));
    }
    return 0;
}
