/* One context per thread: two threads each create their own context (with
 * validation when the suite runs with it), build and run matmul graphs many
 * times at once, and get the host reference's answer every time. */
#include "vkl_test.h"
#include "ops.h"
#include "vkl.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int id, rounds, ok;
    char error[1024];
} job;

static void *worker(void *arg)
{
    job *j = arg;
    vkl_err e = {{0}};
    vkl_ctx *c = NULL;
    enum { M = 24, K = 40, N = 16 };
    float a[M * K], b[K * N], y[M * N], want[M * N];
    if (vkl_ctx_create(NULL, &c, &e)) {
        snprintf(j->error, sizeof j->error, "%s", e.msg);
        return NULL;
    }
    int good = 0;
    for (int r = 0; r < j->rounds; r++) {
        for (int i = 0; i < M * K; i++) a[i] = (float)((i * 7 + r * 13 + j->id * 5) % 17) / 17.0f - 0.5f;
        for (int i = 0; i < K * N; i++) b[i] = (float)((i * 11 + r * 3 + j->id) % 19) / 19.0f - 0.5f;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                double s = 0;
                for (int k = 0; k < K; k++) s += (double)a[m * K + k] * b[k * N + n];
                want[m * N + n] = (float)s;
            }
        vkl_tensor *A = vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){M, K}, &e);
        vkl_tensor *B = A ? vkl_tensor_new(c, VKL_F32, 2, (int64_t[]){K, N}, &e) : NULL;
        vkl_graph *g = NULL;
        int rc = !B || vkl_tensor_upload(c, A, a, VKL_F32, &e) || vkl_tensor_upload(c, B, b, VKL_F32, &e);
        if (!rc) {
            g = vkl_graph_new(c);
            vkl_tensor *out = vkl_matmul(g, A, B);
            vkl_graph_keep(g, out);
            rc = vkl_graph_plan(g, &e) || vkl_graph_run(g, &e) || vkl_tensor_download(c, out, y, VKL_F32, &e);
        }
        vkl_graph_free(g);
        vkl_tensor_free(A);
        vkl_tensor_free(B);
        if (rc) {
            snprintf(j->error, sizeof j->error, "round %d: %.900s", r, e.msg);
            break;
        }
        double worst = 0;
        for (int i = 0; i < M * N; i++) worst = fmax(worst, fabs(y[i] - want[i]));
        if (worst > 1e-4) {
            snprintf(j->error, sizeof j->error, "round %d: max error %g", r, worst);
            break;
        }
        good++;
    }
    if (vkl_ctx_validation_count(c)) snprintf(j->error, sizeof j->error, "validation messages");
    vkl_ctx_destroy(c);
    j->ok = good == j->rounds && !j->error[0];
    return NULL;
}

static void two_threads_two_contexts(void **state)
{
    (void)state;
    job jobs[2] = {{0, 12, 0, ""}, {1, 12, 0, ""}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&th[i], NULL, worker, &jobs[i]), 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < 2; i++) {
        if (!jobs[i].ok) print_error("thread %d: %s\n", i, jobs[i].error);
        assert_true(jobs[i].ok);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(two_threads_two_contexts)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
