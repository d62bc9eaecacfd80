/*
 * train: build and train a network with the C library alone, then save
 * it in the model file format that Python's bprop.load reads.
 *
 *   train xor OUT          XOR with a 2-4-1 tanh/sigmoid network
 *   train csv DATA OUT     classification of a CSV file
 *
 * The CSV file has a header line and numeric columns; the last column
 * holds integer class labels. Features are standardised with their
 * mean and standard deviation, and the file keeps that scaling and the
 * labels, so that predict (or Python) can take raw rows.
 */
#include <bprop.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Stops with bprop's message when a call fails. */
#define TRY(call)                                                 \
    do {                                                          \
        if ((call) != BP_STATUS_OK) {                             \
            fprintf(stderr, "train: %s\n", bp_last_error());      \
            return 1;                                             \
        }                                                         \
    } while (0)

#define SEED 42

/* Saves with the training state, so that training can resume exactly. */
static int save(const bp_net *net, bp_model_extras *ex,
                const bp_sgd_config *sgd, uint64_t epochs, uint64_t steps,
                const char *path)
{
    TRY(bp_model_extras_set_optimizer(ex, sgd));
    TRY(bp_model_extras_set_progress(ex, epochs, steps));
    TRY(bp_model_extras_set_rng(ex, SEED, BP_INIT_AUTO, epochs));
    TRY(bp_model_extras_set_meta(ex, "trained_by", "examples/train.c"));
    TRY(bp_net_save(net, path, ex));
    printf("saved %s\n", path);
    return 0;
}

static int train_xor(const char *path)
{
    static const float x[] = {0, 0, 0, 1, 1, 0, 1, 1};
    static const float y[] = {0, 1, 1, 0};
    static const int64_t labels[] = {0, 1};
    bp_layer_spec layers[] = {
        {.units = 4, .activation = BP_ACTIVATION_TANH},
        {.units = 1, .activation = BP_ACTIVATION_SIGMOID}};
    bp_sgd_config sgd = {0.5f, 0.5f, 0, 0.0f};
    const int epochs = 500;
    bp_net *net;
    bp_model_extras *ex;
    bp_workspace *ws;
    float out[4];
    double loss = 0.0;

    TRY(bp_net_create(&net, 2, layers, 2, BP_LOSS_BINARY_CROSS_ENTROPY));
    TRY(bp_net_init(net, BP_INIT_AUTO, SEED));
    for (int epoch = 0; epoch < epochs; epoch++)
        TRY(bp_net_train_epoch(net, &sgd, x, y, NULL, 4, 4, 1, SEED,
                               (uint64_t)epoch, &loss));
    TRY(bp_workspace_create(&ws, net, 4));
    TRY(bp_net_predict(net, ws, out, x, 4));
    printf("loss %.6f\nout %.9g %.9g %.9g %.9g\n", loss, (double)out[0],
           (double)out[1], (double)out[2], (double)out[3]);
    bp_workspace_free(ws);

    TRY(bp_model_extras_create(&ex));
    TRY(bp_model_extras_set_labels_int(ex, labels, 2));
    int status = save(net, ex, &sgd, epochs, epochs, path);
    bp_model_extras_free(ex);
    bp_net_free(net);
    return status;
}

/* A CSV file of numbers: its rows, columns and values, row-major. */
typedef struct table {
    int64_t rows, cols;
    double *values;
} table;

/* Reads a CSV file of numbers after its header line; 0 on failure. */
static int read_csv(const char *path, table *t)
{
    FILE *f = fopen(path, "r");
    size_t cap = 0;
    int c;

    memset(t, 0, sizeof *t);
    if (f == NULL)
        return 0;
    while ((c = fgetc(f)) != EOF && c != '\n')
        if (c == ',')
            t->cols++;
    t->cols++;

    for (;;) {
        double v;
        int64_t col = 0;

        if (fscanf(f, " %lf", &v) != 1)
            break;
        for (;;) {
            if ((size_t)(t->rows * t->cols + col) == cap) {
                cap = cap ? 2 * cap : 1024;
                double *grown = realloc(t->values, cap * sizeof v);
                if (grown == NULL)
                    break;
                t->values = grown;
            }
            t->values[t->rows * t->cols + col++] = v;
            if (col == t->cols || fscanf(f, " ,%lf", &v) != 1)
                break;
        }
        if (col != t->cols)
            break;
        t->rows++;
    }
    fclose(f);
    return t->rows > 0 && t->cols > 1;
}

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

