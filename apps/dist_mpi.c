/* MPI transport of the training communicator (runtime/dist.h). Collectives
 * are non-blocking calls polled with short sleeps under a deadline
 * ($VKLORA_DIST_TIMEOUT seconds, default 1800): a rank that died or hangs
 * ends the job with a message instead of leaving the others waiting (MPI
 * cannot cancel a collective, so the way out is MPI_Abort). The sleeps also
 * keep a waiting rank off the cores its neighbours compute on. */
#include "dist_app.h"

#include "vkl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

vkl_dist *vkl_app_dist;

/* How this rank's device was chosen, for the rank's start-up line. */
static char choice[320];
const char *vkl_app_device_choice(void) { return choice; }

/* Entry i (mod their count) of a per-rank device list "A,B,..." as the
 * default device; a spec without a comma is no list (main sets it). The
 * list was checked (vkl_app_device_list_check). */
static void device_entry(const char *spec, int i)
{
    static char chosen[256];
    static char origin[64];
    if (!spec || !strchr(spec, ',')) return;
    int n = 1;
    for (const char *p = spec; *p; p++) n += *p == ',';
    const char *p = spec;
    for (int k = 0; k < i % n; k++) p = strchr(p, ',') + 1;
    size_t len = strcspn(p, ",");
    snprintf(chosen, sizeof chosen, "%.*s", (int)(len < 255 ? len : 255), p);
    snprintf(origin, sizeof origin, "--device (entry %d, this rank's) ", i % n + 1);
    snprintf(choice, sizeof choice, "--device entry %d (%s)", i % n + 1, chosen);
    vkl_ctx_default_device(chosen, origin);
}

int vkl_app_device_list_check(const char *spec, char *why, size_t why_size)
{
    if (!spec || !strchr(spec, ',')) return 0;
    vkl_caps *caps = NULL;
    int n = 0, entry = 1;
    vkl_err e = {{0}};
    if (vkl_list_devices(NULL, &caps, &n, &e)) {
        snprintf(why, why_size, "%s", e.msg);
        return -1;
    }
    int rc = 0;
    for (const char *p = spec; !rc; entry++) {
        size_t len = strcspn(p, ",");
        char one[256], origin[48];
        if (!len || len > 255) {
            snprintf(why, why_size, "--device %s: entry %d is %s (a comma-separated list, one device per local "
                                    "rank: an index, cpu, gpu or part of a name)", spec, entry, len ? "too long" : "empty");
            rc = -1;
            break;
        }
        snprintf(one, sizeof one, "%.*s", (int)len, p);
        snprintf(origin, sizeof origin, "entry %d, ", entry);
        if (vkl_device_match(caps, n, one, origin, &e) < 0) {
            snprintf(why, why_size, "--device %s: %s", spec, e.msg);
            rc = -1;
        }
        if (!p[len]) break;
        p += len + 1;
    }
    free(caps);
    return rc;
}

int vkl_app_device_option(const char *spec, const char *cmd)
{
    char why[512];
    if (vkl_app_device_list_check(spec, why, sizeof why)) {
        fprintf(stderr, "vklora %s: %s\n", cmd, why);
        return 2;
    }
    if (!strchr(spec, ',')) vkl_ctx_default_device(spec, "--device ");
    else device_entry(spec, vkl_app_dist ? vkl_app_dist->local_rank : 0);
    return 0;
}

/* The launcher's environment: Open MPI, PMIx or PMI (MPICH, Slurm). */
static int launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

#ifdef VKLORA_MPI
#include <mpi.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>

static vkl_dist world;
static double timeout_s = 1800;
static char transport[96] = "MPI";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int mpi_fail(int code, const char *what, vkl_err *e)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(code, msg, &len);
    return vkl_fail(e, "%s: %.*s", what, len, msg);
}

/* Waits for r under the deadline; past it the job ends (see above). */
static int wait_for(MPI_Request *r, const char *what, vkl_err *e)
{
    double t0 = now_s(), t;
    long nap_ns = 50000;
    for (;;) {
        int done = 0, rc = MPI_Test(r, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, e);
        if (done) return 0;
        /* a non-blocking collective advances only inside MPI_Test: poll
         * tightly for 50 ms (the rounds of a sum in progress), then nap */
        if ((t = now_s() - t0) < 0.05) {
            sched_yield();
            continue;
        }
        if (t > timeout_s) {
            fprintf(stderr, "vklora: rank %d of %d: no answer from the other ranks in %s for %.0f s "
                            "(a rank died or hangs; $VKLORA_DIST_TIMEOUT); ending the job\n",
                    world.rank, world.size, what, timeout_s);
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        struct timespec ts = {0, nap_ns};
        nanosleep(&ts, NULL);
        if (nap_ns < 1000000) nap_ns *= 2;
    }
}

static int reduce(void *buf, size_t n, MPI_Datatype t, MPI_Op op, const char *what, vkl_err *e)
{
    /* MPI counts are int: large buffers go in slices */
    size_t esz = t == MPI_FLOAT ? sizeof(float) : sizeof(double);
    for (size_t off = 0; off < n;) {
        int k = n - off > (size_t)1 << 30 ? 1 << 30 : (int)(n - off);
        MPI_Request r;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + off * esz, k, t, op, MPI_COMM_WORLD, &r);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what, e);
        if (wait_for(&r, what, e)) return -1;
        off += (size_t)k;
    }
    return 0;
}

