#include "out_folder.h"

#include "app.h"
#include "progress.h"
#include "stop_signal.h"

#include "io/dir.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void vkl_app_out_folder_remove(const char *dir, const char *const *names, int n)
{
    char p[4400];
    for (int i = 0; i < n; i++)
        if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, names[i]) < sizeof p) unlink(p);
    rmdir(dir);
}

int vkl_app_out_folder_check(const char *out, const char *const *names, int n, int force, vkl_err *e)
{
    struct stat st;
    if (stat(out, &st)) return 0;
    if (!S_ISDIR(st.st_mode)) return vkl_fail(e, "%s exists and is not a folder", out);
    DIR *d = opendir(out);
    if (!d) return vkl_fail(e, "cannot read folder %s", out);
    int others = 0, ours = 0;
    for (struct dirent *x; (x = readdir(d));) {
        if (!strcmp(x->d_name, ".") || !strcmp(x->d_name, "..")) continue;
        int mine = 0;
        for (int i = 0; i < n; i++) mine |= !strcmp(x->d_name, names[i]);
        mine ? ours++ : others++;
    }
    closedir(d);
    if (others) return vkl_fail(e, "%s holds files other than an adapter; choose another output folder", out);
    if (ours && !force) return vkl_fail(e, "%s already holds an adapter; pass --force to replace it", out);
    return 1;
}

int vkl_app_out_file_check(const char *out, int force, vkl_err *e)
{
    struct stat st;
    if (force || stat(out, &st)) return 0;
    return vkl_fail(e, "%s exists; pass --force to replace it", out);
}

int vkl_app_out_file_refuse(const char *cmd, const char *out, int force)
{
    vkl_err e = {{0}};
    if (!vkl_app_out_file_check(out, force, &e)) return 0;
    fprintf(stderr, "vklora %s: %s\n", cmd, e.msg);
    return 1;
}

int vkl_app_out_finish(const char *cmd, int rc, const char *tmp, const char *out, const char *const *names, int n,
                       int out_exists, vkl_err *e)
{
    if (!rc && names && out_exists) vkl_app_out_folder_remove(out, names, n);
    if (!rc && vkl_rename_durable(tmp, out)) rc = vkl_fail(e, "cannot rename %s to %s: %s", tmp, out, strerror(errno));
    if (rc) {
        if (names) vkl_app_out_folder_remove(tmp, names, n);
        else unlink(tmp);
        vkl_app_print_error(cmd, e->msg);
        return vkl_app_stop_requested() ? 130 : 1;
    }
    if (!vkl_app_quiet) fprintf(stderr, "%s: wrote %s\n", cmd, out);
    return 0;
}
