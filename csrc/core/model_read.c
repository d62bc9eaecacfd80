/*
 * Model files, reading: bytes in memory or in a file back to a network
 * and its extras (the format is in docs/model-format.md).
 *
 * Design decisions:
 * - The whole file is checked before any section is parsed: magic,
 *   version, the length in the header against the bytes present, and
 *   the checksum. Then every section length is checked against the
 *   bytes that remain, and every count against its section's length
 *   before anything is allocated, so no file can make the reader read
 *   out of bounds or allocate much more than the file's size.
 * - The network and the extras are built in fresh memory and handed out
 *   only when the whole file is valid.
 * - A file is read in growing chunks, never past the length its header
 *   announces, so a device or a corrupt length cannot make it hang or
 *   exhaust memory.
 * - Fields a section has beyond those this version knows are ignored,
 *   and so are optional sections it does not know: later versions can
 *   add both without breaking older readers.
 */
#include "core/net.h"

#include "core/check.h"
#include "core/crc32.h"
#include "core/extras.h"
#include "core/model_format.h"
#include "kernels/optim.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What is being read, for messages: a file's path, or NULL for memory. */
typedef struct bp_source {
    const char *fn;
    const char *path;
} bp_source;

/*
 * Fails with BP_STATUS_FORMAT and a message "<fn>: '<path>' <detail>",
 * where the detail is a phrase such as "is truncated".
 */
static bp_status bp_bad(const bp_source *src, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static bp_status bp_bad(const bp_source *src, const char *fmt, ...)
{
    char detail[400];
    va_list args;

    va_start(args, fmt);
    vsnprintf(detail, sizeof detail, fmt, args);
    va_end(args);
    if (src->path != NULL)
        return bp_fail(BP_STATUS_FORMAT, "%s: '%s' %s", src->fn, src->path,
                       detail);
    return bp_fail(BP_STATUS_FORMAT, "%s: the buffer %s", src->fn, detail);
}

/* A section tag as text, with bytes outside printable ASCII as \xNN. */
static const char *bp_tag_text(const unsigned char *tag, char out[17])
{
    char *p = out;

    for (int i = 0; i < 4; i++) {
        if (tag[i] >= 0x20 && tag[i] < 0x7F && tag[i] != '\\')
            *p++ = (char)tag[i];
        else
            p += snprintf(p, 5, "\\x%02X", tag[i]);
    }
    *p = '\0';
    return out;
}

/* A bounded cursor over one section's payload. */
typedef struct bp_reader {
    const unsigned char *p;
    size_t n;
    size_t at;
} bp_reader;

static size_t bp_left(const bp_reader *r)
{
    return r->n - r->at;
}

static int bp_get_u32(bp_reader *r, uint32_t *v)
{
    if (bp_left(r) < 4)
        return 0;
    *v = bp_le_get32(r->p + r->at);
    r->at += 4;
    return 1;
}

static int bp_get_u64(bp_reader *r, uint64_t *v)
{
    if (bp_left(r) < 8)
        return 0;
    *v = bp_le_get64(r->p + r->at);
    r->at += 8;
    return 1;
}

/* Reads n floats that the caller checked are present. */
static void bp_get_floats(bp_reader *r, float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++, r->at += 4)
        x[i] = bp_f32_from_bits(bp_le_get32(r->p + r->at));
}

/* Reads n doubles that the caller checked are present. */
static void bp_get_doubles(bp_reader *r, double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++, r->at += 8)
        x[i] = bp_f64_from_bits(bp_le_get64(r->p + r->at));
}

/* Reads a string (u32 length, bytes) into a new NUL-terminated copy. */
static bp_status bp_get_text(const bp_source *src, bp_reader *r,
                             const char *section, char **out)
{
    uint32_t len;

    *out = NULL;
    if (!bp_get_u32(r, &len) || len > bp_left(r))
        return bp_bad(src, "is corrupt: a string in section %s runs past "
                      "its end", section);
    const char *text = (const char *)r->p + r->at;
    if (!bp_text_valid(text, len))
        return bp_bad(src, "is corrupt: a string in section %s is not "
                      "valid UTF-8", section);
    *out = bp_text_copy(text, len);
    if (*out == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: out of memory reading section %s", src->fn,
                       section);
    r->at += len;
    return BP_STATUS_OK;
}

/* The sections this version knows, found by bp_index_sections. */
enum {
    BP_SEC_NET,
    BP_SEC_PARAMS,
    BP_SEC_OPTIMIZER,
    BP_SEC_PROGRESS,
    BP_SEC_RNG,
    BP_SEC_LABELS,
    BP_SEC_SCALING,
    BP_SEC_META,
    BP_SEC_RUNNING,
    BP_SEC_COUNT
};

static const char *const bp_section_tags[BP_SEC_COUNT] = {
    BP_TAG_NET,    BP_TAG_PARAMS,  BP_TAG_OPTIMIZER, BP_TAG_PROGRESS,
    BP_TAG_RNG,    BP_TAG_LABELS,  BP_TAG_SCALING,   BP_TAG_META,
    BP_TAG_RUNNING,
};

/* Payloads of the known sections; p == NULL for one that is absent. */
typedef struct bp_sections {
    bp_reader sec[BP_SEC_COUNT];
} bp_sections;

/*
 * Checks the magic, the version and the header fields of the first
 * `size` bytes, and returns the file length the header announces.
 */
