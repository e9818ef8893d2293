#include "lorahub_report.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

int vkl_app_lorahub_split(const char *cmd, const char *list, char *buf, size_t size, const char **out, int *n)
{
    if (strlen(list) >= size) {
        fprintf(stderr, "vklora %s: --adapters: the list is too long\n", cmd);
        return -1;
    }
    memcpy(buf, list, strlen(list) + 1);
    *n = 0;
    for (char *p = buf;;) {
        char *comma = strchr(p, ',');
        if (comma) *comma = 0;
        if (!*p) {
            fprintf(stderr, "vklora %s: --adapters %s: an empty entry (paths are separated by single commas)\n", cmd,
                    list);
            return -1;
        }
        if (*n == VKL_LORAHUB_MAX) {
            fprintf(stderr, "vklora %s: --adapters: at most %d adapters\n", cmd, VKL_LORAHUB_MAX);
            return -1;
        }
        out[(*n)++] = p;
        if (!comma) break;
        p = comma + 1;
    }
    if (*n < 2) {
        fprintf(stderr, "vklora %s: --adapters %s: LoRAHub mixes at least 2 adapters (one given)\n", cmd, list);
        return -1;
    }
    return 0;
}

static void put_weights(FILE *f, const double *w, int k)
{
    for (int i = 0; i < k; i++) fprintf(f, ",%.9g", w[i]);
    fputc('\n', f);
}

int vkl_app_lorahub_report_open(vkl_app_lorahub_report *r, const char *path, vkl_err *e)
{
    r->ref = calloc((size_t)r->k + 1, sizeof(double));
    if (!r->ref) return vkl_fail(e, "out of host memory");
    r->log = fopen(path, "w");
    if (!r->log) return vkl_fail(e, "cannot create %s", path);
    fputs("row,evaluations,loss,objective", r->log);
    for (int i = 0; i < r->k; i++) fprintf(r->log, ",w_%d", i + 1);
    fputc('\n', r->log);
    return 0;
}

int vkl_app_lorahub_report_close(vkl_app_lorahub_report *r, const char *path, vkl_err *e)
{
    free(r->ref);
    r->ref = NULL;
    if (!r->log) return 0;
    int bad = ferror(r->log);
    bad |= fclose(r->log) != 0;
    r->log = NULL;
    return bad ? vkl_fail(e, "cannot write %s", path) : 0;
}

void vkl_app_lorahub_on_reference(void *user, int which, double loss)
{
    vkl_app_lorahub_report *r = user;
    r->ref[which] = loss;
    if (!r->quiet) {
        if (which < r->k) fprintf(stderr, "%s: input %d (%s) alone: loss %.5f\n", r->cmd, which + 1, r->names[which], loss);
        else fprintf(stderr, "%s: plain average (w = 1/%d each): loss %.5f\n", r->cmd, r->k, loss);
    }
    if (!r->log) return;
    /* the objective of a reference point (sum |w| = 1 for each), comparable with the search's rows */
    if (which < r->k) fprintf(r->log, "input_%d,0,%.9g,%.9g,", which + 1, loss, loss + r->l1);
    else fprintf(r->log, "average,0,%.9g,%.9g,", loss, loss + r->l1);
    for (int i = 0; i < r->k; i++) fprintf(r->log, "%s%.9g", i ? "," : "", which == r->k ? 1.0 / r->k : (double)(i == which));
    fputc('\n', r->log);
}

void vkl_app_lorahub_on_generation(void *user, const vkl_lorahub_gen *g)
{
    vkl_app_lorahub_report *r = user;
    if (!r->quiet) {
        fprintf(stderr, "%s: generation %d/%d [%d/%d evaluations] best loss %.5f (objective %.5f; this generation's "
                        "best %.5f) w = [",
                r->cmd, g->gen, g->generations, g->evals, g->budget, g->best_loss, g->best, g->gen_best);
        for (int i = 0; i < r->k; i++) fprintf(stderr, "%s%.3f", i ? ", " : "", g->best_w[i]);
        fputs("]\n", stderr);
    }
    if (!r->log) return;
    fprintf(r->log, "generation_%d,%d,%.9g,%.9g", g->gen, g->evals, g->best_loss, g->best);
    put_weights(r->log, g->best_w, r->k);
}

void vkl_app_lorahub_report_result(vkl_app_lorahub_report *r, const vkl_lorahub_opts *o, const vkl_lorahub_result *res)
{
    if (r->log) {
        fprintf(r->log, "best,%d,%.9g,%.9g", res->evals, res->loss, res->objective);
        put_weights(r->log, res->w, r->k);
    }
    if (r->quiet) return;
    double best_in = res->input_loss[0];
    for (int i = 1; i < o->k; i++) best_in = res->input_loss[i] < best_in ? res->input_loss[i] : best_in;
    fprintf(stderr, "%s: learnt weights [", r->cmd);
    for (int i = 0; i < r->k; i++) fprintf(stderr, "%s%.4f", i ? ", " : "", res->w[i]);
    fprintf(stderr, "]: loss %.5f (best input alone %.5f, plain average %.5f) after %d evaluations\n", res->loss,
            best_in, res->average_loss, res->evals);
}

static int meta_number_array(vkl_lora *l, const char *key, const double *v, int n, vkl_err *e)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    if (!s) return vkl_fail(e, "out of host memory");
    int rc = vkl_lora_meta_set(l, key, s, e);
    free(s);
    return rc;
}

int vkl_app_lorahub_metadata(vkl_lora *l, const vkl_app_lorahub_report *r, const vkl_lorahub_result *res,
                             const char *const *adapter_names, vkl_err *e)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < r->k; i++) cJSON_AddItemToArray(a, cJSON_CreateString(adapter_names[i]));
    char *s = a ? cJSON_PrintUnformatted(a) : NULL;
    cJSON_Delete(a);
    if (!s) return vkl_fail(e, "out of host memory");
    char num[64];
    int rc = vkl_lora_meta_set(l, "lorahub_adapters", s, e);
    free(s);
    if (!rc) rc = meta_number_array(l, "lorahub_weights", res->w, r->k, e);
    if (!rc) rc = meta_number_array(l, "lorahub_input_losses", res->input_loss, r->k, e);
    snprintf(num, sizeof num, "%.9g", res->loss);
    if (!rc) rc = vkl_lora_meta_set(l, "lorahub_loss", num, e);
    snprintf(num, sizeof num, "%.9g", res->average_loss);
    if (!rc) rc = vkl_lora_meta_set(l, "lorahub_average_loss", num, e);
    return rc;
}
