/*
 * predict: load a model file saved from Python or C and print its
 * outputs for rows of comma-separated numbers.
 *
 *   predict MODEL [CSV]
 *
 * Reads CSV (or standard input when it is absent or "-"): each line
 * starts with the model's input features (later columns, such as a
 * label, are ignored); a first line that is not numbers is a header and
 * is skipped. If the file holds input scaling, each
 * feature x becomes (x - mean) / scale, computed in double, as Python
 * does. Prints one line per row: the outputs (probabilities with a
 * classification loss) as %.9g, which identifies a float exactly, and,
 * when the file holds class labels, a tab and the predicted label.
 */
#include <bprop.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rows per bp_net_predict chunk: the same as the Python package uses. */
#define CHUNK 1024

/* One line of `f` in a buffer that grows; NULL at the end of the file. */
static char *read_line(FILE *f, char **buf, size_t *cap)
{
    size_t len = 0;
    int c;

    while ((c = fgetc(f)) != EOF && c != '\n') {
        if (len + 2 > *cap) {
            size_t bigger = *cap ? 2 * *cap : 256;
            char *grown = realloc(*buf, bigger);
            if (grown == NULL)
                return NULL;
            *buf = grown;
            *cap = bigger;
        }
        (*buf)[len++] = (char)c;
    }
    if (c == EOF && len == 0)
        return NULL;
    if (*buf == NULL && (*buf = malloc(*cap = 1)) == NULL)
        return NULL;
    (*buf)[len] = '\0';
    if (len > 0 && (*buf)[len - 1] == '\r')
        (*buf)[len - 1] = '\0';
    return *buf;
}

/*
 * Parses up to `n` comma-separated numbers of `line` into `x`; returns
 * how many fields the line has, or -1 if one is not a number.
 */
static long parse_row(const char *line, double *x, long n)
{
    const char *p = line;
    long count = 0;

    for (;;) {
        char *end;
        double value = strtod(p, &end);

        if (end == p)
            return -1;
        if (count < n)
            x[count] = value;
        count++;
        while (*end == ' ' || *end == '\t')
            end++;
        if (*end == '\0')
            return count;
        if (*end != ',')
            return -1;
        p = end + 1;
    }
}

/* The label of the row's prediction, printed after a tab. */
static void print_label(const bp_model_extras *ex, const float *out,
                        int64_t n_out)
{
    int64_t best = 0;

    if (n_out == 1) {
        best = out[0] > 0.5f;
    } else {
        for (int64_t k = 1; k < n_out; k++)
            if (out[k] > out[best])
                best = k;
    }
    switch (bp_model_extras_label_type(ex)) {
    case BP_LABEL_TYPE_INT:
        printf("\t%lld", (long long)bp_model_extras_labels_int(ex)[best]);
        break;
    case BP_LABEL_TYPE_FLOAT:
        printf("\t%.17g", bp_model_extras_labels_float(ex)[best]);
        break;
    case BP_LABEL_TYPE_STRING:
        printf("\t%s", bp_model_extras_label_string(ex, best));
        break;
    case BP_LABEL_TYPE_NONE:
        break;
    }
}

/* Reads every row of `in` into a new array of n x n_in floats. */
static float *read_rows(FILE *in, const char *name,
                        const bp_model_extras *ex, int64_t n_in,
                        int64_t *n_rows)
{
    const double *mean = NULL, *scale = NULL;
    int64_t scaled = bp_model_extras_get_scaling(ex, &mean, &scale);
    double *row = malloc((size_t)n_in * sizeof *row);
    float *x = NULL;
    size_t cap = 0, rows = 0, line_cap = 0;
    char *line = NULL;
    long number = 0;
    int failed = 0;

    while (row != NULL && read_line(in, &line, &line_cap) != NULL) {
        number++;
        if (line[0] == '\0')
            continue;
        long fields = parse_row(line, row, (long)n_in);
        if (fields < 0 && number == 1)
            continue;
        if (fields < (long)n_in) {
            fprintf(stderr, "predict: %s line %ld: expected %lld numbers\n",
                    name, number, (long long)n_in);
            failed = 1;
            rows = 0;
            break;
        }
        if (rows == cap) {
            cap = cap ? 2 * cap : 64;
            float *grown = realloc(x, cap * (size_t)n_in * sizeof *x);
            if (grown == NULL)
                break;
            x = grown;
        }
        for (int64_t j = 0; j < n_in; j++) {
            double v = row[j];
            if (scaled == n_in)
                v = (v - mean[j]) / scale[j];
            x[rows * (size_t)n_in + (size_t)j] = (float)v;
        }
        rows++;
    }
    if (rows == 0) {
        if (!failed)
            fprintf(stderr, "predict: %s holds no rows\n", name);
        free(x);
        x = NULL;
    }
    free(line);
    free(row);
    *n_rows = (int64_t)rows;
    return x;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: predict MODEL [CSV]\n");
        return 2;
    }

    bp_net *net;
    bp_model_extras *ex;
    if (bp_net_load(&net, argv[1], &ex) != BP_STATUS_OK) {
        fprintf(stderr, "predict: %s\n", bp_last_error());
        return 1;
    }

    const char *name = argc == 3 ? argv[2] : "-";
    FILE *in = strcmp(name, "-") == 0 ? stdin : fopen(name, "r");
    if (in == NULL) {
        fprintf(stderr, "predict: cannot open %s\n", name);
        return 1;
    }
    int64_t n_in = bp_net_n_inputs(net), n_out = bp_net_n_outputs(net);
    int64_t n = 0;
    float *x = read_rows(in, name, ex, n_in, &n);
    if (in != stdin)
        fclose(in);

    float *out = malloc((size_t)(n > 0 ? n : 1) * (size_t)n_out *
                        sizeof *out);
    bp_workspace *ws = NULL;
    int status = 1;
    if (x != NULL && out != NULL &&
        bp_workspace_create(&ws, net, CHUNK) == BP_STATUS_OK &&
        bp_net_predict(net, ws, out, x, n) == BP_STATUS_OK) {
        for (int64_t i = 0; i < n; i++) {
            const float *o = out + i * n_out;

            for (int64_t k = 0; k < n_out; k++)
                printf(k ? " %.9g" : "%.9g", (double)o[k]);
            print_label(ex, o, n_out);
            putchar('\n');
        }
        status = 0;
    } else if (x != NULL) {
        fprintf(stderr, "predict: %s\n", bp_last_error());
    }

    bp_workspace_free(ws);
    free(out);
    free(x);
    bp_model_extras_free(ex);
    bp_net_free(net);
    return status;
}