static bp_status bp_check_header(const bp_source *src,
                                 const unsigned char *data, size_t size,
                                 uint64_t *length)
{
    size_t head = size < BP_MODEL_MAGIC_SIZE ? size : BP_MODEL_MAGIC_SIZE;

    if (size == 0)
        return bp_bad(src, "is empty");
    if (memcmp(data, BP_MODEL_MAGIC, head) != 0)
        return bp_bad(src, "is not a bprop model file: it does not start "
                      "with the bytes \\x89BPM\\r\\n\\x1A\\n");
    if (size < BP_MODEL_HEADER_SIZE)
        return bp_bad(src, "is truncated: it holds %zu bytes, fewer than "
                      "the %d of a header", size, BP_MODEL_HEADER_SIZE);

    uint32_t version = bp_le_get32(data + 8);
    if (version == 0)
        return bp_bad(src, "is corrupt: its format version is 0");
    if (version > BPROP_MODEL_FORMAT_VERSION)
        return bp_bad(src, "uses format version %u, which is newer than "
                      "this bprop (%s) reads (up to version %d): upgrade "
                      "bprop to load it", (unsigned)version, bp_version(),
                      BPROP_MODEL_FORMAT_VERSION);
    if (bp_le_get32(data + 12) != 0)
        return bp_bad(src, "is corrupt: header flags 0x%08X are set, but "
                      "version %u defines none", (unsigned)bp_le_get32(
                      data + 12), (unsigned)version);

    *length = bp_le_get64(data + 16);
    if (*length < BP_MODEL_HEADER_SIZE + BP_END_SIZE ||
        *length % BP_SECTION_ALIGN != 0)
        return bp_bad(src, "is corrupt: its header gives a length of %llu "
                      "bytes", (unsigned long long)*length);
    return BP_STATUS_OK;
}

/* Checks the length and the END section's checksum of a whole file. */
static bp_status bp_check_whole(const bp_source *src,
                                const unsigned char *data, size_t size,
                                uint64_t length)
{
    char tag[17];

    if (size < length)
        return bp_bad(src, "is truncated: it holds %zu of the %llu bytes "
                      "its header announces", size,
                      (unsigned long long)length);
    if (size > length)
        return bp_bad(src, "is corrupt: it has %zu bytes after the %llu "
                      "its header announces", size - (size_t)length,
                      (unsigned long long)length);

    const unsigned char *end = data + size - BP_END_SIZE;
    if (memcmp(end, BP_TAG_END, 4) != 0 ||
        bp_le_get64(end + 8) != BP_END_PAYLOAD)
        return bp_bad(src, "is corrupt: it does not end with an END "
                      "section (found '%s')", bp_tag_text(end, tag));

    /* The checksum cannot cover the word after it, which is fixed. */
    if (bp_le_get32(end + BP_SECTION_HEADER_SIZE + 4) != 0)
        return bp_bad(src, "is corrupt: its last 4 bytes are not zero");

    uint32_t stored = bp_le_get32(end + BP_SECTION_HEADER_SIZE);
    uint32_t actual = bp_crc32(0, data, size - BP_END_PAYLOAD);
    if (stored != actual)
        return bp_bad(src, "is corrupt: its checksum is 0x%08X but its "
                      "contents give 0x%08X", (unsigned)stored,
                      (unsigned)actual);
    return BP_STATUS_OK;
}

/* Walks the sections between the header and END, noting known ones. */
static bp_status bp_index_sections(const bp_source *src,
                                   const unsigned char *data, size_t size,
                                   bp_sections *found)
{
    size_t at = BP_MODEL_HEADER_SIZE, stop = size - BP_END_SIZE;
    char tag[17];

    memset(found, 0, sizeof *found);
    while (at < stop) {
        const unsigned char *head = data + at;

        if (stop - at < BP_SECTION_HEADER_SIZE)
            return bp_bad(src, "is corrupt: a section header at byte %zu "
                          "runs into the END section", at);
        uint32_t flags = bp_le_get32(head + 4);
        uint64_t len = bp_le_get64(head + 8);
        at += BP_SECTION_HEADER_SIZE;
        uint64_t padded = len + (BP_SECTION_ALIGN - len % BP_SECTION_ALIGN) %
                                    BP_SECTION_ALIGN;
        if (len > stop - at || padded > stop - at)
            return bp_bad(src, "is corrupt: section '%s' claims %llu bytes "
                          "but %zu remain before the END section",
                          bp_tag_text(head, tag), (unsigned long long)len,
                          stop - at);

        int known = -1;
        for (int k = 0; k < BP_SEC_COUNT; k++)
            if (memcmp(head, bp_section_tags[k], 4) == 0)
                known = k;
        if (known >= 0) {
            if (found->sec[known].p != NULL)
                return bp_bad(src, "is corrupt: it has two '%s' sections",
                              bp_tag_text(head, tag));
            found->sec[known] = (bp_reader){data + at, (size_t)len, 0};
        } else if (memcmp(head, BP_TAG_END, 4) == 0) {
            return bp_bad(src, "is corrupt: an END section at byte %zu "
                          "comes before the end", at - BP_SECTION_HEADER_SIZE);
        } else if (flags & BP_SECTION_REQUIRED) {
            return bp_bad(src, "needs section '%s', which this bprop (%s) "
                          "cannot read: upgrade bprop to load it",
                          bp_tag_text(head, tag), bp_version());
        }
        at += (size_t)padded;
    }
    if (found->sec[BP_SEC_NET].p == NULL)
        return bp_bad(src, "is corrupt: it has no NETW section");
    if (found->sec[BP_SEC_PARAMS].p == NULL)
        return bp_bad(src, "is corrupt: it has no PARM section");
    return BP_STATUS_OK;
}

