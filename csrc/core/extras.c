/*
 * bp_model_extras: what a model file holds besides the network.
 *
 * Design decisions:
 * - Setters copy their arguments and validate them the way the reader
 *   validates a file, so anything that can be set can be saved and read
 *   back, and a loaded file never holds what a setter would refuse.
 * - A setter that fails leaves the extras as they were.
 */
#include "core/extras.h"

#include "core/check.h"
#include "kernels/optim.h"
#include "kernels/sgd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

bp_status bp_model_extras_create(bp_model_extras **out)
{
    BP_REQUIRE_PTR("bp_model_extras_create", out);
    *out = calloc(1, sizeof **out);
    if (*out == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "bp_model_extras_create: out of memory");
    return BP_STATUS_OK;
}

/* Frees `n` strings and the array holding them. */
static void bp_free_texts(char **texts, int64_t n)
{
    if (texts == NULL)
        return;
    for (int64_t i = 0; i < n; i++)
        free(texts[i]);
    free(texts);
}

void bp_model_extras_drop_labels(bp_model_extras *ex)
{
    free(ex->int_labels);
    free(ex->float_labels);
    bp_free_texts(ex->string_labels, ex->n_labels);
    ex->int_labels = NULL;
    ex->float_labels = NULL;
    ex->string_labels = NULL;
    ex->n_labels = 0;
    ex->label_type = BP_LABEL_TYPE_NONE;
}

void bp_model_extras_free(bp_model_extras *ex)
{
    if (ex == NULL)
        return;
    bp_model_extras_drop_labels(ex);
    free(ex->mean);
    free(ex->scale);
    bp_free_texts(ex->meta_keys, ex->n_meta);
    bp_free_texts(ex->meta_values, ex->n_meta);
    free(ex);
}

char *bp_text_copy(const char *text, size_t len)
{
    char *copy = malloc(len + 1);

    if (copy == NULL)
        return NULL;
    memcpy(copy, text, len);
    copy[len] = '\0';
    return copy;
}

int bp_text_valid(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;

    while (i < len) {
        unsigned lead = s[i];
        size_t extra;
        uint32_t code, least;

        if (lead == 0)
            return 0;
        if (lead < 0x80) {
            i++;
            continue;
        }
        if ((lead & 0xE0) == 0xC0) {
            extra = 1, code = lead & 0x1F, least = 0x80;
        } else if ((lead & 0xF0) == 0xE0) {
            extra = 2, code = lead & 0x0F, least = 0x800;
        } else if ((lead & 0xF8) == 0xF0) {
            extra = 3, code = lead & 0x07, least = 0x10000;
        } else {
            return 0;
        }
        if (len - i - 1 < extra)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            code = (code << 6) | (s[i + k] & 0x3Fu);
        }
        if (code < least || code > 0x10FFFF ||
            (code >= 0xD800 && code <= 0xDFFF))
            return 0;
        i += extra + 1;
    }
    return 1;
}

bp_status bp_model_extras_set_optimizer(bp_model_extras *ex,
                                        const bp_sgd_config *sgd)
{
    static const char fn[] = "bp_model_extras_set_optimizer";

    BP_REQUIRE_PTR(fn, ex);
    BP_TRY(bp_sgd_check(fn, sgd));
    ex->opt = bp_sgd_optimizer(sgd);
    ex->sched = (bp_schedule){0};
    ex->has_optimizer = 1;
    return BP_STATUS_OK;
}

int bp_model_extras_get_optimizer(const bp_model_extras *ex,
                                  bp_sgd_config *sgd)
{
    if (ex == NULL || !ex->has_optimizer ||
        ex->opt.kind != BP_OPTIMIZER_SGD)
        return 0;
    if (sgd != NULL)
        *sgd = (bp_sgd_config){ex->opt.lr, ex->opt.momentum,
                               ex->opt.nesterov, ex->opt.weight_decay};
    return 1;
}

