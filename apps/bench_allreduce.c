/* vklora bench allreduce: the gradient sum of data-parallel training
 * (runtime/dist.h) on an adapter's tensors: one f32 device tensor per LoRA
 * factor of every attention projection of a full-size UNet (what `vklora
 * train` trains by default), summed across the ranks of `mpirun -np N`
 * through host staging buckets, as the trainers do each step. Prints the
 * median time per sum, the bytes per second (adapter bytes / time), and the
 * part spent in the transport (the rest is device download and upload).
 * Checks the sum: rank r fills its tensors with r + 1. */
#include "bench_allreduce.h"
#include "bench_util.h"
#include "dist_app.h"

#include "lora/lora_file.h"
#include "sd/sd_config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int attention_projection(const char *name)
{
    return !strncmp(name, "unet.", 5) && strstr(name, ".transformer_blocks.") &&
           (strstr(name, ".attn1.to_") || strstr(name, ".attn2.to_"));
}

int vkl_bench_allreduce(int argc, char **argv)
{
    const char *family = "sd1.5";
    int rank = 16, reps = 10, bucket_mib = 4;
    const vkl_arg opts[] = {
        {"--family", NULL, VKL_ARG_STR, VKL_AS_STR(&family), .help = "sd1.5|sd2.1|sdxl"},
        {"--rank", NULL, VKL_ARG_INT, VKL_AS_INT(&rank), 1, 1024, .help = "R  of the LoRA whose gradients are summed"},
        {"--bucket-mib", NULL, VKL_ARG_INT, VKL_AS_INT(&bucket_mib), 1, 4096, .help = "M"},
        {"--reps", NULL, VKL_ARG_INT, VKL_AS_INT(&reps), 1, 10000, .help = "N"},
    };
    int prc = vkl_bench_args("allreduce", opts, (int)(sizeof opts / sizeof *opts), argc, argv);
    if (prc) return prc == VKL_ARGS_HELP ? 0 : prc;
    vkl_dist *d = vkl_app_dist;
    int me = d ? d->rank : 0, size = d ? d->size : 1;
    vkl_err e = {{0}};
    vkl_sd_config cfg;
    vkl_lora_targets tg;
    memset(&tg, 0, sizeof tg);
    vkl_ctx *c = NULL;
    vkl_tensor **t = NULL;
    float *host = NULL;
    double *times = NULL;
    int n = 0, rc = 1;
    int64_t elems = 0, biggest = 0;
    if (vkl_sd_config_preset(family, &cfg, &e) || vkl_lora_targets_from_sd(&cfg, &tg, &e) ||
        vkl_ctx_create(NULL, &c, &e))
        goto done;
    t = calloc((size_t)tg.n * 2 + 1, sizeof *t);
    times = malloc(sizeof *times * (size_t)reps);
    if (!t || !times) {
        vkl_fail(&e, "out of host memory");
        goto done;
    }
    for (int i = 0; i < tg.n; i++) {
        const vkl_lora_target *x = &tg.v[i];
        if (!attention_projection(x->name) || x->ndim != 2) continue;
        int64_t shapes[2][2] = {{rank, x->shape[1]}, {x->shape[0], rank}};
        for (int k = 0; k < 2; k++) {
            if (!(t[n] = vkl_tensor_new(c, VKL_F32, 2, shapes[k], &e))) goto done;
            int64_t ne = vkl_tensor_nelem(t[n++]);
            elems += ne;
            if (ne > biggest) biggest = ne;
        }
    }
    if (!n) {
        vkl_fail(&e, "%s has no attention projections", family);
        goto done;
    }
    host = malloc(sizeof(float) * (size_t)biggest);
    if (!host) {
        vkl_fail(&e, "out of host memory");
        goto done;
    }
    if (!me)
        printf("allreduce: %s rank-%d adapter, %d tensors, %.2f M parameters (%.1f MiB f32), %d rank(s), "
               "buckets of %d MiB, transport %s\n",
               family, rank, n, elems / 1e6, elems * 4.0 / 1048576.0, size, bucket_mib, vkl_app_dist_transport());
    if (size < 2) {
        printf("allreduce: one process: nothing to sum (run it under mpirun -np N)\n");
        rc = 0;
        goto done;
    }
    for (int r = 0; r <= reps; r++) {
        for (int i = 0; i < n; i++) {
            for (int64_t k = 0; k < vkl_tensor_nelem(t[i]); k++) host[k] = (float)(me + 1);
            if (vkl_tensor_upload(c, t[i], host, VKL_F32, &e)) goto done;
        }
        double comm0 = d ? d->comm_seconds : 0, t0 = vkl_bench_now();
        if (vkl_dist_sum_tensors(d, c, t, n, 1.0f, (size_t)bucket_mib << 20, &e)) goto done;
        double dt = vkl_bench_now() - t0, comm = d ? d->comm_seconds - comm0 : 0;
        if (r) times[r - 1] = dt; /* the first one warms up */
        if (r == reps && !me)
            printf("allreduce: last sum: %.1f%% of its time in the transport\n", dt > 0 ? 100 * comm / dt : 0);
    }
    /* every element is 1 + 2 + ... + size */
    float want = size > 1 ? (float)size * (size + 1) / 2 : 1.0f;
    for (int i = 0; i < n; i++) {
        if (vkl_tensor_download(c, t[i], host, VKL_F32, &e)) goto done;
        for (int64_t k = 0; k < vkl_tensor_nelem(t[i]); k++)
            if (host[k] != want) {
                vkl_fail(&e, "tensor %d element %lld is %g after the sum, not %g", i, (long long)k, host[k], want);
                goto done;
            }
    }
    qsort(times, (size_t)reps, sizeof *times, vkl_bench_cmp_double);
    double med = times[reps / 2];
    if (!me)
        printf("allreduce: %.4f s per sum (median of %d), %.1f MB/s of adapter gradient (%.0f MB in %.4f s)\n", med,
               reps, elems * 4.0 / 1e6 / med, elems * 4.0 / 1e6, med);
    rc = 0;
done:
    if (rc) fprintf(stderr, "vklora bench allreduce: %s\n", e.msg);
    for (int i = 0; t && i < n; i++) vkl_tensor_free(t[i]);
    free(t);
    free(host);
    free(times);
    vkl_lora_targets_free(&tg);
    if (c) vkl_ctx_destroy(c);
    return rc;
}
