/*
 * Model files, writing: a network and its extras to bytes, in memory
 * or in a file (the format is in docs/model-format.md).
 *
 * Design decisions:
 * - Every integer and float goes out byte by byte in little-endian
 *   order (floats as their IEEE 754 bits); nothing is dumped as a
 *   struct and no text is formatted, so platform and locale never
 *   matter.
 * - The same code runs twice: once counting bytes (no buffer), once
 *   filling them, so the size and the contents cannot disagree.
 * - A file is written under a temporary name beside its target, flushed
 *   and renamed over the target: a failed save never leaves a partial
 *   file behind, nor damages the previous one.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/crc32.h"
#include "core/extras.h"
#include "core/model_format.h"
#include "kernels/optim.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#define BP_HAVE_POSIX_IO 1
#endif

/* Where the next byte goes; with buf == NULL the bytes are only counted. */
typedef struct bp_writer {
    unsigned char *buf;
    size_t at;
} bp_writer;

static void bp_put_bytes(bp_writer *w, const void *src, size_t n)
{
    if (w->buf != NULL && n > 0)
        memcpy(w->buf + w->at, src, n);
    w->at += n;
}

static void bp_put_u32(bp_writer *w, uint32_t v)
{
    unsigned char b[4];

    bp_le_put32(b, v);
    bp_put_bytes(w, b, sizeof b);
}

static void bp_put_u64(bp_writer *w, uint64_t v)
{
    unsigned char b[8];

    bp_le_put64(b, v);
    bp_put_bytes(w, b, sizeof b);
}

static void bp_put_floats(bp_writer *w, const float *x, int64_t n)
{
    if (w->buf == NULL) {
        w->at += (size_t)n * 4;
        return;
    }
    for (int64_t i = 0; i < n; i++) {
        bp_le_put32(w->buf + w->at, bp_f32_bits(x[i]));
        w->at += 4;
    }
}

static void bp_put_zeros(bp_writer *w, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        bp_put_u32(w, 0);
}

static void bp_put_doubles(bp_writer *w, const double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        bp_put_u64(w, bp_f64_bits(x[i]));
}

/*
 * n values of the network's slab `slab` (params, velocity or squares of
 * its dtype; NULL writes zeros) from `at`: floats or doubles.
 */
static void bp_put_slab(bp_writer *w, const bp_net *net, const void *slab,
                        int64_t at, int64_t n)
{
    if (net->dtype == BP_DTYPE_F64 && slab != NULL)
        bp_put_doubles(w, (const double *)slab + at, n);
    else if (slab != NULL)
        bp_put_floats(w, (const float *)slab + at, n);
    else
        bp_put_zeros(w, net->dtype == BP_DTYPE_F64 ? 2 * n : n);
}

/* A string as its length (u32) and its bytes, without the NUL. */
static void bp_put_text(bp_writer *w, const char *text)
{
    size_t len = strlen(text);

    bp_put_u32(w, (uint32_t)len);
    bp_put_bytes(w, text, len);
}

/* Writes a section header; returns where the payload starts. */
static size_t bp_section_begin(bp_writer *w, const char *tag, uint32_t flags)
{
    bp_put_bytes(w, tag, 4);
    bp_put_u32(w, flags);
    bp_put_u64(w, 0);
    return w->at;
}

/* Fills in the payload length and pads the payload with zeros. */
static void bp_section_end(bp_writer *w, size_t start)
{
    static const unsigned char zeros[BP_SECTION_ALIGN] = {0};

    if (w->buf != NULL)
        bp_le_put64(w->buf + start - 8, (uint64_t)(w->at - start));
    bp_put_bytes(w, zeros, (BP_SECTION_ALIGN - w->at % BP_SECTION_ALIGN) %
                               BP_SECTION_ALIGN);
}