bp_status bp_model_extras_set_opt(bp_model_extras *ex,
                                  const bp_optimizer *opt,
                                  const bp_schedule *sched)
{
    static const char fn[] = "bp_model_extras_set_opt";

    BP_REQUIRE_PTR(fn, ex);
    BP_TRY(bp_optimizer_check(fn, opt));
    BP_TRY(bp_schedule_check(fn, sched));
    ex->opt = *opt;
    ex->sched = sched != NULL ? *sched : (bp_schedule){0};
    ex->has_optimizer = 1;
    return BP_STATUS_OK;
}

int bp_model_extras_get_opt(const bp_model_extras *ex, bp_optimizer *opt,
                            bp_schedule *sched)
{
    if (ex == NULL || !ex->has_optimizer)
        return 0;
    if (opt != NULL)
        *opt = ex->opt;
    if (sched != NULL)
        *sched = ex->sched;
    return 1;
}

bp_status bp_model_extras_set_progress(bp_model_extras *ex, uint64_t epochs,
                                       uint64_t steps)
{
    BP_REQUIRE_PTR("bp_model_extras_set_progress", ex);
    ex->epochs = epochs;
    ex->steps = steps;
    ex->has_progress = 1;
    return BP_STATUS_OK;
}

int bp_model_extras_get_progress(const bp_model_extras *ex,
                                 uint64_t *epochs, uint64_t *steps)
{
    if (ex == NULL || !ex->has_progress)
        return 0;
    if (epochs != NULL)
        *epochs = ex->epochs;
    if (steps != NULL)
        *steps = ex->steps;
    return 1;
}

bp_status bp_model_extras_set_rng(bp_model_extras *ex, uint64_t seed,
                                  bp_init init, uint64_t next_stream)
{
    static const char fn[] = "bp_model_extras_set_rng";

    BP_REQUIRE_PTR(fn, ex);
    if (bp_init_name(init) == NULL)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'init' is %d, which is not a bp_init",
                       fn, (int)init);
    ex->seed = seed;
    ex->init = init;
    ex->next_stream = next_stream;
    ex->has_rng = 1;
    return BP_STATUS_OK;
}

int bp_model_extras_get_rng(const bp_model_extras *ex, uint64_t *seed,
                            bp_init *init, uint64_t *next_stream)
{
    if (ex == NULL || !ex->has_rng)
        return 0;
    if (seed != NULL)
        *seed = ex->seed;
    if (init != NULL)
        *init = ex->init;
    if (next_stream != NULL)
        *next_stream = ex->next_stream;
    return 1;
}

/* Checks the arguments every label setter shares. */
static bp_status bp_labels_args(const char *fn, const bp_model_extras *ex,
                                const void *labels, int64_t n)
{
    BP_REQUIRE_PTR(fn, ex);
    BP_REQUIRE_SIZE(fn, n);
    BP_REQUIRE_DATA(fn, labels, n);
    if (n > BP_MAX_FLOATS)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n' is %lld, too many labels", fn,
                       (long long)n);
    return BP_STATUS_OK;
}

/*
 * Copies n items of `size` bytes into a new array. NULL when out of
 * memory; n == 0 also gives NULL, which callers treat as "none".
 */
static void *bp_copy_array(const void *src, int64_t n, size_t size)
{
    void *copy = n > 0 ? malloc((size_t)n * size) : NULL;

    if (copy != NULL)
        memcpy(copy, src, (size_t)n * size);
    return copy;
}

bp_status bp_model_extras_set_labels_int(bp_model_extras *ex,
                                         const int64_t *labels, int64_t n)
{
    static const char fn[] = "bp_model_extras_set_labels_int";

    BP_TRY(bp_labels_args(fn, ex, labels, n));
    int64_t *copy = bp_copy_array(labels, n, sizeof *labels);
    if (n > 0 && copy == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot copy %lld labels", fn, (long long)n);
    bp_model_extras_drop_labels(ex);
    ex->int_labels = copy;
    ex->n_labels = n;
    ex->label_type = n > 0 ? BP_LABEL_TYPE_INT : BP_LABEL_TYPE_NONE;
    return BP_STATUS_OK;
}

bp_status bp_model_extras_set_labels_float(bp_model_extras *ex,
                                           const double *labels, int64_t n)
{
    static const char fn[] = "bp_model_extras_set_labels_float";

    BP_TRY(bp_labels_args(fn, ex, labels, n));
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(labels[i]))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: labels[%lld] is %g; labels must be finite",
                           fn, (long long)i, labels[i]);
    double *copy = bp_copy_array(labels, n, sizeof *labels);
    if (n > 0 && copy == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot copy %lld labels", fn, (long long)n);
    bp_model_extras_drop_labels(ex);
    ex->float_labels = copy;
    ex->n_labels = n;
    ex->label_type = n > 0 ? BP_LABEL_TYPE_FLOAT : BP_LABEL_TYPE_NONE;
    return BP_STATUS_OK;
}

