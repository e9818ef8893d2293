/* What the `vklora lorahub` tests share: the tiny SD model, portrait
 * folders copied from the shared data into the group's folder (ta, tb: the
 * two training pairs; few: one portrait of each), adapters trained there. */
#ifndef VKL_SD_LORAHUB_FIXTURE_H
#define VKL_SD_LORAHUB_FIXTURE_H

#include "vkl_test.h"
#include "io/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SD "refkit/sd/tiny-sd"
#define IMAGES "data/wesnoth-portraits/test16-128px"
#define COMMON "--resolution 64 --timesteps 2 --seed 1"

static inline const char *path_in(const char *name)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", vkl_test_dir, name);
    return p[k];
}

/* folder `dir` with the portraits (png + txt) of the given stems */
static inline void portraits(const char *dir, const char *const *stems, int n)
{
    char cmd[4096];
    const char *src = vkl_test_shared_path(IMAGES);
    for (int i = 0; i < n; i++) {
        snprintf(cmd, sizeof cmd, "mkdir -p '%s' && cp '%s/%s.png' '%s/%s.txt' '%s/'", path_in(dir), src, stems[i], src,
                 stems[i], path_in(dir));
        assert_int_equal(system(cmd), 0);
    }
}

static inline int setup(void **state)
{
    if (vkl_test_group_setup(state)) return -1;
    if (!vkl_test_shared_exists(IMAGES)) return 0; /* the tests skip */
    static const char *const a[] = {"drakes_burner", "dwarves_fighter"}, *const b[] = {"saurians_skirmisher", "trolls_troll"},
                             *const few[] = {"drakes_burner", "saurians_skirmisher"};
    portraits("ta", a, 2);
    portraits("tb", b, 2);
    portraits("few", few, 2);
    return 0;
}

static inline char *run_ok(const char *args)
{
    char *text = NULL;
    int st = vkl_test_cli(args, NULL, &text);
    if (st) fail_msg("vklora %s: status %d\n%s", args, st, text ? text : "");
    return text;
}

static inline void train(const char *images, const char *out, int steps)
{
    char args[2048];
    snprintf(args, sizeof args, "--quiet train --model '%s' --images %s --resolution 64 --rank 4 --alpha 4 --lr 1e-2 "
             "--max-steps %d --batch 2 --seed 1 -o %s", vkl_test_shared_path(SD), images, steps, out);
    free(run_ok(args));
}

static inline float *read_all(vkl_st_file *f, const vkl_st_tensor *t)
{
    float *x = malloc(sizeof(float) * t->nelem);
    vkl_err e = {{0}};
    if (vkl_st_read(f, t, VKL_F32, x, &e)) fail_msg("%s", e.msg);
    return x;
}

static inline int ends_with(const char *s, const char *t)
{
    size_t a = strlen(s), b = strlen(t);
    return a >= b && !strcmp(s + a - b, t);
}

#endif