/* The layer specs, the loss and the parameters. */
static void bp_write_net(bp_writer *w, const bp_net *net)
{
    size_t at = bp_section_begin(w, BP_TAG_NET, BP_SECTION_REQUIRED);

    bp_put_u32(w, net->dtype == BP_DTYPE_F64 ? BP_DTYPE_FLOAT64
                                             : BP_DTYPE_FLOAT32);
    bp_put_u32(w, (uint32_t)net->loss);
    bp_put_u64(w, (uint64_t)net->n_inputs);
    bp_put_u32(w, (uint32_t)net->n_layers);
    bp_put_u32(w, 0);
    for (int i = 0; i < net->n_layers; i++) {
        bp_put_u32(w, BP_LAYER_DENSE + (uint32_t)net->layers[i].kind);
        bp_put_u32(w, (uint32_t)net->layers[i].activation);
        bp_put_u64(w, (uint64_t)net->layers[i].units);
    }

    /* Added later, after the fields older readers know (and skip). */
    for (int i = 0; i < net->n_layers; i++) {
        bp_put_u32(w, bp_f32_bits(net->layers[i].activation_param));
        bp_put_u32(w, net->layers[i].no_bias ? BP_LAYER_NO_BIAS : 0u);
    }
    bp_put_u32(w, bp_f32_bits(net->loss_cfg.delta));
    bp_put_u32(w, bp_f32_bits(net->loss_cfg.label_smoothing));
    bp_put_u32(w, bp_f32_bits(net->loss_cfg.pos_weight));
    if (net->class_weights != NULL) {
        int64_t n_out = bp_net_n_outputs(net);

        bp_put_u32(w, (uint32_t)n_out);
        bp_put_floats(w, net->class_weights, n_out);
    } else {
        bp_put_u32(w, 0);
    }

    /* Added with the layer kinds: the dropout seed and their options. */
    bp_put_u64(w, net->seed);
    for (int i = 0; i < net->n_layers; i++) {
        bp_put_u32(w, bp_f32_bits(net->layers[i].rate));
        bp_put_u32(w, bp_f32_bits(net->layers[i].eps));
        bp_put_u32(w, bp_f32_bits(net->layers[i].momentum));
        bp_put_u32(w, 0);
    }
    bp_section_end(w, at);

    /* The places of absent biases are written as zeros, whatever the slab
       holds there, so that readers that predate them see zero biases. */
    at = bp_section_begin(w, BP_TAG_PARAMS, BP_SECTION_REQUIRED);
    bp_put_u64(w, (uint64_t)net->n_params);
    for (int i = 0; i < net->n_layers; i++) {
        const void *params = net->dtype == BP_DTYPE_F64
                                 ? (const void *)net->params_d
                                 : (const void *)net->params;

        bp_put_slab(w, net, params, net->w_offset[i],
                    bp_net_layer_n_weights(net, i));
        if (net->layers[i].kind != BP_LAYER_KIND_DROPOUT)
            bp_put_slab(w, net, net->layers[i].no_bias ? NULL : params,
                        net->b_offset[i], net->layers[i].units);
    }
    bp_section_end(w, at);

    /* Batch norm's running averages: predictions need them, so a reader
       that does not know the section must refuse the file. */
    if (net->n_running > 0) {
        at = bp_section_begin(w, BP_TAG_RUNNING, BP_SECTION_REQUIRED);
        bp_put_u64(w, (uint64_t)net->n_running);
        if (net->dtype == BP_DTYPE_F64)
            bp_put_doubles(w, net->running_d, net->n_running);
        else
            bp_put_floats(w, net->running, net->n_running);
        bp_section_end(w, at);
    }
}

static void bp_write_labels(bp_writer *w, const bp_model_extras *ex)
{
    size_t at = bp_section_begin(w, BP_TAG_LABELS, 0);

    bp_put_u32(w, (uint32_t)ex->label_type);
    bp_put_u32(w, 0);
    bp_put_u64(w, (uint64_t)ex->n_labels);
    for (int64_t i = 0; i < ex->n_labels; i++) {
        if (ex->label_type == BP_LABEL_TYPE_INT)
            bp_put_u64(w, (uint64_t)ex->int_labels[i]);
        else if (ex->label_type == BP_LABEL_TYPE_FLOAT)
            bp_put_u64(w, bp_f64_bits(ex->float_labels[i]));
        else
            bp_put_text(w, ex->string_labels[i]);
    }
    bp_section_end(w, at);
}

static void bp_put_f32(bp_writer *w, float x)
{
    bp_put_u32(w, bp_f32_bits(x));
}

