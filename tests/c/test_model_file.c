/*
 * Model files through the public API: round trips in memory and on
 * disk (parameters, momentum, every kind of extras, predictions), the
 * little-endian layout of the header, forward compatibility (unknown
 * optional sections are skipped), and a clean error with *out left
 * NULL for every truncation, every flipped byte, empty and foreign
 * files, a newer version, an unknown required section and I/O failures.
 *
 * Uses the public API only. Exits 0 when every check passes.
 */
#define _POSIX_C_SOURCE 200809L

#include "bprop.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

/* For set-up steps the rest of a test depends on: stop at once. */
static void require(bp_status st, const char *what)
{
    if (st != BP_STATUS_OK) {
        printf("FAIL: %s: %s: %s\n", what, bp_status_name(st),
               bp_last_error());
        exit(1);
    }
}

/* A call that must fail with `want` and a message containing `needle`. */
static void expect_status(bp_status st, bp_status want, const char *needle,
                          const char *what)
{
    char line[700];

    snprintf(line, sizeof line, "%s: status %s, expected %s (%s)", what,
             bp_status_name(st), bp_status_name(want), bp_last_error());
    check(st == want, line);
    snprintf(line, sizeof line, "%s: message \"%s\" mentions \"%s\"", what,
             bp_last_error(), needle);
    check(strstr(bp_last_error(), needle) != NULL, line);
}

/* The CRC-32 of zlib and PNG, to forge files whose checksum is right. */
static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;

    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return ~crc;
}

static void put32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;

    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* Rewrites the header's length and the END checksum of `size` bytes. */
static void reseal(unsigned char *file, size_t size)
{
    put64(file + 16, size);
    put32(file + size - 8, crc32_of(file, size - 8));
}

