#include "loss_scale.h"

void vkl_loss_scaler_init(vkl_loss_scaler *s)
{
    s->scale = 65536.0f;
    s->good = 0;
    s->growth = 2.0f;
    s->backoff = 0.5f;
    s->interval = 2000;
    s->min_scale = 1.0f;
    s->max_scale = 16777216.0f;
}

int vkl_loss_scaler_update(vkl_loss_scaler *s, int skipped)
{
    if (!skipped) {
        if (++s->good >= s->interval) {
            s->good = 0;
            s->scale = s->scale * s->growth > s->max_scale ? s->max_scale : s->scale * s->growth;
        }
        return 0;
    }
    s->good = 0;
    if (s->scale <= s->min_scale) return 0;
    s->scale = s->scale * s->backoff < s->min_scale ? s->min_scale : s->scale * s->backoff;
    return 1;
}