static int train_csv(const char *data, const char *path)
{
    table t;

    if (!read_csv(data, &t)) {
        fprintf(stderr, "train: cannot read numbers from %s\n", data);
        return 1;
    }
    int64_t n = t.rows, n_in = t.cols - 1;

    /* The classes: the sorted distinct values of the last column. */
    double *classes = malloc((size_t)n * sizeof *classes);
    int64_t k = 0;
    for (int64_t i = 0; i < n; i++)
        classes[i] = t.values[i * t.cols + n_in];
    qsort(classes, (size_t)n, sizeof *classes, compare_doubles);
    for (int64_t i = 0; i < n; i++)
        if (k == 0 || classes[i] != classes[k - 1])
            classes[k++] = classes[i];

    /* Standardise each feature; the scaling is saved with the model. */
    double *mean = calloc((size_t)n_in, sizeof *mean);
    double *scale = calloc((size_t)n_in, sizeof *scale);
    for (int64_t j = 0; j < n_in; j++) {
        for (int64_t i = 0; i < n; i++)
            mean[j] += t.values[i * t.cols + j] / (double)n;
        for (int64_t i = 0; i < n; i++) {
            double d = t.values[i * t.cols + j] - mean[j];
            scale[j] += d * d / (double)n;
        }
        scale[j] = scale[j] > 0 ? sqrt(scale[j]) : 1.0;
    }
    float *x = malloc((size_t)(n * n_in) * sizeof *x);
    int32_t *labels = malloc((size_t)n * sizeof *labels);
    int64_t *label_values = malloc((size_t)k * sizeof *label_values);
    for (int64_t i = 0; i < n; i++) {
        double target = t.values[i * t.cols + n_in];

        for (int64_t j = 0; j < n_in; j++)
            x[i * n_in + j] =
                (float)((t.values[i * t.cols + j] - mean[j]) / scale[j]);
        labels[i] = (int32_t)((double *)bsearch(&target, classes, (size_t)k,
                                                sizeof target,
                                                compare_doubles) -
                              classes);
    }
    for (int64_t c = 0; c < k; c++)
        label_values[c] = (int64_t)classes[c];

    bp_layer_spec layers[] = {
        {.units = 16, .activation = BP_ACTIVATION_RELU},
        {.units = k, .activation = BP_ACTIVATION_IDENTITY}};
    bp_sgd_config sgd = {0.05f, 0.9f, 1, 1e-4f};
    const int64_t batch = 16, epochs = 100;
    bp_net *net;
    bp_model_extras *ex;
    double loss = 0.0;

    TRY(bp_net_create(&net, n_in, layers, 2, BP_LOSS_CROSS_ENTROPY));
    TRY(bp_net_init(net, BP_INIT_AUTO, SEED));
    for (int64_t epoch = 0; epoch < epochs; epoch++)
        TRY(bp_net_train_epoch(net, &sgd, x, NULL, labels, n, batch, 1,
                               SEED, (uint64_t)epoch, &loss));
    printf("%lld rows, %lld features, %lld classes; final loss %.6f\n",
           (long long)n, (long long)n_in, (long long)k, loss);

    TRY(bp_model_extras_create(&ex));
    TRY(bp_model_extras_set_labels_int(ex, label_values, k));
    TRY(bp_model_extras_set_scaling(ex, mean, scale, n_in));
    int64_t steps = epochs * ((n + batch - 1) / batch);
    int status = save(net, ex, &sgd, (uint64_t)epochs, (uint64_t)steps,
                      path);

    bp_model_extras_free(ex);
    bp_net_free(net);
    free(label_values);
    free(labels);
    free(x);
    free(scale);
    free(mean);
    free(classes);
    free(t.values);
    return status;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "xor") == 0)
        return train_xor(argv[2]);
    if (argc == 4 && strcmp(argv[1], "csv") == 0)
        return train_csv(argv[2], argv[3]);
    fprintf(stderr, "usage: train xor OUT\n       train csv DATA OUT\n");
    return 2;
}