/*
 * The parameters layer specs need, or -1 if they would not fit. The
 * widths of layers other than dense are checked later, by
 * bp_net_create_ex; here they count as they are written.
 */
static int64_t bp_count_params(int64_t n_inputs, const bp_layer_spec *layers,
                               int n_layers)
{
    int64_t total = 0, in = n_inputs;

    for (int i = 0; i < n_layers; i++) {
        int64_t out = layers[i].units;

        if (in > (BP_MAX_FLOATS - total) / (out + 1))
            return -1;
        switch (layers[i].kind) {
        case BP_LAYER_KIND_DENSE:
            total += in * out + out;
            break;
        case BP_LAYER_KIND_DROPOUT:
            break;
        default:
            total += 2 * out;
            break;
        }
        in = out;
    }
    return total;
}

/*
 * Reads the dropout seed and each layer's rate, eps and momentum, which
 * follow the loss options in files that have layer kinds.
 */
static bp_status bp_read_kind_options(const bp_source *src, bp_reader *r,
                                      bp_layer_spec *layers, uint32_t count,
                                      uint64_t *seed)
{
    if (bp_left(r) == 0)
        return BP_STATUS_OK;
    if (bp_left(r) < BP_NET_SEED ||
        (bp_left(r) - BP_NET_SEED) / BP_NET_KIND_MORE < count)
        return bp_bad(src, "is corrupt: section NETW ends inside its layer "
                      "options");
    bp_get_u64(r, seed);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t rate = 0, eps = 0, momentum = 0, reserved = 0;

        bp_get_u32(r, &rate);
        bp_get_u32(r, &eps);
        bp_get_u32(r, &momentum);
        bp_get_u32(r, &reserved);
        layers[i].rate = bp_f32_from_bits(rate);
        layers[i].eps = bp_f32_from_bits(eps);
        layers[i].momentum = bp_f32_from_bits(momentum);
    }
    return BP_STATUS_OK;
}

/*
 * Reads what NETW holds after the layers, when it does (files written
 * before these fields end with the layers and keep the defaults): each
 * layer's activation parameter and flags, then the loss options, with
 * class weights in a new array *class_weights, then the dropout seed and
 * the options of the layer kinds.
 */
static bp_status bp_read_net_more(const bp_source *src, bp_reader *r,
                                  bp_layer_spec *layers, uint32_t count,
                                  bp_loss_config *cfg, float **class_weights,
                                  uint64_t *seed)
{
    uint32_t delta = 0, smoothing = 0, pos_weight = 0, k = 0;

    if (bp_left(r) == 0)
        return BP_STATUS_OK;
    if (bp_left(r) / BP_NET_LAYER_MORE < count ||
        bp_left(r) - (size_t)count * BP_NET_LAYER_MORE < BP_NET_LOSS_MORE)
        return bp_bad(src, "is corrupt: section NETW ends inside its layer "
                      "and loss options");
    for (uint32_t i = 0; i < count; i++) {
        uint32_t param = 0, flags = 0;

        bp_get_u32(r, &param);
        bp_get_u32(r, &flags);
        if (flags & ~BP_LAYER_NO_BIAS)
            return bp_bad(src, "is corrupt: layer %u has the unknown flags "
                          "0x%08X", (unsigned)i, (unsigned)flags);
        layers[i].activation_param = bp_f32_from_bits(param);
        layers[i].no_bias = (flags & BP_LAYER_NO_BIAS) != 0;
    }
    bp_get_u32(r, &delta);
    bp_get_u32(r, &smoothing);
    bp_get_u32(r, &pos_weight);
    bp_get_u32(r, &k);
    cfg->delta = bp_f32_from_bits(delta);
    cfg->label_smoothing = bp_f32_from_bits(smoothing);
    cfg->pos_weight = bp_f32_from_bits(pos_weight);
    if (k == 0)
        return bp_read_kind_options(src, r, layers, count, seed);

    if ((uint64_t)k != (uint64_t)layers[count - 1].units ||
        bp_left(r) / 4 < k)
        return bp_bad(src, "is corrupt: section NETW holds %u class "
                      "weights for %lld outputs", (unsigned)k,
                      (long long)layers[count - 1].units);
    *class_weights = malloc((size_t)k * sizeof(float));
    if (*class_weights == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %u class weights", src->fn,
                       (unsigned)k);
    bp_get_floats(r, *class_weights, k);
    cfg->class_weights = *class_weights;
    return bp_read_kind_options(src, r, layers, count, seed);
}

/*
 * Reads NETW's fields and layer specs into a new array *layers, and the
 * loss into *cfg, with class weights in a new array *class_weights.
 */
