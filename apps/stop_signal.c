#include "stop_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_;
static struct sigaction old_int_, old_term_;

static void on_signal(int sig)
{
    (void)sig;
    stop_ = 1;
}

void vkl_app_stop_catch(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
}

void vkl_app_stop_restore(void)
{
    sigaction(SIGINT, &old_int_, NULL);
    sigaction(SIGTERM, &old_term_, NULL);
}

int vkl_app_stop_requested(void)
{
    return stop_ != 0;
}

void vkl_app_stop_request(void)
{
    stop_ = 1;
}

int vkl_app_stop_check(vkl_err *e)
{
    return stop_ ? vkl_fail(e, "interrupted; nothing written") : 0;
}