bp_status bp_model_extras_set_labels_string(bp_model_extras *ex,
                                            const char *const *labels,
                                            int64_t n)
{
    static const char fn[] = "bp_model_extras_set_labels_string";

    BP_TRY(bp_labels_args(fn, ex, labels, n));
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] == NULL)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: labels[%lld] is NULL", fn, (long long)i);
        if (strlen(labels[i]) > BP_MAX_TEXT)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: labels[%lld] is 2^31 bytes or longer", fn,
                           (long long)i);
        if (!bp_text_valid(labels[i], strlen(labels[i])))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: labels[%lld] is not valid UTF-8", fn,
                           (long long)i);
    }

    char **copy = n > 0 ? calloc((size_t)n, sizeof *copy) : NULL;
    int ok = n == 0 || copy != NULL;
    for (int64_t i = 0; ok && i < n; i++) {
        copy[i] = bp_text_copy(labels[i], strlen(labels[i]));
        ok = copy[i] != NULL;
    }
    if (!ok) {
        bp_free_texts(copy, n);
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot copy %lld labels", fn, (long long)n);
    }
    bp_model_extras_drop_labels(ex);
    ex->string_labels = copy;
    ex->n_labels = n;
    ex->label_type = n > 0 ? BP_LABEL_TYPE_STRING : BP_LABEL_TYPE_NONE;
    return BP_STATUS_OK;
}

bp_label_type bp_model_extras_label_type(const bp_model_extras *ex)
{
    return ex != NULL ? ex->label_type : BP_LABEL_TYPE_NONE;
}

int64_t bp_model_extras_n_labels(const bp_model_extras *ex)
{
    return ex != NULL ? ex->n_labels : 0;
}

const int64_t *bp_model_extras_labels_int(const bp_model_extras *ex)
{
    return ex != NULL ? ex->int_labels : NULL;
}

const double *bp_model_extras_labels_float(const bp_model_extras *ex)
{
    return ex != NULL ? ex->float_labels : NULL;
}

const char *bp_model_extras_label_string(const bp_model_extras *ex,
                                         int64_t i)
{
    if (ex == NULL || ex->string_labels == NULL || i < 0 ||
        i >= ex->n_labels)
        return NULL;
    return ex->string_labels[i];
}

bp_status bp_model_extras_set_scaling(bp_model_extras *ex, const double *mean,
                                      const double *scale, int64_t n)
{
    static const char fn[] = "bp_model_extras_set_scaling";

    BP_REQUIRE_PTR(fn, ex);
    BP_REQUIRE_SIZE(fn, n);
    BP_REQUIRE_DATA(fn, mean, n);
    BP_REQUIRE_DATA(fn, scale, n);
    if (n > BP_MAX_FLOATS)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'n' is %lld, too many features", fn,
                       (long long)n);
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(mean[i]))
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: mean[%lld] is %g; it must be finite", fn,
                           (long long)i, mean[i]);
        if (!isfinite(scale[i]) || scale[i] == 0.0)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: scale[%lld] is %g; it must be finite and "
                           "nonzero", fn, (long long)i, scale[i]);
    }

    double *m = bp_copy_array(mean, n, sizeof *mean);
    double *s = bp_copy_array(scale, n, sizeof *scale);
    if (n > 0 && (m == NULL || s == NULL)) {
        free(m);
        free(s);
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot copy the scaling of %lld features", fn,
                       (long long)n);
    }
    free(ex->mean);
    free(ex->scale);
    ex->mean = m;
    ex->scale = s;
    ex->n_scaling = n;
    return BP_STATUS_OK;
}