static bp_status bp_read_specs(const bp_source *src, bp_reader r,
                               bp_loss_config *cfg, int64_t *n_inputs,
                               bp_layer_spec **layers, int *n_layers,
                               float **class_weights, uint64_t *seed,
                               bp_dtype *net_dtype)
{
    uint32_t loss_code = 0;

    uint32_t dtype, count, reserved;
    uint64_t inputs;

    *layers = NULL;
    if (!bp_get_u32(&r, &dtype) || !bp_get_u32(&r, &loss_code) ||
        !bp_get_u64(&r, &inputs) || !bp_get_u32(&r, &count) ||
        !bp_get_u32(&r, &reserved))
        return bp_bad(src, "is corrupt: section NETW is too short");
    if (dtype != BP_DTYPE_FLOAT32 && dtype != BP_DTYPE_FLOAT64)
        return bp_bad(src, "stores parameters of dtype %u; this bprop "
                      "reads float32 (dtype 1) and float64 (dtype 2) only",
                      (unsigned)dtype);
    *net_dtype = dtype == BP_DTYPE_FLOAT64 ? BP_DTYPE_F64 : BP_DTYPE_F32;
    if (bp_loss_name((bp_loss)loss_code) == NULL)
        return bp_bad(src, "is corrupt: its loss code %u is unknown",
                      (unsigned)loss_code);
    if (inputs < 1 || inputs > BP_MAX_FLOATS)
        return bp_bad(src, "is corrupt: its network takes %llu inputs",
                      (unsigned long long)inputs);
    if (count < 1 || count > bp_left(&r) / BP_NET_LAYER)
        return bp_bad(src, "is corrupt: section NETW cannot hold %u "
                      "layers", (unsigned)count);

    *layers = calloc(count, sizeof **layers);
    if (*layers == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %u layers", src->fn,
                       (unsigned)count);
    for (uint32_t i = 0; i < count; i++) {
        uint32_t kind = 0, act = 0;
        uint64_t units = 0;

        /* The count check above guarantees these bytes. */
        bp_get_u32(&r, &kind);
        bp_get_u32(&r, &act);
        bp_get_u64(&r, &units);
        if (kind < BP_LAYER_DENSE || kind > BP_LAYER_CODE_LAST)
            return bp_bad(src, "has layer %u of kind %u, which this bprop "
                          "cannot read", (unsigned)i, (unsigned)kind);
        if (bp_activation_name((bp_activation)act) == NULL)
            return bp_bad(src, "is corrupt: layer %u has the unknown "
                          "activation code %u", (unsigned)i, (unsigned)act);
        if (units < 1 || units > BP_MAX_FLOATS)
            return bp_bad(src, "is corrupt: layer %u has %llu units",
                          (unsigned)i, (unsigned long long)units);
        (*layers)[i].units = (int64_t)units;
        (*layers)[i].activation = (bp_activation)act;
        (*layers)[i].kind = (bp_layer_kind)(kind - BP_LAYER_DENSE);
    }
    *cfg = (bp_loss_config){.kind = (bp_loss)loss_code};
    *class_weights = NULL;
    BP_TRY(bp_read_net_more(src, &r, *layers, count, cfg, class_weights,
                            seed));
    *n_inputs = (int64_t)inputs;
    *n_layers = (int)count;
    return BP_STATUS_OK;
}

/*
 * Reads the n_params values of `dtype` (floats or doubles) that follow
 * a count in `r` into `dst`; they must all be finite. `what` names them
 * in messages.
 */
static bp_status bp_read_slab(const bp_source *src, bp_reader *r,
                              const char *section, const char *what,
                              void *dst, int64_t n_params, bp_dtype dtype)
{
    int f64 = dtype == BP_DTYPE_F64;
    uint64_t count;

    if (!bp_get_u64(r, &count) || count != (uint64_t)n_params)
        return bp_bad(src, "is corrupt: section %s holds %s for a "
                      "different network", section, what);
    if (bp_left(r) / (f64 ? 8 : 4) < (uint64_t)n_params)
        return bp_bad(src, "is corrupt: section %s is too short for its "
                      "%lld %s", section, (long long)n_params, what);
    if (f64)
        bp_get_doubles(r, dst, n_params);
    else
        bp_get_floats(r, dst, n_params);
    for (int64_t i = 0; i < n_params; i++)
        if (!isfinite(f64 ? ((double *)dst)[i] : ((float *)dst)[i]))
            return bp_bad(src, "is corrupt: value %lld of its %s is not "
                          "finite", (long long)i, what);
    return BP_STATUS_OK;
}

/* Zeroes the places of the biases of layers that have none. */
static void bp_zero_absent_biases(bp_net *net)
{
    for (int i = 0; i < net->n_layers; i++) {
        int64_t b = net->b_offset[i], units = net->layers[i].units;

        if (!net->layers[i].no_bias ||
            net->layers[i].kind == BP_LAYER_KIND_DROPOUT)
            continue;
        if (net->dtype == BP_DTYPE_F64)
            memset(net->params_d + b, 0, (size_t)units * sizeof(double));
        else
            memset(net->params + b, 0, (size_t)units * sizeof(float));
    }
}

/*
 * Reads NORM, batch norm's running means and variances, which a network
 * with batch norm layers must have and any other must not.
 */
static bp_status bp_read_running(const bp_source *src, bp_reader r,
                                 bp_net *net)
{
    if (r.p == NULL && net->n_running == 0)
        return BP_STATUS_OK;
    if (r.p == NULL)
        return bp_bad(src, "is corrupt: its network has batch norm layers "
                      "but no NORM section with their running averages");
    if (net->n_running == 0)
        return bp_bad(src, "is corrupt: it has a NORM section but its "
                      "network has no batch norm layer");
    BP_TRY(bp_read_slab(src, &r, "NORM", "running averages",
                        net->dtype == BP_DTYPE_F64 ? (void *)net->running_d
                                                   : (void *)net->running,
                        net->n_running, net->dtype));
    for (int i = 0; i < net->n_layers; i++) {
        int64_t at = net->s_offset[i], units = net->layers[i].units;

        for (int64_t k = 0; at >= 0 && k < units; k++)
            if ((net->running_d != NULL ? net->running_d[at + units + k]
                                        : net->running[at + units + k]) < 0)
                return bp_bad(src, "is corrupt: layer %d's running "
                              "variance %lld is negative", i, (long long)k);
    }
    return BP_STATUS_OK;
}

