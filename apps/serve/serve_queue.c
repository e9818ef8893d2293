#include "serve/serve_queue.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

double vkl_serve_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int serve_client_gone(int fd)
{
    if (fd < 0) return 0;
    struct pollfd p = {fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLERR | POLLHUP | POLLNVAL | POLLRDHUP)) return 1;
    /* readable: a pipelined next request is data, a close is EOF */
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

void serve_queue_init(serve_queue *q)
{
    memset(q, 0, sizeof *q);
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
}

void serve_queue_destroy(serve_queue *q)
{
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
}

static void unlink_job(serve_queue *q, serve_job *j)
{
    serve_job **pp = &q->head, *prev = NULL;
    while (*pp && *pp != j) prev = *pp, pp = &(*pp)->next;
    if (!*pp) return;
    *pp = j->next;
    if (q->tail == j) q->tail = prev;
    q->waiting--;
    pthread_cond_broadcast(&q->cv);
}

int serve_queue_enter(serve_queue *q, serve_job *j)
{
    pthread_mutex_lock(&q->mu);
    if (q->stopping) {
        pthread_mutex_unlock(&q->mu);
        return -1;
    }
    j->next = NULL;
    j->client_gone = 0; /* interrupted may be set already: a job stopped before its turn */
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    q->waiting++;
    while (q->head != j) {
        /* wake now and then to notice a client that hung up while waiting */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&q->cv, &q->mu, &ts);
        if (q->head == j) break;
        if (q->stopping || j->interrupted || serve_client_gone(j->fd)) {
            j->client_gone = !q->stopping && !j->interrupted;
            unlink_job(q, j);
            pthread_mutex_unlock(&q->mu);
            return -1;
        }
    }
    q->step = 0;
    q->steps = 0;
    q->started = vkl_serve_now();
    q->job_no++;
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(q->job_timestamp, sizeof q->job_timestamp, "%Y%m%d%H%M%S", &tm);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void serve_queue_leave(serve_queue *q, serve_job *j)
{
    pthread_mutex_lock(&q->mu);
    q->step = q->steps = 0;
    unlink_job(q, j);
    pthread_mutex_unlock(&q->mu);
}

int serve_queue_step(serve_queue *q, serve_job *j, int step, int steps)
{
    int gone = serve_client_gone(j->fd);
    pthread_mutex_lock(&q->mu);
    q->step = step;
    q->steps = steps;
    j->step = step;
    if (gone) j->client_gone = 1;
    int stop = j->interrupted || j->client_gone;
    pthread_mutex_unlock(&q->mu);
    return stop;
}

static int is_train(const serve_job *j) { return j->kind && !strcmp(j->kind, "train"); }

int serve_queue_yield(serve_queue *q, serve_job *j)
{
    pthread_mutex_lock(&q->mu);
    serve_job *last = NULL;
    if (q->head == j && !q->stopping)
        for (serve_job *it = j->next; it && !is_train(it); it = it->next) last = it;
    if (!last) {
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    int step = q->step, steps = q->steps;
    q->head = j->next;
    j->next = last->next;
    last->next = j;
    if (q->tail == last) q->tail = j;
    pthread_cond_broadcast(&q->cv);
    while (q->head != j) pthread_cond_wait(&q->cv, &q->mu);
    if (q->stopping) j->interrupted = 1;
    q->step = step;
    q->steps = steps;
    q->started = vkl_serve_now();
    pthread_mutex_unlock(&q->mu);
    return 1;
}

int serve_queue_interrupt(serve_queue *q)
{
    pthread_mutex_lock(&q->mu);
    int running = q->head != NULL;
    if (running) q->head->interrupted = 1;
    pthread_mutex_unlock(&q->mu);
    return running;
}

void serve_queue_stop(serve_queue *q, int hard)
{
    pthread_mutex_lock(&q->mu);
    q->stopping = 1;
    /* a training job saves its state and stops (as at Ctrl-C); others finish unless hard */
    if (q->head && (hard || (q->head->kind && !strcmp(q->head->kind, "train")))) q->head->interrupted = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
}

void serve_queue_drain(serve_queue *q)
{
    pthread_mutex_lock(&q->mu);
    while (q->head) pthread_cond_wait(&q->cv, &q->mu);
    pthread_mutex_unlock(&q->mu);
}