/* The schedule's fields in OPTM, settings first, then PLATEAU's state. */
static void bp_write_schedule(bp_writer *w, const bp_schedule *s)
{
    bp_put_u32(w, (uint32_t)s->kind);
    bp_put_u32(w, 0);
    bp_put_u64(w, (uint64_t)s->interval);
    bp_put_u64(w, (uint64_t)s->step_size);
    bp_put_f32(w, s->gamma);
    bp_put_f32(w, s->power);
    bp_put_u64(w, (uint64_t)s->warmup);
    bp_put_u64(w, (uint64_t)s->period);
    bp_put_f32(w, s->min_lr);
    bp_put_f32(w, s->threshold);
    bp_put_u64(w, (uint64_t)s->patience);
    bp_put_u64(w, (uint64_t)s->cooldown);
    bp_put_u64(w, (uint64_t)s->reductions);
    bp_put_u64(w, (uint64_t)s->wait);
    bp_put_u64(w, (uint64_t)s->cooldown_left);
    bp_put_u32(w, s->has_best ? 1u : 0u);
    bp_put_u32(w, 0);
    bp_put_u64(w, bp_f64_bits(s->has_best ? s->best : 0.0));
}

/*
 * OPTM: the version-1 fields and the first state slab, which older
 * readers stop after, then the other settings, the step counter, the
 * schedule and the second slab (zeros if it was never allocated).
 */
static void bp_write_optimizer(bp_writer *w, const bp_net *net,
                               const bp_model_extras *ex)
{
    const bp_optimizer *o = &ex->opt;
    size_t at = bp_section_begin(w, BP_TAG_OPTIMIZER, 0);
    int64_t n_second = bp_optimizer_uses_second(o) ? net->n_params : 0;
    int f64 = net->dtype == BP_DTYPE_F64;

    bp_put_u32(w, (uint32_t)o->kind + BP_OPTIMIZER_CODE_FIRST);
    bp_put_u32(w, o->nesterov ? 1u : 0u);
    bp_put_f32(w, o->lr);
    bp_put_f32(w, o->momentum);
    bp_put_f32(w, o->weight_decay);
    bp_put_u32(w, 0);
    bp_put_u64(w, (uint64_t)net->n_params);
    bp_put_slab(w, net, f64 ? (const void *)net->velocity_d
                            : (const void *)net->velocity,
                0, net->n_params);
    if (!f64 && net->n_params % 2 != 0)
        bp_put_u32(w, 0);

    bp_put_f32(w, o->beta1);
    bp_put_f32(w, o->beta2);
    bp_put_f32(w, o->eps);
    bp_put_f32(w, o->rho);
    bp_put_f32(w, o->clip_norm);
    bp_put_f32(w, o->clip_value);
    bp_put_f32(w, o->initial_accumulator);
    bp_put_u32(w, o->decay_biases ? BP_OPTIMIZER_DECAY_BIASES : 0u);
    bp_put_u64(w, net->step);
    bp_write_schedule(w, &ex->sched);
    bp_put_u64(w, (uint64_t)n_second);
    bp_put_slab(w, net, f64 ? (const void *)net->squares_d
                            : (const void *)net->squares,
                0, n_second);
    bp_section_end(w, at);
}

/* The optional sections, each only when the extras hold it. */
static void bp_write_extras(bp_writer *w, const bp_net *net,
                            const bp_model_extras *ex)
{
    size_t at;

    if (ex->has_optimizer)
        bp_write_optimizer(w, net, ex);
    if (ex->has_progress) {
        at = bp_section_begin(w, BP_TAG_PROGRESS, 0);
        bp_put_u64(w, ex->epochs);
        bp_put_u64(w, ex->steps);
        bp_section_end(w, at);
    }
    if (ex->has_rng) {
        at = bp_section_begin(w, BP_TAG_RNG, 0);
        bp_put_u64(w, ex->seed);
        bp_put_u64(w, ex->next_stream);
        bp_put_u32(w, (uint32_t)ex->init);
        bp_put_u32(w, 0);
        bp_section_end(w, at);
    }
    if (ex->n_labels > 0)
        bp_write_labels(w, ex);
    if (ex->n_scaling > 0) {
        at = bp_section_begin(w, BP_TAG_SCALING, 0);
        bp_put_u64(w, (uint64_t)ex->n_scaling);
        bp_put_doubles(w, ex->mean, ex->n_scaling);
        bp_put_doubles(w, ex->scale, ex->n_scaling);
        bp_section_end(w, at);
    }
    if (ex->n_meta > 0) {
        at = bp_section_begin(w, BP_TAG_META, 0);
        bp_put_u64(w, (uint64_t)ex->n_meta);
        for (int64_t i = 0; i < ex->n_meta; i++) {
            bp_put_text(w, ex->meta_keys[i]);
            bp_put_text(w, ex->meta_values[i]);
        }
        bp_section_end(w, at);
    }
}