/* Builds the network from NETW and PARM; *out stays NULL on failure. */
static bp_status bp_read_net(const bp_source *src, const bp_sections *s,
                             bp_net **out)
{
    bp_layer_spec *layers;
    bp_loss_config loss;
    float *class_weights = NULL;
    int64_t n_inputs = 0;
    int n_layers = 0;
    uint64_t seed = 0;
    bp_dtype dtype = BP_DTYPE_F32;

    *out = NULL;
    bp_status st = bp_read_specs(src, s->sec[BP_SEC_NET], &loss, &n_inputs,
                                 &layers, &n_layers, &class_weights, &seed,
                                 &dtype);

    /* Size the parameters against PARM before allocating them. */
    bp_reader params = s->sec[BP_SEC_PARAMS];
    int64_t n_params = -1;
    if (st == BP_STATUS_OK) {
        n_params = bp_count_params(n_inputs, layers, n_layers);
        if (n_params < 0 || params.n < 8 ||
            (params.n - 8) / (dtype == BP_DTYPE_F64 ? 8 : 4) <
                (uint64_t)n_params)
            st = bp_bad(src, "is corrupt: section PARM is too short for "
                        "the network in NETW");
    }
    if (st == BP_STATUS_OK) {
        st = bp_net_create_dtype(out, n_inputs, layers, n_layers, &loss,
                                 dtype);
        if (st == BP_STATUS_INVALID_ARGUMENT ||
            st == BP_STATUS_UNSUPPORTED) {
            char why[512];

            snprintf(why, sizeof why, "%s", bp_last_error());
            st = bp_bad(src, "is corrupt: its network is invalid (%s)",
                        why);
        }
    }
    free(layers);
    free(class_weights);
    if (st == BP_STATUS_OK)
        st = bp_read_slab(src, &params, "PARM", "parameters",
                          dtype == BP_DTYPE_F64 ? (void *)(*out)->params_d
                                                : (void *)(*out)->params,
                          n_params, dtype);
    if (st == BP_STATUS_OK) {
        bp_zero_absent_biases(*out);
        (*out)->seed = seed;
        st = bp_read_running(src, s->sec[BP_SEC_RUNNING], *out);
    }
    if (st != BP_STATUS_OK) {
        bp_net_free(*out);
        *out = NULL;
    }
    return st;
}

static int bp_get_f32(bp_reader *r, float *v)
{
    uint32_t bits;

    if (!bp_get_u32(r, &bits))
        return 0;
    *v = bp_f32_from_bits(bits);
    return 1;
}

/* Reads a u64 that must fit an int64_t count. */
static int bp_get_count(bp_reader *r, int64_t *v)
{
    uint64_t u;

    if (!bp_get_u64(r, &u) || u > (uint64_t)INT64_MAX)
        return 0;
    *v = (int64_t)u;
    return 1;
}

/* OPTM's schedule fields; 0 when they are missing or out of range. */
static int bp_get_schedule(bp_reader *r, bp_schedule *s)
{
    uint32_t kind, has_best, reserved;
    uint64_t best;

    if (!bp_get_u32(r, &kind) || !bp_get_u32(r, &reserved) ||
        !bp_get_count(r, &s->interval) || !bp_get_count(r, &s->step_size) ||
        !bp_get_f32(r, &s->gamma) || !bp_get_f32(r, &s->power) ||
        !bp_get_count(r, &s->warmup) || !bp_get_count(r, &s->period) ||
        !bp_get_f32(r, &s->min_lr) || !bp_get_f32(r, &s->threshold) ||
        !bp_get_count(r, &s->patience) || !bp_get_count(r, &s->cooldown) ||
        !bp_get_count(r, &s->reductions) || !bp_get_count(r, &s->wait) ||
        !bp_get_count(r, &s->cooldown_left) ||
        !bp_get_u32(r, &has_best) || !bp_get_u32(r, &reserved) ||
        !bp_get_u64(r, &best) || has_best > 1)
        return 0;
    s->kind = (bp_schedule_kind)kind;
    s->has_best = (int)has_best;
    s->best = bp_f64_from_bits(best);
    return bp_schedule_name(s->kind) != NULL;
}

/*
 * What OPTM holds after the first slab: the other settings, the step
 * counter, the schedule and the second slab.
 */