/* A 3-4-2 cross-entropy network with momentum from a few SGD steps. */
static bp_net *trained_net(void)
{
    static const float x[] = {0.5f, -1, 2, 1, 0.25f, -0.5f, -2, 1, 0};
    static const int32_t labels[] = {0, 1, 1};
    bp_layer_spec layers[] = {
        {.units = 4, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    bp_sgd_config sgd = {0.1f, 0.9f, 1, 1e-3f};
    bp_net *net;
    double loss;

    require(bp_net_create(&net, 3, layers, 2, BP_LOSS_CROSS_ENTROPY),
            "create");
    require(bp_net_init(net, BP_INIT_AUTO, 7), "init");
    for (int i = 0; i < 3; i++)
        require(bp_net_train_batch(net, &sgd, x, NULL, labels, 3, &loss),
                "train");
    return net;
}

/* Extras with every section filled in. */
static bp_model_extras *full_extras(void)
{
    static const char *const names[] = {"cat", "d\xC3\xA9j\xC3\xA0"};
    static const double mean[] = {1.5, -2, 0.25};
    static const double scale[] = {2, 0.5, 3};
    bp_sgd_config sgd = {0.1f, 0.9f, 1, 1e-3f};
    bp_model_extras *ex;

    require(bp_model_extras_create(&ex), "extras");
    require(bp_model_extras_set_optimizer(ex, &sgd), "optimizer");
    require(bp_model_extras_set_progress(ex, 5, 123), "progress");
    require(bp_model_extras_set_rng(ex, 42, BP_INIT_HE, 5), "rng");
    require(bp_model_extras_set_labels_string(ex, names, 2), "labels");
    require(bp_model_extras_set_scaling(ex, mean, scale, 3), "scaling");
    require(bp_model_extras_set_meta(ex, "author", "me"), "meta");
    require(bp_model_extras_set_meta(ex, "note", ""), "meta");
    return ex;
}

/* The model's bytes in a new buffer; the caller frees it. */
static unsigned char *save_to_buffer(const bp_net *net,
                                     const bp_model_extras *ex,
                                     size_t *size)
{
    require(bp_net_save_buffer(net, ex, NULL, 0, size), "size");
    unsigned char *buf = malloc(*size);
    require(bp_net_save_buffer(net, ex, buf, *size, size), "save buffer");
    return buf;
}

static int same_floats(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

static void test_round_trip_buffer(void)
{
    bp_net *net = trained_net();
    bp_model_extras *ex = full_extras();
    size_t size;
    unsigned char *buf = save_to_buffer(net, ex, &size);

    check(memcmp(buf, "\x89" "BPM\r\n\x1a\n", 8) == 0, "magic");
    check(buf[8] == 1 && buf[9] == 0 && buf[10] == 0 && buf[11] == 0,
          "version 1, little-endian");
    check(get64(buf + 16) == size, "header length is the size");
    check(size % 8 == 0, "size is a multiple of 8");
    check(bp_net_save_buffer(net, ex, buf, size - 1, &size) ==
              BP_STATUS_INVALID_ARGUMENT,
          "a buffer one byte short is refused");

    bp_net *back;
    bp_model_extras *got;
    require(bp_net_load_buffer(&back, buf, size, &got), "load buffer");
    int64_t n = bp_net_n_params(net);
    check(bp_net_n_params(back) == n, "parameter count");
    check(bp_net_n_inputs(back) == 3 && bp_net_n_outputs(back) == 2,
          "shape");
    check(bp_net_loss(back) == BP_LOSS_CROSS_ENTROPY, "loss");
    bp_layer_spec spec;
    require(bp_net_layer(back, 0, &spec), "layer 0");
    check(spec.units == 4 && spec.activation == BP_ACTIVATION_TANH,
          "layer 0 spec");
    check(same_floats(bp_net_params_const(net), bp_net_params_const(back),
                      n), "parameters bit for bit");
    check(same_floats(bp_net_velocity(net), bp_net_velocity(back), n),
          "momentum bit for bit");

    bp_sgd_config sgd;
    uint64_t epochs = 0, steps = 0, seed = 0, stream = 0;
    bp_init init = BP_INIT_AUTO;
    check(bp_model_extras_get_optimizer(got, &sgd) && sgd.lr == 0.1f &&
              sgd.momentum == 0.9f && sgd.nesterov && sgd.l2 == 1e-3f,
          "optimizer");
    check(bp_model_extras_get_progress(got, &epochs, &steps) &&
              epochs == 5 && steps == 123, "progress");
    check(bp_model_extras_get_rng(got, &seed, &init, &stream) &&
              seed == 42 && init == BP_INIT_HE && stream == 5, "rng");
    check(bp_model_extras_label_type(got) == BP_LABEL_TYPE_STRING &&
              bp_model_extras_n_labels(got) == 2, "label type");
    check(strcmp(bp_model_extras_label_string(got, 1),
                 "d\xC3\xA9j\xC3\xA0") == 0, "UTF-8 label");
    check(bp_model_extras_label_string(got, 2) == NULL, "label range");
    const double *mean, *scale;
    check(bp_model_extras_get_scaling(got, &mean, &scale) == 3 &&
              mean[1] == -2 && scale[2] == 3, "scaling");
    check(bp_model_extras_n_meta(got) == 2 &&
              strcmp(bp_model_extras_get_meta(got, "author"), "me") == 0 &&
              strcmp(bp_model_extras_get_meta(got, "note"), "") == 0 &&
              bp_model_extras_get_meta(got, "none") == NULL, "metadata");

    /* Saving what was loaded gives the same bytes. */
    size_t again_size;
    unsigned char *again = save_to_buffer(back, got, &again_size);
    check(again_size == size && memcmp(again, buf, size) == 0,
          "save(load(bytes)) == bytes");

    /* Without extras: no momentum, and none of the optional fields. */
    bp_net *plain;
    bp_model_extras *none;
    size_t plain_size;
    unsigned char *bare = save_to_buffer(net, NULL, &plain_size);
    require(bp_net_load_buffer(&plain, bare, plain_size, &none), "plain");
    check(plain_size < size, "a bare file is smaller");
    check(!bp_model_extras_get_optimizer(none, NULL) &&
              !bp_model_extras_get_progress(none, NULL, NULL) &&
              bp_model_extras_n_labels(none) == 0 &&
              bp_model_extras_get_scaling(none, NULL, NULL) == 0,
          "no extras");
    check(bp_net_velocity(plain)[0] == 0.0f, "no momentum");

    free(again);
    free(bare);
    free(buf);
    bp_model_extras_free(none);
    bp_model_extras_free(got);
    bp_model_extras_free(ex);
    bp_net_free(plain);
    bp_net_free(back);
    bp_net_free(net);
}

static void test_label_kinds(void)
{
    static const int64_t ints[] = {-3, 9000000000LL};
    static const double floats[] = {0.5, -1e300};
    bp_layer_spec layers[] = {
        {.units = 1, .activation = BP_ACTIVATION_SIGMOID}};
    bp_net *net, *back;
    bp_model_extras *ex, *got;
    size_t size;

    require(bp_net_create(&net, 2, layers, 1,
                          BP_LOSS_BINARY_CROSS_ENTROPY), "create");
    require(bp_model_extras_create(&ex), "extras");
    require(bp_model_extras_set_labels_int(ex, ints, 2), "ints");
    unsigned char *buf = save_to_buffer(net, ex, &size);
    require(bp_net_load_buffer(&back, buf, size, &got), "load ints");
    check(bp_model_extras_label_type(got) == BP_LABEL_TYPE_INT &&
              bp_model_extras_labels_int(got)[1] == 9000000000LL &&
              bp_model_extras_labels_float(got) == NULL, "int labels");
    free(buf);
    bp_model_extras_free(got);
    bp_net_free(back);

    require(bp_model_extras_set_labels_float(ex, floats, 2), "floats");
    buf = save_to_buffer(net, ex, &size);
    require(bp_net_load_buffer(&back, buf, size, &got), "load floats");
    check(bp_model_extras_label_type(got) == BP_LABEL_TYPE_FLOAT &&
              bp_model_extras_labels_float(got)[1] == -1e300,
          "float labels");
    free(buf);
    bp_model_extras_free(got);
    bp_net_free(back);

    /* Three labels for one output cannot be saved. */
    static const int64_t three[] = {1, 2, 3};
    require(bp_model_extras_set_labels_int(ex, three, 3), "three");
    expect_status(bp_net_save_buffer(net, ex, NULL, 0, &size),
                  BP_STATUS_INVALID_ARGUMENT, "3 class labels",
                  "labels must match the outputs");
    bp_model_extras_free(ex);
    bp_net_free(net);
}

static void test_setters_validate(void)
{
    static const double ok[] = {1.0}, zero[] = {0.0};
    static const char *const bad_utf8[] = {"\xC0\x80"};
    bp_sgd_config sgd = {-1.0f, 0.0f, 0, 0.0f};
    bp_model_extras *ex;

    require(bp_model_extras_create(&ex), "extras");
    expect_status(bp_model_extras_set_optimizer(ex, &sgd),
                  BP_STATUS_INVALID_ARGUMENT, "lr", "negative lr");
    expect_status(bp_model_extras_set_scaling(ex, ok, zero, 1),
                  BP_STATUS_INVALID_ARGUMENT, "scale[0]", "zero scale");
    expect_status(bp_model_extras_set_labels_string(ex, bad_utf8, 1),
                  BP_STATUS_INVALID_ARGUMENT, "UTF-8", "overlong UTF-8");
    expect_status(bp_model_extras_set_meta(ex, "", "x"),
                  BP_STATUS_INVALID_ARGUMENT, "empty", "empty key");
    expect_status(bp_model_extras_set_rng(ex, 1, (bp_init)9, 0),
                  BP_STATUS_INVALID_ARGUMENT, "init", "unknown init");
    require(bp_model_extras_set_meta(ex, "k", "1"), "meta");
    require(bp_model_extras_set_meta(ex, "k", "2"), "meta again");
    check(bp_model_extras_n_meta(ex) == 1 &&
              strcmp(bp_model_extras_get_meta(ex, "k"), "2") == 0,
          "setting a key again replaces it");
    require(bp_model_extras_set_meta(ex, "k", NULL), "remove");
    check(bp_model_extras_n_meta(ex) == 0, "a NULL value removes a key");
    check(!bp_model_extras_get_optimizer(ex, NULL), "failed set is no-op");
    bp_model_extras_free(ex);
    bp_model_extras_free(NULL);
}

/* Loading `size` bytes must fail with FORMAT and leave *out NULL. */
static void expect_bad(const unsigned char *buf, size_t size,
                       const char *needle, const char *what)
{
    bp_net *net = (bp_net *)&net;
    bp_model_extras *ex = (bp_model_extras *)&ex;

    expect_status(bp_net_load_buffer(&net, buf, size, &ex),
                  BP_STATUS_FORMAT, needle, what);
    check(net == NULL && ex == NULL, "a failed load hands out nothing");
}

static void test_damaged_buffers(void)
{
    bp_net *net = trained_net();
    bp_model_extras *ex = full_extras();
    size_t size;
    unsigned char *good = save_to_buffer(net, ex, &size);
    unsigned char *buf = malloc(size + 64);
    char what[64];
    int clean = 1;

    expect_bad(good, 0, "is empty", "empty");
    expect_bad((const unsigned char *)"PK\x03\x04 not a model", 18,
               "not a bprop model file", "foreign bytes");
    expect_bad(good, 5, "truncated", "a prefix of the magic");

    /* Every truncation and every flipped byte is caught. */
    for (size_t len = 1; len < size; len++) {
        bp_net *out;

        if (bp_net_load_buffer(&out, good, len, NULL) != BP_STATUS_FORMAT ||
            out != NULL)
            clean = 0;
    }
    check(clean, "every truncation fails with BP_STATUS_FORMAT");
    for (size_t at = 0; at < size; at++) {
        bp_net *out;

        memcpy(buf, good, size);
        buf[at] ^= 0x5A;
        if (bp_net_load_buffer(&out, buf, size, NULL) != BP_STATUS_FORMAT ||
            out != NULL)
            clean = 0;
    }
    check(clean, "every flipped byte fails with BP_STATUS_FORMAT");

    memcpy(buf, good, size);
    buf[size / 2] ^= 1;
    expect_bad(buf, size, "checksum", "one flipped bit");
    memcpy(buf, good, size);
    expect_bad(buf, size - 8, "truncated", "eight bytes short");
    memset(buf + size, 0, 8);
    expect_bad(buf, size + 8, "after", "trailing bytes");

    /* A newer version is named as such, even with a valid checksum. */
    memcpy(buf, good, size);
    put32(buf + 8, BPROP_MODEL_FORMAT_VERSION + 1);
    reseal(buf, size);
    expect_bad(buf, size, "newer", "version 2");

    /* An unknown optional section is skipped; a required one is not. */
    size_t net_end = 24 + 16 + (size_t)get64(good + 32);
    size_t extra = 16 + 8;
    for (int required = 0; required <= 1; required++) {
        memcpy(buf, good, net_end);
        memcpy(buf + net_end, "ZZZZ", 4);
        put32(buf + net_end + 4, (uint32_t)required);
        put64(buf + net_end + 8, 5);
        memcpy(buf + net_end + 16, "hello\0\0\0", 8);
        memcpy(buf + net_end + extra, good + net_end, size - net_end);
        reseal(buf, size + extra);

        bp_net *out = NULL;
        bp_status st = bp_net_load_buffer(&out, buf, size + extra, NULL);
        snprintf(what, sizeof what, "unknown section, required=%d",
                 required);
        if (required)
            expect_status(st, BP_STATUS_FORMAT, "ZZZZ", what);
        else
            check(st == BP_STATUS_OK && out != NULL &&
                      same_floats(bp_net_params_const(out),
                                  bp_net_params_const(net),
                                  bp_net_n_params(net)), what);
        bp_net_free(out);
    }

    /* A section length past the end, with a valid checksum. */
    memcpy(buf, good, size);
    put64(buf + 32, (uint64_t)1 << 62);
    reseal(buf, size);
    expect_bad(buf, size, "claims", "huge section length");

    /* A layer count the section cannot hold. */
    memcpy(buf, good, size);
    put32(buf + 40 + 16, 0xFFFFFFFFu);
    reseal(buf, size);
    expect_bad(buf, size, "layers", "huge layer count");

    free(buf);
    free(good);
    bp_model_extras_free(ex);
    bp_net_free(net);
}

/* Reads a whole small file; the caller frees the bytes. */
static unsigned char *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf = malloc(1 << 16);

    *size = f != NULL ? fread(buf, 1, 1 << 16, f) : 0;
    if (f != NULL)
        fclose(f);
    return buf;
}

static void test_files(void)
{
    const char *tmp = getenv("TMPDIR");
    char dir[200], path[256], missing[300], what[64];

    snprintf(dir, sizeof dir, "%s/bprop-model-XXXXXX",
             tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        check(0, "mkdtemp");
        return;
    }
    snprintf(path, sizeof path, "%s/model.bpm", dir);
    snprintf(missing, sizeof missing, "%s/no/such/dir/model.bpm", dir);

    bp_net *net = trained_net();
    bp_model_extras *ex = full_extras();
    require(bp_net_save(net, path, ex), "save");

    bp_net *back;
    bp_model_extras *got;
    require(bp_net_load(&back, path, &got), "load");
    check(same_floats(bp_net_params_const(net), bp_net_params_const(back),
                      bp_net_n_params(net)), "file round trip");

    /* Predictions of the loaded network are the original's. */
    static const float x[] = {1, 2, 3, -1, 0, 0.5f};
    float a[4], b[4];
    bp_workspace *ws;
    require(bp_workspace_create(&ws, net, 2), "workspace");
    require(bp_net_predict(net, ws, a, x, 2), "predict");
    require(bp_net_predict(back, ws, b, x, 2), "predict loaded");
    check(same_floats(a, b, 4), "predictions bit for bit");
    bp_workspace_free(ws);

    size_t size, buf_size;
    unsigned char *on_disk = read_file(path, &size);
    unsigned char *in_memory = save_to_buffer(net, ex, &buf_size);
    check(size == buf_size && memcmp(on_disk, in_memory, size) == 0,
          "the file holds the buffer's bytes");

    /* I/O errors name the file; a failed save keeps the old file. */
    bp_net *none = (bp_net *)&none;
    expect_status(bp_net_load(&none, missing, NULL), BP_STATUS_IO,
                  "no/such/dir", "missing file");
    check(none == NULL, "a missing file hands out nothing");
    expect_status(bp_net_save(net, missing, NULL), BP_STATUS_IO,
                  "no/such/dir", "save into a missing folder");
    expect_status(bp_net_load(&none, dir, NULL), BP_STATUS_IO, dir,
                  "a folder");
    expect_status(bp_net_save(net, dir, NULL), BP_STATUS_IO, dir,
                  "save over a folder");
    bp_net_params(back)[0] = 1.0f / 0.0f;
    expect_status(bp_net_save(back, path, NULL), BP_STATUS_INVALID_ARGUMENT,
                  "finite", "infinite parameter");
    size_t after_size;
    unsigned char *after = read_file(path, &after_size);
    check(after_size == size && memcmp(after, on_disk, size) == 0,
          "failed saves leave the file as it was");

    /* A truncated file names itself and the problem. */
    FILE *f = fopen(path, "wb");
    fwrite(on_disk, 1, size / 2, f);
    fclose(f);
    expect_status(bp_net_load(&none, path, NULL), BP_STATUS_FORMAT,
                  "truncated", "truncated file");
    check(strstr(bp_last_error(), path) != NULL, "message names the file");
    f = fopen(path, "wb");
    fclose(f);
    snprintf(what, sizeof what, "empty file");
    expect_status(bp_net_load(&none, path, NULL), BP_STATUS_FORMAT,
                  "is empty", what);

    remove(path);
    rmdir(dir);
    free(after);
    free(in_memory);
    free(on_disk);
    bp_model_extras_free(got);
    bp_model_extras_free(ex);
    bp_net_free(back);
    bp_net_free(net);
}

int main(void)
{
    test_round_trip_buffer();
    test_label_kinds();
    test_setters_validate();
    test_damaged_buffers();
    test_files();
    if (failures > 0) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all model file checks passed\n");
    return 0;
}