int64_t bp_model_extras_get_scaling(const bp_model_extras *ex,
                                    const double **mean,
                                    const double **scale)
{
    if (mean != NULL)
        *mean = ex != NULL ? ex->mean : NULL;
    if (scale != NULL)
        *scale = ex != NULL ? ex->scale : NULL;
    return ex != NULL ? ex->n_scaling : 0;
}

/* The index of `key` in the metadata, or -1. */
static int64_t bp_meta_find(const bp_model_extras *ex, const char *key)
{
    for (int64_t i = 0; i < ex->n_meta; i++)
        if (strcmp(ex->meta_keys[i], key) == 0)
            return i;
    return -1;
}

/* Removes entry i of the metadata, keeping the others in order. */
static void bp_meta_remove(bp_model_extras *ex, int64_t i)
{
    size_t tail = (size_t)(ex->n_meta - i - 1) * sizeof(char *);

    free(ex->meta_keys[i]);
    free(ex->meta_values[i]);
    memmove(ex->meta_keys + i, ex->meta_keys + i + 1, tail);
    memmove(ex->meta_values + i, ex->meta_values + i + 1, tail);
    ex->n_meta--;
}

/* Appends a key and a value that the extras take ownership of. */
static int bp_meta_append(bp_model_extras *ex, char *key, char *value)
{
    size_t count = (size_t)ex->n_meta + 1;
    char **keys = realloc(ex->meta_keys, count * sizeof *keys);

    if (keys == NULL)
        return 0;
    ex->meta_keys = keys;
    char **values = realloc(ex->meta_values, count * sizeof *values);
    if (values == NULL)
        return 0;
    ex->meta_values = values;
    keys[ex->n_meta] = key;
    values[ex->n_meta] = value;
    ex->n_meta++;
    return 1;
}

bp_status bp_model_extras_set_meta(bp_model_extras *ex, const char *key,
                                   const char *value)
{
    static const char fn[] = "bp_model_extras_set_meta";

    BP_REQUIRE_PTR(fn, ex);
    BP_REQUIRE_PTR(fn, key);
    if (key[0] == '\0')
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'key' is empty", fn);
    if (strlen(key) > BP_MAX_TEXT ||
        (value != NULL && strlen(value) > BP_MAX_TEXT))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: key or value of 2^31 bytes or longer", fn);
    if (!bp_text_valid(key, strlen(key)) ||
        (value != NULL && !bp_text_valid(value, strlen(value))))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: key or value is not valid UTF-8", fn);

    int64_t at = bp_meta_find(ex, key);
    if (value == NULL) {
        if (at >= 0)
            bp_meta_remove(ex, at);
        return BP_STATUS_OK;
    }
    char *copy = bp_text_copy(value, strlen(value));
    if (copy == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot copy the value of '%s'", fn, key);
    if (at >= 0) {
        free(ex->meta_values[at]);
        ex->meta_values[at] = copy;
        return BP_STATUS_OK;
    }
    char *key_copy = bp_text_copy(key, strlen(key));
    if (key_copy == NULL || !bp_meta_append(ex, key_copy, copy)) {
        free(key_copy);
        free(copy);
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot add the key '%s'", fn, key);
    }
    return BP_STATUS_OK;
}

const char *bp_model_extras_get_meta(const bp_model_extras *ex,
                                     const char *key)
{
    if (ex == NULL || key == NULL)
        return NULL;
    int64_t at = bp_meta_find(ex, key);
    return at >= 0 ? ex->meta_values[at] : NULL;
}

int64_t bp_model_extras_n_meta(const bp_model_extras *ex)
{
    return ex != NULL ? ex->n_meta : 0;
}

const char *bp_model_extras_meta_key(const bp_model_extras *ex, int64_t i)
{
    if (ex == NULL || i < 0 || i >= ex->n_meta)
        return NULL;
    return ex->meta_keys[i];
}

const char *bp_model_extras_meta_value(const bp_model_extras *ex, int64_t i)
{
    if (ex == NULL || i < 0 || i >= ex->n_meta)
        return NULL;
    return ex->meta_values[i];
}