static bp_status bp_read_optimizer_more(const bp_source *src, bp_reader *r,
                                        bp_net *net, bp_optimizer *o,
                                        bp_schedule *sched)
{
    uint32_t pad, flags;
    uint64_t step;

    /* A float slab of odd length is padded to 8 bytes; doubles are not. */
    if ((net->dtype == BP_DTYPE_F32 && net->n_params % 2 != 0 &&
         !bp_get_u32(r, &pad)) ||
        !bp_get_f32(r, &o->beta1) || !bp_get_f32(r, &o->beta2) ||
        !bp_get_f32(r, &o->eps) || !bp_get_f32(r, &o->rho) ||
        !bp_get_f32(r, &o->clip_norm) || !bp_get_f32(r, &o->clip_value) ||
        !bp_get_f32(r, &o->initial_accumulator) ||
        !bp_get_u32(r, &flags) || !bp_get_u64(r, &step))
        return bp_bad(src, "is corrupt: section OPTM is too short");
    if (!bp_get_schedule(r, sched))
        return bp_bad(src, "is corrupt: section OPTM holds an invalid "
                      "learning-rate schedule");
    o->decay_biases = (flags & BP_OPTIMIZER_DECAY_BIASES) != 0;
    net->step = step;
    if (bp_optimizer_check(src->fn, o) != BP_STATUS_OK ||
        bp_schedule_check(src->fn, sched) != BP_STATUS_OK)
        return bp_bad(src, "is corrupt: section OPTM holds invalid %s "
                      "settings", bp_optimizer_name(o->kind));

    /* The count says whether the second slab is there. */
    bp_reader peek = *r;
    uint64_t count;
    if (!bp_get_u64(&peek, &count))
        return bp_bad(src, "is corrupt: section OPTM is too short");
    if (count == 0 && !bp_optimizer_uses_second(o)) {
        *r = peek;
        return BP_STATUS_OK;
    }
    BP_TRY(bp_net_reserve_squares(src->fn, net));
    return bp_read_slab(src, r, "OPTM", "second-moment buffers",
                        net->dtype == BP_DTYPE_F64 ? (void *)net->squares_d
                                                   : (void *)net->squares,
                        net->n_params, net->dtype);
}

/*
 * OPTM: the optimizer's settings and state. A file from before the
 * fields that follow the first slab holds SGD settings only; *has_step
 * then says the step counter is still to be set.
 */
static bp_status bp_read_optimizer(const bp_source *src, bp_reader r,
                                   bp_net *net, bp_model_extras *ex,
                                   int *has_step)
{
    uint32_t code, nesterov, reserved;
    bp_optimizer o = {0};
    bp_schedule sched = {0};

    if (!bp_get_u32(&r, &code) || !bp_get_u32(&r, &nesterov) ||
        !bp_get_f32(&r, &o.lr) || !bp_get_f32(&r, &o.momentum) ||
        !bp_get_f32(&r, &o.weight_decay) || !bp_get_u32(&r, &reserved))
        return bp_bad(src, "is corrupt: section OPTM is too short");
    if (code < BP_OPTIMIZER_CODE_FIRST || code > BP_OPTIMIZER_CODE_LAST)
        return bp_bad(src, "uses optimizer %u, which this bprop cannot "
                      "read", (unsigned)code);
    if (nesterov > 1)
        return bp_bad(src, "is corrupt: section OPTM holds invalid SGD "
                      "settings");
    o.kind = (bp_optimizer_kind)(code - BP_OPTIMIZER_CODE_FIRST);
    o.nesterov = (int)nesterov;
    BP_TRY(bp_read_slab(src, &r, "OPTM", "momentum buffers",
                        net->dtype == BP_DTYPE_F64 ? (void *)net->velocity_d
                                                   : (void *)net->velocity,
                        net->n_params, net->dtype));

    *has_step = bp_left(&r) > 0;
    if (*has_step) {
        BP_TRY(bp_read_optimizer_more(src, &r, net, &o, &sched));
    } else if (o.kind != BP_OPTIMIZER_SGD ||
               bp_optimizer_check(src->fn, &o) != BP_STATUS_OK) {
        return bp_bad(src, "is corrupt: section OPTM holds invalid SGD "
                      "settings");
    }
    ex->opt = o;
    ex->sched = sched;
    ex->has_optimizer = 1;
    return BP_STATUS_OK;
}

/* STEP and RNGS: fixed fields. */
static bp_status bp_read_counters(const bp_source *src, const bp_sections *s,
                                  bp_model_extras *ex)
{
    bp_reader r = s->sec[BP_SEC_PROGRESS];

    if (r.p != NULL) {
        if (!bp_get_u64(&r, &ex->epochs) || !bp_get_u64(&r, &ex->steps))
            return bp_bad(src, "is corrupt: section STEP is too short");
        ex->has_progress = 1;
    }

    r = s->sec[BP_SEC_RNG];
    if (r.p != NULL) {
        uint32_t init, reserved;

        if (!bp_get_u64(&r, &ex->seed) || !bp_get_u64(&r, &ex->next_stream) ||
            !bp_get_u32(&r, &init) || !bp_get_u32(&r, &reserved))
            return bp_bad(src, "is corrupt: section RNGS is too short");
        if (bp_init_name((bp_init)init) == NULL)
            return bp_bad(src, "is corrupt: section RNGS has the unknown "
                          "init code %u", (unsigned)init);
        ex->init = (bp_init)init;
        ex->has_rng = 1;
    }
    return BP_STATUS_OK;
}

