#include "progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

double vkl_progress_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int vkl_app_quiet;

void vkl_progress_begin(vkl_progress *p, const char *label, int total, int quiet)
{
    quiet |= vkl_app_quiet;
    p->label = label;
    p->total = total;
    p->quiet = quiet;
    p->tty = isatty(2);
    p->start = vkl_progress_now();
    p->last_print = 0;
    p->base_done = -1;
    p->base_time = 0;
}

static void fmt_time(double s, char *buf, size_t n)
{
    int t = (int)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%d:%02d", t / 60, t % 60);
}

void vkl_progress_update(vkl_progress *p, int done, const char *extra)
{
    if (p->quiet) return;
    double now = vkl_progress_now(), el = now - p->start;
    if (p->base_done < 0) {
        p->base_done = done;
        p->base_time = now;
    }
    /* plain output: at most one line every 2 s, and the last step */
    if (!p->tty && done < p->total && now - p->last_print < 2.0) return;
    p->last_print = now;
    double rate = now > p->base_time && done > p->base_done ? (done - p->base_done) / (now - p->base_time) : 0;
    char eta[32] = "?", spent[32];
    if (rate > 0) fmt_time((p->total - done) / rate, eta, sizeof eta);
    fmt_time(el, spent, sizeof spent);
    char rate_s[32];
    if (rate == 0) snprintf(rate_s, sizeof rate_s, "? it/s");
    else if (rate >= 1) snprintf(rate_s, sizeof rate_s, "%.2f it/s", rate);
    else snprintf(rate_s, sizeof rate_s, "%.2f s/it", 1 / rate);
    if (p->tty) {
        int width = 24, fill = p->total ? done * width / p->total : width;
        char bar[32];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r%s [%s] %d/%d %s, %s elapsed, ETA %s%s%s\033[K", p->label, bar, done, p->total, rate_s,
                spent, eta, extra ? " " : "", extra ? extra : "");
    } else {
        fprintf(stderr, "%s %d/%d %s, %s elapsed, ETA %s%s%s\n", p->label, done, p->total, rate_s, spent, eta,
                extra ? " " : "", extra ? extra : "");
    }
    fflush(stderr);
}

void vkl_progress_end(vkl_progress *p)
{
    if (!p->quiet && p->tty) fputc('\n', stderr);
}