/*
 * The whole file. With a buffer, the length in the header and the
 * checksum in the END section are filled in last.
 */
static void bp_write_model(bp_writer *w, const bp_net *net,
                           const bp_model_extras *ex)
{
    bp_put_bytes(w, BP_MODEL_MAGIC, BP_MODEL_MAGIC_SIZE);
    bp_put_u32(w, BPROP_MODEL_FORMAT_VERSION);
    bp_put_u32(w, 0);
    bp_put_u64(w, 0);
    bp_write_net(w, net);
    if (ex != NULL)
        bp_write_extras(w, net, ex);

    size_t at = bp_section_begin(w, BP_TAG_END, BP_SECTION_REQUIRED);
    bp_put_u64(w, 0);
    bp_section_end(w, at);
    if (w->buf != NULL) {
        bp_le_put64(w->buf + 16, (uint64_t)w->at);
        bp_le_put32(w->buf + at, bp_crc32(0, w->buf, at));
    }
}

/*
 * Index of the first value of slab k (0 params, 2 velocity, 3 squares,
 * of the network's dtype) that is NaN or infinite, or -1; *value is it.
 */
static int64_t bp_first_nonfinite(const bp_net *net, int k, double *value)
{
    const float *x = k == 0 ? net->params : k == 2 ? net->velocity
                                                   : net->squares;
    const double *xd = k == 0 ? net->params_d : k == 2 ? net->velocity_d
                                                       : net->squares_d;

    for (int64_t i = 0; (x != NULL || xd != NULL) && i < net->n_params; i++) {
        *value = xd != NULL ? xd[i] : (double)x[i];
        if (!isfinite(*value))
            return i;
    }
    return -1;
}

/* Checks that the network and the extras can be written and read back. */
static bp_status bp_save_check(const char *fn, const bp_net *net,
                               const bp_model_extras *ex)
{
    BP_REQUIRE_PTR(fn, net);

    double value = 0.0;
    int64_t bad = bp_first_nonfinite(net, 0, &value);
    if (bad >= 0)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: parameter %lld is %g; only finite parameters "
                       "can be saved", fn, (long long)bad, value);
    if (ex == NULL)
        return BP_STATUS_OK;

    int64_t n_out = bp_net_n_outputs(net);
    if (ex->has_optimizer) {
        bad = bp_first_nonfinite(net, 2, &value);
        if (bad >= 0)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: momentum buffer %lld is %g; only finite "
                           "values can be saved", fn, (long long)bad, value);
        bad = bp_first_nonfinite(net, 3, &value);
        if (bad >= 0)
            return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                           "%s: second-moment buffer %lld is %g; only "
                           "finite values can be saved", fn,
                           (long long)bad, value);
    }
    if (ex->n_labels > 0 && ex->n_labels != n_out &&
        !(n_out == 1 && ex->n_labels == 2))
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the extras hold %lld class labels but the "
                       "network has %lld outputs", fn,
                       (long long)ex->n_labels, (long long)n_out);
    if (ex->n_scaling > 0 && ex->n_scaling != net->n_inputs)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: the extras scale %lld input features but the "
                       "network takes %lld", fn, (long long)ex->n_scaling,
                       (long long)net->n_inputs);
    return BP_STATUS_OK;
}