/* LABL: a type, a count matching the outputs, and the values. */
static bp_status bp_read_labels(const bp_source *src, bp_reader r,
                                const bp_net *net, bp_model_extras *ex)
{
    int64_t n_out = bp_net_n_outputs(net);
    uint32_t type, reserved;
    uint64_t count;

    if (!bp_get_u32(&r, &type) || !bp_get_u32(&r, &reserved) ||
        !bp_get_u64(&r, &count))
        return bp_bad(src, "is corrupt: section LABL is too short");
    if (type < BP_LABEL_TYPE_INT || type > BP_LABEL_TYPE_STRING)
        return bp_bad(src, "is corrupt: section LABL has the unknown type "
                      "%u", (unsigned)type);
    if (count != (uint64_t)n_out && !(n_out == 1 && count == 2))
        return bp_bad(src, "is corrupt: it has %llu class labels for %lld "
                      "outputs", (unsigned long long)count,
                      (long long)n_out);
    if ((type == BP_LABEL_TYPE_STRING ? bp_left(&r) / 4
                                      : bp_left(&r) / 8) < count)
        return bp_bad(src, "is corrupt: section LABL is too short for "
                      "%llu labels", (unsigned long long)count);

    int64_t n = (int64_t)count;
    ex->label_type = (bp_label_type)type;
    ex->n_labels = n;
    if (type == BP_LABEL_TYPE_INT) {
        ex->int_labels = malloc((size_t)n * sizeof *ex->int_labels);
        if (ex->int_labels == NULL)
            goto out_of_memory;
        for (int64_t i = 0; i < n; i++, r.at += 8)
            ex->int_labels[i] = (int64_t)bp_le_get64(r.p + r.at);
        return BP_STATUS_OK;
    }
    if (type == BP_LABEL_TYPE_FLOAT) {
        ex->float_labels = malloc((size_t)n * sizeof *ex->float_labels);
        if (ex->float_labels == NULL)
            goto out_of_memory;
        bp_get_doubles(&r, ex->float_labels, n);
        for (int64_t i = 0; i < n; i++)
            if (!isfinite(ex->float_labels[i]))
                return bp_bad(src, "is corrupt: class label %lld is not "
                              "finite", (long long)i);
        return BP_STATUS_OK;
    }
    ex->string_labels = calloc((size_t)n, sizeof *ex->string_labels);
    if (ex->string_labels == NULL)
        goto out_of_memory;
    for (int64_t i = 0; i < n; i++)
        BP_TRY(bp_get_text(src, &r, "LABL", &ex->string_labels[i]));
    return BP_STATUS_OK;

out_of_memory:
    ex->n_labels = 0;
    ex->label_type = BP_LABEL_TYPE_NONE;
    return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                   "%s: cannot allocate %lld class labels", src->fn,
                   (long long)n);
}

/* SCAL: a mean and a scale per input feature. */
static bp_status bp_read_scaling(const bp_source *src, bp_reader r,
                                 const bp_net *net, bp_model_extras *ex)
{
    uint64_t count;

    if (!bp_get_u64(&r, &count))
        return bp_bad(src, "is corrupt: section SCAL is too short");
    if (count != (uint64_t)net->n_inputs)
        return bp_bad(src, "is corrupt: section SCAL scales %llu features "
                      "but the network takes %lld",
                      (unsigned long long)count, (long long)net->n_inputs);
    if (bp_left(&r) / 16 < count)
        return bp_bad(src, "is corrupt: section SCAL is too short for %llu "
                      "features", (unsigned long long)count);

    int64_t n = (int64_t)count;
    ex->mean = malloc((size_t)n * sizeof(double));
    ex->scale = malloc((size_t)n * sizeof(double));
    if (ex->mean == NULL || ex->scale == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate the scaling of %lld features",
                       src->fn, (long long)n);
    ex->n_scaling = n;
    bp_get_doubles(&r, ex->mean, n);
    bp_get_doubles(&r, ex->scale, n);
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(ex->mean[i]) || !isfinite(ex->scale[i]) ||
            ex->scale[i] == 0.0)
            return bp_bad(src, "is corrupt: the scaling of feature %lld is "
                          "not finite and nonzero", (long long)i);
    return BP_STATUS_OK;
}

