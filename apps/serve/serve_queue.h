/* One device job at a time. Requests that need the device wait in a FIFO;
 * the job at its head runs. A training job (kind "train") runs for minutes
 * or hours, so it gives way between its steps: the requests waiting behind
 * it at that moment run first, then it runs at least one more step before
 * it gives way again (serve_queue_yield), so neither side starves. The running job's progress is what
 * /sdapi/v1/progress shows, and its stop flag is what /sdapi/v1/interrupt,
 * a vanished client and a stopping server set. */
#ifndef VKL_SERVE_QUEUE_H
#define VKL_SERVE_QUEUE_H

#include <pthread.h>

typedef struct serve_job {
    struct serve_job *next;
    int fd;           /* the client's socket: polled for a hang-up while waiting and running */
    int interrupted;  /* set by /sdapi/v1/interrupt */
    int client_gone;
    int step;         /* steps done in its current sampling run */
    const char *kind; /* "txt2img", "img2img", "completion": what /sdapi/v1/progress calls the job */
} serve_job;

typedef struct serve_queue {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    serve_job *head, *tail;
    int waiting;        /* jobs in the queue, the running one included */
    int stopping;       /* the server is shutting down: no new jobs */
    /* the running job */
    int step, steps;
    double started;     /* when its first step began (seconds, vkl_serve_now) */
    int job_no;         /* jobs run so far */
    char job_timestamp[32];
} serve_queue;

void serve_queue_init(serve_queue *q);
void serve_queue_destroy(serve_queue *q);
/* Queues j and waits until it is at the head. -1 (j not queued) when the
 * client hung up meanwhile (j->client_gone set) or the server stops. */
int serve_queue_enter(serve_queue *q, serve_job *j);
void serve_queue_leave(serve_queue *q, serve_job *j);
/* The running job's step callback: records progress; nonzero asks the
 * sampler to stop (interrupted, client gone, second signal). */
int serve_queue_step(serve_queue *q, serve_job *j, int step, int steps);
/* Called by the running job between units of work (a training step): when
 * jobs of another kind wait behind it, moves j behind them (ahead of other
 * training jobs) and waits until it is at the head again; 1 when it gave
 * way. A server that began stopping meanwhile sets j->interrupted. */
int serve_queue_yield(serve_queue *q, serve_job *j);
/* Sets the running job's interrupt flag; 1 when a job was running. */
int serve_queue_interrupt(serve_queue *q);
/* No new jobs; waiting ones give up. A running training job stops at the
 * end of its step with its state saved; with hard, any running job stops at
 * its next step. */
void serve_queue_stop(serve_queue *q, int hard);
/* Blocks until no job runs or waits. */
void serve_queue_drain(serve_queue *q);

/* 1 when the peer of fd has closed its side (no data pending, EOF). */
int serve_client_gone(int fd);
double vkl_serve_now(void);

#endif
