/* What the `vklora lm lorahub` tests share: the tiny model, the two halves
 * of a small colour task (one per adapter) and the few examples of both,
 * written into the group's folder, and running the binary there. */
#ifndef VKL_LM_LORAHUB_FIXTURE_H
#define VKL_LM_LORAHUB_FIXTURE_H

#include "vkl_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MODEL "refkit/lm/tiny-llama"
#define TRAIN "--seq-len 16 --batch 4 --rank 4 --alpha 8 --seed 1 --lr 1e-4 --loraplus-ratio 100 --max-steps 40 " \
              "--targets q_proj,v_proj,gate_proj,up_proj,down_proj"

static const char *const HALF_A[4][2] = {
    {"The sky is", " blue."}, {"Grass is", " green."}, {"Snow is", " white."}, {"Fire is", " red."}};
static const char *const HALF_B[4][2] = {
    {"The sun is", " yellow."}, {"Coal is", " black."}, {"The sea is", " blue."}, {"Blood is", " red."}};

static inline void write_jsonl(const char *name, const char *const (*a)[2], const char *const (*b)[2])
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", vkl_test_dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    for (int i = 0; i < 4; i++) {
        if (a) fprintf(f, "{\"prompt\": \"%s\", \"completion\": \"%s\"}\n", a[i][0], a[i][1]);
        if (b) fprintf(f, "{\"prompt\": \"%s\", \"completion\": \"%s\"}\n", b[i][0], b[i][1]);
    }
    fclose(f);
}

static inline int setup(void **state)
{
    if (vkl_test_group_setup(state)) return -1;
    write_jsonl("a.jsonl", HALF_A, NULL);
    write_jsonl("b.jsonl", HALF_B, NULL);
    write_jsonl("few.jsonl", HALF_A, HALF_B);
    return 0;
}

static inline char *run_ok(const char *args)
{
    char *text = NULL;
    int st = vkl_test_cli(args, NULL, &text);
    if (st) fail_msg("vklora %s: status %d\n%s", args, st, text ? text : "");
    return text;
}

static inline void train(const char *data, const char *out, const char *extra)
{
    char args[2048];
    snprintf(args, sizeof args, "--quiet lm train --model '%s' --data %s -o %s %s", vkl_test_shared_path(MODEL), data,
             out, extra);
    free(run_ok(args));
}

static inline const char *path_in(const char *a, const char *b)
{
    static char p[4][1024];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s%s%s", vkl_test_dir, a, b ? "/" : "", b ? b : "");
    return p[k];
}

#endif