bp_status bp_net_save_buffer(const bp_net *net, const bp_model_extras *extras,
                             void *buf, size_t capacity, size_t *size)
{
    static const char fn[] = "bp_net_save_buffer";

    BP_REQUIRE_PTR(fn, size);
    BP_TRY(bp_save_check(fn, net, extras));

    bp_writer w = {NULL, 0};
    bp_write_model(&w, net, extras);
    *size = w.at;
    if (buf == NULL)
        return BP_STATUS_OK;
    if (capacity < w.at)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "%s: argument 'capacity' is %zu; the model takes "
                       "%zu bytes", fn, capacity, w.at);

    w.buf = buf;
    w.at = 0;
    bp_write_model(&w, net, extras);
    return BP_STATUS_OK;
}

/* The text of an errno value, without strerror's shared buffer. */
static const char *bp_errno_text(int err, char *buf, size_t n)
{
#if defined(_WIN32)
    if (strerror_s(buf, n, err) != 0)
        snprintf(buf, n, "error %d", err);
#elif defined(BP_HAVE_POSIX_IO)
    if (strerror_r(err, buf, n) != 0)
        snprintf(buf, n, "error %d", err);
#else
    snprintf(buf, n, "%s", strerror(err));
#endif
    return buf;
}

/*
 * Opens a new file beside `path` for writing, trying a few names so
 * that concurrent saves never share one. NULL with errno set on failure.
 */
static FILE *bp_open_temporary(const char *path, char *name, size_t size)
{
    long pid = 0;
    FILE *f = NULL;

#if defined(BP_HAVE_POSIX_IO)
    pid = (long)getpid();
#endif
    for (int attempt = 0; attempt < 100 && f == NULL; attempt++) {
        snprintf(name, size, "%s.%ld-%d.tmp", path, pid, attempt);
        errno = 0;
        f = fopen(name, "wbx");
        if (f == NULL && errno != EEXIST)
            break;
    }
    return f;
}

/* Writes `size` bytes to `f`, flushes them to the disk and closes it. */
static int bp_write_all(FILE *f, const void *data, size_t size)
{
    int ok = fwrite(data, 1, size, f) == size && fflush(f) == 0;

#if defined(BP_HAVE_POSIX_IO)
    ok = ok && fsync(fileno(f)) == 0;
#endif
    int err = errno;
    ok = fclose(f) == 0 && ok;
    if (!ok && errno == 0)
        errno = err;
    return ok;
}

/* Writes the bytes to a temporary file and renames it to `path`. */
static bp_status bp_write_file(const char *fn, const char *path,
                               const void *data, size_t size)
{
    size_t name_size = strlen(path) + 32;
    char *name = malloc(name_size);
    char why[128];

    if (name == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY, "%s: out of memory", fn);
    FILE *f = bp_open_temporary(path, name, name_size);
    if (f == NULL) {
        bp_errno_text(errno, why, sizeof why);
        free(name);
        return bp_fail(BP_STATUS_IO,
                       "%s: cannot create a file beside '%s': %s", fn, path,
                       why);
    }

    errno = 0;
    if (!bp_write_all(f, data, size)) {
        bp_errno_text(errno, why, sizeof why);
        remove(name);
        free(name);
        return bp_fail(BP_STATUS_IO, "%s: cannot write '%s': %s", fn, path,
                       why);
    }
#if defined(_WIN32)
    /* NOTE: rename() on Windows does not replace an existing file. */
    remove(path);
#endif
    if (rename(name, path) != 0) {
        bp_errno_text(errno, why, sizeof why);
        remove(name);
        free(name);
        return bp_fail(BP_STATUS_IO, "%s: cannot replace '%s': %s", fn, path,
                       why);
    }
    free(name);
    return BP_STATUS_OK;
}

bp_status bp_net_save(const bp_net *net, const char *path,
                      const bp_model_extras *extras)
{
    static const char fn[] = "bp_net_save";

    BP_REQUIRE_PTR(fn, path);
    BP_TRY(bp_save_check(fn, net, extras));

    bp_writer w = {NULL, 0};
    bp_write_model(&w, net, extras);
    size_t size = w.at;
    w.buf = malloc(size);
    if (w.buf == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %zu bytes for '%s'", fn, size,
                       path);
    w.at = 0;
    bp_write_model(&w, net, extras);

    bp_status status = bp_write_file(fn, path, w.buf, size);
    free(w.buf);
    return status;
}