static int sum_f32(vkl_dist *d, float *buf, size_t n, vkl_err *e)
{
    (void)d;
    return reduce(buf, n, MPI_FLOAT, MPI_SUM, "a gradient sum", e);
}

static int sum_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e)
{
    (void)d;
    return reduce(buf, n, MPI_DOUBLE, MPI_SUM, "a sum of step values", e);
}

static int max_f64(vkl_dist *d, double *buf, size_t n, vkl_err *e)
{
    (void)d;
    return reduce(buf, n, MPI_DOUBLE, MPI_MAX, "an agreement between ranks", e);
}

static int bcast(vkl_dist *d, void *buf, size_t bytes, int root, vkl_err *e)
{
    (void)d;
    if (bytes > (size_t)1 << 30) return vkl_fail(e, "broadcast of %zu bytes: too large", bytes);
    MPI_Request r;
    int rc = MPI_Ibcast(buf, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD, &r);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "a broadcast", e);
    return wait_for(&r, "a broadcast", e);
}

/* Local rank i takes the i-th GPU (discrete or integrated) of the machine,
 * round-robin; without GPUs every rank keeps the default device. */
static void pick_device(const char *spec)
{
    static char chosen[32];
    if (spec && strchr(spec, ',')) {
        device_entry(spec, world.local_rank);
        return;
    }
    if (spec || getenv("VKLORA_DEVICE")) return;
    vkl_caps *caps = NULL;
    int n = 0, gpus = 0;
    vkl_err e;
    if (vkl_list_devices(NULL, &caps, &n, &e)) return;
    for (int i = 0; i < n; i++) gpus += caps[i].type == VKL_DEV_DISCRETE || caps[i].type == VKL_DEV_INTEGRATED;
    for (int i = 0, g = 0; gpus && i < n; i++) {
        if (caps[i].type != VKL_DEV_DISCRETE && caps[i].type != VKL_DEV_INTEGRATED) continue;
        if (g++ == world.local_rank % gpus) {
            snprintf(chosen, sizeof chosen, "%d", i);
            snprintf(choice, sizeof choice, "GPU %d of %d, round-robin", g, gpus);
            vkl_ctx_default_device(chosen, "the local rank's device ");
        }
    }
    free(caps);
}

int vkl_app_dist_init(int *argc, char ***argv, const char *device_spec)
{
    if (!launched()) {
        device_entry(device_spec, 0);
        return 0;
    }
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
        fprintf(stderr, "vklora: MPI_Init failed\n");
        return -1;
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    MPI_Comm_rank(MPI_COMM_WORLD, &world.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world.size);
    MPI_Comm local;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world.rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &world.local_rank);
    MPI_Comm_size(local, &world.local_size);
    MPI_Comm_free(&local);
    world.sum_f32 = sum_f32;
    world.sum_f64 = sum_f64;
    world.max_f64 = max_f64;
    world.bcast = bcast;
    const char *t = getenv("VKLORA_DIST_TIMEOUT");
    if (t) {
        char *end;
        double v = strtod(t, &end);
        if (!*t || *end || !(v > 0)) {
            fprintf(stderr, "vklora: VKLORA_DIST_TIMEOUT=%s: expected a positive number of seconds\n", t);
            MPI_Finalize();
            return -1;
        }
        timeout_s = v;
    }
    char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    MPI_Get_library_version(lib, &len);
    snprintf(transport, sizeof transport, "MPI (%.*s)", (int)strcspn(lib, ",\n"), lib);
    vkl_app_dist = &world;
    if (world.size > 1) {
        /* mpirun binds a rank to one core by default (2 ranks or fewer): the
         * driver's threads (all of lavapipe's work) then share that core */
        cpu_set_t set;
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        if (!sched_getaffinity(0, sizeof set, &set) && CPU_COUNT(&set) == 1 && cpus > 1 && !world.rank)
            vkl_log(VKL_LOG_WARN, "the launcher bound each rank to one core of %ld; the device driver's threads share "
                    "it (mpirun --bind-to none lets them spread)", cpus);
        pick_device(device_spec);
        if (world.rank) vkl_log_set_level(VKL_LOG_WARN);
    } else {
        device_entry(device_spec, 0);
    }
    return 0;
}

void vkl_app_dist_finish(int status)
{
    if (!vkl_app_dist) return;
    if (status == 1 && world.size > 1) {
        fflush(stdout);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Finalize();
    vkl_app_dist = NULL;
}

const char *vkl_app_dist_transport(void) { return transport; }

#else

int vkl_app_dist_init(int *argc, char ***argv, const char *device_spec)
{
    (void)argc;
    (void)argv;
    /* every process would train the whole run alone, into the same files */
    const char *n = getenv("OMPI_COMM_WORLD_SIZE");
    if (!n) n = getenv("PMI_SIZE");
    if (launched() && n && atoi(n) > 1) {
        fprintf(stderr, "vklora: started by mpirun with %s processes, but built without MPI (cmake -DVKLORA_MPI=ON "
                        "with libopenmpi-dev installed); run one process\n", n);
        return -1;
    }
    device_entry(device_spec, 0);
    return 0;
}

void vkl_app_dist_finish(int status) { (void)status; }
const char *vkl_app_dist_transport(void) { return "none (built without MPI)"; }

#endif