static int bp_compare_texts(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* META: key/value strings with distinct, non-empty keys. */
static bp_status bp_read_meta(const bp_source *src, bp_reader r,
                              bp_model_extras *ex)
{
    uint64_t count;

    if (!bp_get_u64(&r, &count))
        return bp_bad(src, "is corrupt: section META is too short");
    if (bp_left(&r) / 8 < count)
        return bp_bad(src, "is corrupt: section META is too short for %llu "
                      "entries", (unsigned long long)count);

    /* One more slot than entries, so that none is not a NULL array. */
    int64_t n = (int64_t)count;
    ex->meta_keys = calloc((size_t)n + 1, sizeof(char *));
    ex->meta_values = calloc((size_t)n + 1, sizeof(char *));
    if (ex->meta_keys == NULL || ex->meta_values == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot allocate %lld metadata entries", src->fn,
                       (long long)n);
    ex->n_meta = n;
    for (int64_t i = 0; i < n; i++) {
        BP_TRY(bp_get_text(src, &r, "META", &ex->meta_keys[i]));
        BP_TRY(bp_get_text(src, &r, "META", &ex->meta_values[i]));
        if (ex->meta_keys[i][0] == '\0')
            return bp_bad(src, "is corrupt: metadata key %lld is empty",
                          (long long)i);
    }

    if (n < 2)
        return BP_STATUS_OK;

    /* Sorting a copy finds duplicates in n log n, whatever n is. */
    char **sorted = malloc((size_t)n * sizeof *sorted);
    if (sorted == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY,
                       "%s: cannot check %lld metadata keys", src->fn,
                       (long long)n);
    memcpy(sorted, ex->meta_keys, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, bp_compare_texts);
    int64_t dup = -1;
    for (int64_t i = 1; i < n && dup < 0; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0)
            dup = i;
    bp_status st = BP_STATUS_OK;
    if (dup >= 0)
        st = bp_bad(src, "is corrupt: metadata key '%s' appears twice",
                    sorted[dup]);
    free(sorted);
    return st;
}

/* Reads the optional sections into `ex` and the momentum into `net`. */
static bp_status bp_read_extras(const bp_source *src, const bp_sections *s,
                                bp_net *net, bp_model_extras *ex)
{
    int has_step = 1;

    if (s->sec[BP_SEC_OPTIMIZER].p != NULL)
        BP_TRY(bp_read_optimizer(src, s->sec[BP_SEC_OPTIMIZER], net, ex,
                                 &has_step));
    BP_TRY(bp_read_counters(src, s, ex));

    /* Older files count updates in STEP only. */
    if (!has_step && ex->has_progress)
        net->step = ex->steps;
    if (s->sec[BP_SEC_LABELS].p != NULL)
        BP_TRY(bp_read_labels(src, s->sec[BP_SEC_LABELS], net, ex));
    if (s->sec[BP_SEC_SCALING].p != NULL)
        BP_TRY(bp_read_scaling(src, s->sec[BP_SEC_SCALING], net, ex));
    if (s->sec[BP_SEC_META].p != NULL)
        BP_TRY(bp_read_meta(src, s->sec[BP_SEC_META], ex));
    return BP_STATUS_OK;
}

/* Parses a whole file; hands out the results only when all is valid. */
static bp_status bp_parse(const bp_source *src, const unsigned char *data,
                          size_t size, bp_net **out, bp_model_extras **extras)
{
    uint64_t length = 0;
    bp_sections s;

    BP_TRY(bp_check_header(src, data, size, &length));
    BP_TRY(bp_check_whole(src, data, size, length));
    BP_TRY(bp_index_sections(src, data, size, &s));

    bp_net *net;
    BP_TRY(bp_read_net(src, &s, &net));

    bp_model_extras *ex;
    bp_status st = bp_model_extras_create(&ex);
    if (st == BP_STATUS_OK)
        st = bp_read_extras(src, &s, net, ex);
    if (st != BP_STATUS_OK) {
        bp_model_extras_free(ex);
        bp_net_free(net);
        return st;
    }
    *out = net;
    if (extras != NULL)
        *extras = ex;
    else
        bp_model_extras_free(ex);
    return BP_STATUS_OK;
}

bp_status bp_net_load_buffer(bp_net **out, const void *data, size_t size,
                             bp_model_extras **extras)
{
    static const char fn[] = "bp_net_load_buffer";
    bp_source src = {fn, NULL};

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    if (extras != NULL)
        *extras = NULL;
    BP_REQUIRE_DATA(fn, data, size);
    return bp_parse(&src, data, size, out, extras);
}

/* The text of an errno value, without strerror's shared buffer. */
static const char *bp_errno_text(int err, char *buf, size_t n)
{
#if defined(_WIN32)
    if (strerror_s(buf, n, err) != 0)
        snprintf(buf, n, "error %d", err);
#elif defined(__unix__) || defined(__APPLE__)
    if (strerror_r(err, buf, n) != 0)
        snprintf(buf, n, "error %d", err);
#else
    snprintf(buf, n, "%s", strerror(err));
#endif
    return buf;
}

/*
 * Reads a file into a new buffer, never past one byte more than its
 * header announces (the byte that reveals trailing data).
 */
static bp_status bp_read_all(const bp_source *src, FILE *f,
                             unsigned char **data, size_t *size)
{
    unsigned char head[BP_MODEL_HEADER_SIZE];
    size_t got = fread(head, 1, sizeof head, f);
    size_t limit = got;

    if (got == sizeof head &&
        memcmp(head, BP_MODEL_MAGIC, BP_MODEL_MAGIC_SIZE) == 0) {
        uint64_t length = bp_le_get64(head + 16);

        limit = length < SIZE_MAX ? (size_t)length + 1 : SIZE_MAX;
    }

    size_t cap = got > 0 ? got : 1;
    unsigned char *buf = malloc(cap);
    if (buf == NULL)
        return bp_fail(BP_STATUS_OUT_OF_MEMORY, "%s: out of memory reading "
                       "'%s'", src->fn, src->path);
    memcpy(buf, head, got);
    while (got == cap && got < limit && !ferror(f)) {
        size_t grow = cap < (1u << 16) ? (1u << 16) : cap;
        size_t next = limit - cap < grow ? limit : cap + grow;
        unsigned char *bigger = realloc(buf, next);

        if (bigger == NULL) {
            free(buf);
            return bp_fail(BP_STATUS_OUT_OF_MEMORY, "%s: out of memory "
                           "reading '%s'", src->fn, src->path);
        }
        buf = bigger;
        cap = next;
        got += fread(buf + got, 1, cap - got, f);
    }
    if (ferror(f)) {
        char why[128];

        bp_errno_text(errno, why, sizeof why);
        free(buf);
        return bp_fail(BP_STATUS_IO, "%s: cannot read '%s': %s", src->fn,
                       src->path, why);
    }
    *data = buf;
    *size = got;
    return BP_STATUS_OK;
}

bp_status bp_net_load(bp_net **out, const char *path,
                      bp_model_extras **extras)
{
    static const char fn[] = "bp_net_load";
    bp_source src = {fn, path};

    BP_REQUIRE_PTR(fn, out);
    *out = NULL;
    if (extras != NULL)
        *extras = NULL;
    BP_REQUIRE_PTR(fn, path);

    errno = 0;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        char why[128];

        bp_errno_text(errno, why, sizeof why);
        return bp_fail(BP_STATUS_IO, "%s: cannot open '%s': %s", fn, path,
                       why);
    }
    unsigned char *data = NULL;
    size_t size = 0;
    bp_status st = bp_read_all(&src, f, &data, &size);
    fclose(f);
    if (st == BP_STATUS_OK)
        st = bp_parse(&src, data, size, out, extras);
    free(data);
    return st;
}
