/* Progress display for long work: a bar with step, it/s and ETA that redraws
 * in place on a terminal, plain lines otherwise, nothing when quiet. */
#ifndef VKL_PROGRESS_H
#define VKL_PROGRESS_H

typedef struct vkl_progress {
    const char *label;
    int total;
    int quiet;
    int tty;
    double start, last_print;
    /* the rate counts from the first update on: steps before it were resumed
     * from a saved state, and the first one compiles the shaders */
    int base_done;
    double base_time;
} vkl_progress;

/* Set by the program's global --quiet: every command is quiet then. */
extern int vkl_app_quiet;

void vkl_progress_begin(vkl_progress *p, const char *label, int total, int quiet);
/* done = steps finished so far; extra = optional text appended (may be NULL). */
void vkl_progress_update(vkl_progress *p, int done, const char *extra);
void vkl_progress_end(vkl_progress *p);
double vkl_progress_now(void);

#endif
