/*
 * Networks through the public API: construction errors, the parameter
 * layout, seeded initialisation, every loss's gradient against central
 * finite differences, learning XOR by batches and by epochs, bitwise
 * reproducibility across seeds, clones and thread counts, chunked
 * inference, and the statuses and messages of invalid calls.
 *
 * Uses the public API only. Exits 0 when every check passes.
 */
#include "bprop.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A layer spec for the case tables: SPEC(5, TANH). */
#define SPEC(n, act) {.units = (n), .activation = BP_ACTIVATION_##act}

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

/* A fixed-seed generator, so every run tests the same values. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

/* n floats uniform in [lo, hi); the caller frees them. */
static float *random_floats(int64_t n, float lo, float hi)
{
    float *x = malloc((size_t)n * sizeof(float));

    for (int64_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * 0.5f * (uniform() + 1.0f);
    return x;
}

/* n labels in [0, classes); the caller frees them. */
static int32_t *random_labels(int64_t n, int64_t classes)
{
    int32_t *labels = malloc((size_t)n * sizeof(int32_t));

    for (int64_t i = 0; i < n; i++) {
        int32_t c = (int32_t)((uniform() + 1.0f) * 0.5f * (float)classes);
        labels[i] = c < classes ? c : (int32_t)classes - 1;
    }
    return labels;
}

/* A network initialised from `seed`; any failure ends the program. */
static bp_net *make_net(int64_t n_inputs, const bp_layer_spec *layers,
                        int n_layers, bp_loss loss, uint64_t seed)
{
    bp_net *net = NULL;

    require(bp_net_create(&net, n_inputs, layers, n_layers, loss),
            "bp_net_create");
    require(bp_net_init(net, BP_INIT_AUTO, seed), "bp_net_init");
    return net;
}

/* A copy of the parameters, to compare later; the caller frees it. */
static float *params_copy(const bp_net *net)
{
    size_t bytes = (size_t)bp_net_n_params(net) * sizeof(float);
    float *copy = malloc(bytes);

    memcpy(copy, bp_net_params_const(net), bytes);
    return copy;
}

static int params_equal(const bp_net *a, const bp_net *b)
{
    return bp_net_n_params(a) == bp_net_n_params(b) &&
           memcmp(bp_net_params_const(a), bp_net_params_const(b),
                  (size_t)bp_net_n_params(a) * sizeof(float)) == 0;
}

static int params_equal_to(const bp_net *net, const float *saved)
{
    return memcmp(bp_net_params_const(net), saved,
                  (size_t)bp_net_n_params(net) * sizeof(float)) == 0;
}

/*
 * One call that must fail with `want`, leaving a message that contains
 * `needle` (an argument name or the rule that was broken).
 */
static void expect_status(bp_status st, bp_status want, const char *needle,
                          const char *what)
{
    char line[400];

    snprintf(line, sizeof line, "%s: status is %s, expected %s", what,
             bp_status_name(st), bp_status_name(want));
    check(st == want, line);
    snprintf(line, sizeof line, "%s: message \"%s\" mentions \"%s\"", what,
             bp_last_error(), needle);
    check(strstr(bp_last_error(), needle) != NULL, line);
}

static void expect_invalid(bp_status st, const char *needle,
                           const char *what)
{
    expect_status(st, BP_STATUS_INVALID_ARGUMENT, needle, what);
}

/* ---------------------------------------------------------------------
 * Construction and layout
 * ------------------------------------------------------------------- */

/* bp_net_create must fail, name the problem and set *out to NULL. */
static void expect_create_fails(int64_t n_inputs, const bp_layer_spec *l,
                                int n_layers, bp_loss loss,
                                const char *needle, const char *what)
{
    const bp_layer_spec one = {.units = 1,
                               .activation = BP_ACTIVATION_IDENTITY};
    bp_net *old = make_net(1, &one, 1, BP_LOSS_MSE, 0);
    bp_net *net = old;

    expect_invalid(bp_net_create(&net, n_inputs, l, n_layers, loss), needle,
                   what);
    check(net == NULL, "a failed bp_net_create sets *out to NULL");
    if (net != old)
        bp_net_free(net);
    bp_net_free(old);
}

static void test_create_errors(void)
{
    const bp_layer_spec ok[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec no_units[] = {
        {.units = 0, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec soft_hidden[] = {
        {.units = 5, .activation = BP_ACTIVATION_SOFTMAX},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec soft_out[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_SOFTMAX}};
    const bp_layer_spec relu_out[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_RELU}};
    const bp_layer_spec tanh_out[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_TANH}};
    const bp_layer_spec bad_act[] = {
        {.units = 5, .activation = (bp_activation)42},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec huge_hidden[] = {
        {.units = INT64_MAX, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec huge_out[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = INT64_MAX, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec huge_product[] = {
        {.units = 1ll << 40, .activation = BP_ACTIVATION_TANH},
        {.units = 1ll << 40, .activation = BP_ACTIVATION_TANH}};
    const bp_loss mse = BP_LOSS_MSE, ce = BP_LOSS_CROSS_ENTROPY;

    expect_create_fails(0, ok, 2, mse, "'n_inputs'", "n_inputs 0");
    expect_create_fails(-3, ok, 2, mse, "'n_inputs'", "n_inputs -3");
    expect_create_fails(4, ok, 0, mse, "'n_layers'", "no layers");
    expect_create_fails(4, NULL, 2, mse, "'layers'", "layers NULL");
    expect_create_fails(4, no_units, 2, mse, "units", "units 0");
    expect_create_fails(4, soft_hidden, 2, ce, "softmax",
                        "softmax on a hidden layer");
    expect_create_fails(4, soft_out, 2, mse, "mse", "mse after softmax");
    expect_create_fails(4, relu_out, 2, ce, "cross_entropy",
                        "cross-entropy after relu");
    expect_create_fails(4, tanh_out, 2, BP_LOSS_BINARY_CROSS_ENTROPY,
                        "binary_cross_entropy",
                        "binary cross-entropy after tanh");
    expect_create_fails(4, bad_act, 2, mse, "activation",
                        "unknown activation");
    expect_create_fails(4, ok, 2, (bp_loss)9, "'loss'", "unknown loss");
    expect_create_fails(4, huge_hidden, 2, mse, "too large",
                        "INT64_MAX hidden units");
    expect_create_fails(4, huge_out, 2, mse, "too large",
                        "INT64_MAX output units");
    expect_create_fails(INT64_MAX, ok, 2, mse, "too large",
                        "INT64_MAX inputs");
    expect_create_fails(4, huge_product, 2, mse, "too large",
                        "2^40 x 2^40 weights");
    expect_invalid(bp_net_create(NULL, 4, ok, 2, mse), "'out'",
                   "out NULL");
}

static void test_layout(void)
{
    const bp_layer_spec layers[] = {
        {.units = 5, .activation = BP_ACTIVATION_TANH},
        {.units = 4, .activation = BP_ACTIVATION_SOFTMAX}};
    bp_net *net = NULL;
    bp_layer_spec spec = {.units = 0, .activation = BP_ACTIVATION_IDENTITY};
    int64_t w = -1, b = -1;
    int zero = 1;

    require(bp_net_create(&net, 3, layers, 2, BP_LOSS_CROSS_ENTROPY),
            "bp_net_create 3-5-4");
    check(bp_net_n_inputs(net) == 3, "n_inputs is 3");
    check(bp_net_n_outputs(net) == 4, "n_outputs is 4");
    check(bp_net_n_layers(net) == 2, "n_layers is 2");
    check(bp_net_loss(net) == BP_LOSS_CROSS_ENTROPY, "loss is kept");
    check(bp_net_n_params(net) == 3 * 5 + 5 + 5 * 4 + 4, "n_params is 44");

    /* Per layer: weights I x O, then biases O, without padding. */
    check(bp_net_layer_offsets(net, 0, &w, &b) == BP_STATUS_OK &&
              w == 0 && b == 15, "layer 0 offsets are 0 and 15");
    check(bp_net_layer_offsets(net, 1, &w, &b) == BP_STATUS_OK &&
              w == 20 && b == 40, "layer 1 offsets are 20 and 40");
    check(bp_net_layer(net, 1, &spec) == BP_STATUS_OK && spec.units == 4 &&
              spec.activation == BP_ACTIVATION_SOFTMAX,
          "layer 1 spec is kept");
    expect_invalid(bp_net_layer(net, 2, &spec), "'i'", "layer index 2");
    expect_invalid(bp_net_layer_offsets(net, -1, &w, &b), "'i'",
                   "layer offsets index -1");

    /* Parameters start at zero until bp_net_init. */
    for (int64_t i = 0; i < bp_net_n_params(net); i++)
        zero &= bp_net_params(net)[i] == 0.0f;
    check(zero, "parameters start at zero");
    bp_net_free(net);
}

/* Largest |w| of layer i's weights, and whether its biases are zero. */
static float layer_max_abs(const bp_net *net, int i, int *biases_zero)
{
    const float *p = bp_net_params_const(net);
    bp_layer_spec spec;
    int64_t w, b;
    float max = 0.0f;

    bp_net_layer_offsets(net, i, &w, &b);
    bp_net_layer(net, i, &spec);
    for (int64_t k = w; k < b; k++)
        max = fabsf(p[k]) > max ? fabsf(p[k]) : max;
    *biases_zero = 1;
    for (int64_t k = b; k < b + spec.units; k++)
        *biases_zero &= p[k] == 0.0f;
    return max;
}

/* Every layer's weights fill most of [-limit, limit] and no more. */
static void check_limits(const bp_net *net, bp_init init, const char *name)
{
    char what[160];

    for (int i = 0; i < bp_net_n_layers(net); i++) {
        bp_layer_spec spec;
        double fan_in = i == 0 ? (double)bp_net_n_inputs(net) : 0.0;
        int biases_zero;

        if (i > 0) {
            bp_net_layer(net, i - 1, &spec);
            fan_in = (double)spec.units;
        }
        bp_net_layer(net, i, &spec);
        int he = init == BP_INIT_HE ||
                 (init == BP_INIT_AUTO &&
                  spec.activation == BP_ACTIVATION_RELU);
        double limit = he ? sqrt(6.0 / fan_in)
                          : sqrt(6.0 / (fan_in + (double)spec.units));
        float max = layer_max_abs(net, i, &biases_zero);

        snprintf(what, sizeof what, "%s layer %d: max |w| %.4f within "
                 "(0.9, 1] x limit %.4f", name, i, max, limit);
        check(max <= limit * (1 + 1e-6) && max > 0.9 * limit, what);
        snprintf(what, sizeof what, "%s layer %d: biases are zero", name, i);
        check(biases_zero, what);
    }
}

static void test_init(void)
{
    const bp_layer_spec layers[] = {
        {.units = 30, .activation = BP_ACTIVATION_RELU},
        {.units = 10, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    bp_net *a = make_net(20, layers, 3, BP_LOSS_MSE, 7);
    bp_net *b = make_net(20, layers, 3, BP_LOSS_MSE, 7);
    bp_net *c = make_net(20, layers, 3, BP_LOSS_MSE, 8);

    check(params_equal(a, b), "same seed gives the same parameters");
    check(!params_equal(a, c), "another seed gives other parameters");
    check_limits(a, BP_INIT_AUTO, "auto");

    /* Re-initialising resets the momentum buffers as well. */
    bp_net_velocity(c)[3] = 1.0f;
    require(bp_net_init(c, BP_INIT_HE, 7), "bp_net_init he");
    check_limits(c, BP_INIT_HE, "he");
    check(bp_net_velocity(c)[3] == 0.0f, "init zeroes the velocity");
    require(bp_net_init(c, BP_INIT_GLOROT, 7), "bp_net_init glorot");
    check_limits(c, BP_INIT_GLOROT, "glorot");
    expect_invalid(bp_net_init(c, (bp_init)42, 7), "'init'",
                   "unknown init");

    bp_net_free(a);
    bp_net_free(b);
    bp_net_free(c);
}

/* ---------------------------------------------------------------------
 * Gradients and the forward pass against references
 * ------------------------------------------------------------------- */

/* Mean loss of the network on a batch, through bp_net_evaluate. */
static double eval_loss(const bp_net *net, bp_workspace *ws, const float *x,
                        const float *y, const int32_t *labels, int64_t n)
{
    double loss = NAN;

    require(bp_net_evaluate(net, ws, x, y, labels, n, &loss),
            "bp_net_evaluate");
    return loss;
}

/*
 * Compares bp_net_gradient with central differences of the loss for
 * every parameter of a network of 3 inputs and 4 outputs; returns the
 * largest error relative to max(|analytic|, |numeric|, 1e-3).
 */
static double gradient_error(const bp_layer_spec *layers, int n_layers,
                             bp_loss loss)
{
    const int64_t n_in = 3, n_out = 4, batch = 7;
    const float eps = 1e-2f;
    bp_net *net = make_net(n_in, layers, n_layers, loss, 3);
    int64_t n_params = bp_net_n_params(net);
    float *p = bp_net_params(net);
    float *x = random_floats(batch * n_in, -1.0f, 1.0f);
    float *y = random_floats(batch * n_out, loss == BP_LOSS_MSE ? -0.9f
                                                                : 0.0f, 0.9f);
    int32_t *labels = random_labels(batch, n_out);
    float *grad = malloc((size_t)n_params * sizeof(float));
    double batch_loss = NAN, worst = 0.0, largest = 0.0;
    bp_workspace *ws;

    /* Random biases too, so that every term of the forward pass counts. */
    for (int64_t i = 0; i < n_params; i++)
        p[i] = 0.8f * uniform();
    require(bp_net_gradient(net, x, y, labels, batch, &batch_loss),
            "bp_net_gradient");
    memcpy(grad, bp_net_grads(net), (size_t)n_params * sizeof(float));
    require(bp_workspace_create(&ws, net, batch), "bp_workspace_create");
    check(fabs(eval_loss(net, ws, x, y, labels, batch) - batch_loss) <=
              1e-6 * (1.0 + batch_loss),
          "bp_net_gradient's loss equals bp_net_evaluate's");

    for (int64_t i = 0; i < n_params; i++) {
        float saved = p[i];

        p[i] = saved + eps;
        double up = eval_loss(net, ws, x, y, labels, batch);
        p[i] = saved - eps;
        double down = eval_loss(net, ws, x, y, labels, batch);
        p[i] = saved;

        double numeric = (up - down) / (2.0 * (double)eps);
        double scale = fmax(fmax(fabs(grad[i]), fabs(numeric)), 1e-3);
        double err = fabs(grad[i] - numeric) / scale;
        worst = err > worst || isnan(err) ? err : worst;
        largest = fmax(largest, fabs(grad[i]));
    }
    check(largest > 1e-2, "the gradient is not vanishingly small");

    bp_workspace_free(ws);
    bp_net_free(net);
    free(x);
    free(y);
    free(labels);
    free(grad);
    return worst;
}

static void test_gradients(void)
{
    static const struct {
        const char *name;
        bp_layer_spec layers[3];
        int n_layers;
        bp_loss loss;
    } cases[] = {
        {"mse, tanh output",
         {SPEC(5, TANH), SPEC(4, TANH)}, 2, BP_LOSS_MSE},
        {"mse, sigmoid hidden, identity output",
         {SPEC(5, SIGMOID), SPEC(4, IDENTITY)}, 2,
         BP_LOSS_MSE},
        {"cross-entropy, softmax output",
         {SPEC(5, TANH), SPEC(4, SOFTMAX)}, 2,
         BP_LOSS_CROSS_ENTROPY},
        {"cross-entropy, identity output",
         {SPEC(5, SIGMOID), SPEC(4, IDENTITY)}, 2,
         BP_LOSS_CROSS_ENTROPY},
        {"binary cross-entropy, sigmoid output",
         {SPEC(5, TANH), SPEC(4, SIGMOID)}, 2,
         BP_LOSS_BINARY_CROSS_ENTROPY},
        {"mse, 3-5-6-4",
         {SPEC(5, TANH), SPEC(6, SIGMOID),
          SPEC(4, IDENTITY)}, 3, BP_LOSS_MSE},
        {"cross-entropy, 3-6-5-4",
         {SPEC(6, SIGMOID), SPEC(5, TANH),
          SPEC(4, SOFTMAX)}, 3, BP_LOSS_CROSS_ENTROPY},
        {"binary cross-entropy, one layer 3-4",
         {SPEC(4, IDENTITY)}, 1, BP_LOSS_BINARY_CROSS_ENTROPY},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double err = gradient_error(cases[i].layers, cases[i].n_layers,
                                    cases[i].loss);
        char what[160];

        printf("gradient  %-40s largest relative difference %.3g\n",
               cases[i].name, err);
        snprintf(what, sizeof what, "gradient of %s matches finite "
                 "differences (error %.3g)", cases[i].name, err);
        check(err < 2e-2, what);
    }
}

/* v = act(v) in double; softmax over all n values. */
static void reference_activation(double *v, int64_t n, bp_activation act)
{
    double max = -INFINITY, sum = 0.0;

    for (int64_t i = 0; i < n; i++)
        max = fmax(max, v[i]);
    for (int64_t i = 0; i < n; i++) {
        if (act == BP_ACTIVATION_RELU)
            v[i] = v[i] > 0.0 ? v[i] : 0.0;
        else if (act == BP_ACTIVATION_SIGMOID)
            v[i] = 1.0 / (1.0 + exp(-v[i]));
        else if (act == BP_ACTIVATION_TANH)
            v[i] = tanh(v[i]);
        else if (act == BP_ACTIVATION_SOFTMAX)
            sum += v[i] = exp(v[i] - max);
    }
    for (int64_t i = 0; i < n && act == BP_ACTIVATION_SOFTMAX; i++)
        v[i] /= sum;
}

/*
 * The network's outputs for one row, in double from the parameter slab:
 * the reference for bp_net_predict, including the link function of a
 * fused loss after an identity output layer.
 *   out  O (OUT)    x  I (IN)
 */
static void reference_predict(double *out, const bp_net *net,
                              const float *x)
{
    const float *p = bp_net_params_const(net);
    int64_t n_in = bp_net_n_inputs(net);
    double in[64], z[64];
    bp_layer_spec spec = {.units = 0, .activation = BP_ACTIVATION_IDENTITY};

    for (int64_t j = 0; j < n_in; j++)
        in[j] = x[j];
    for (int l = 0; l < bp_net_n_layers(net); l++) {
        int64_t w, b;

        bp_net_layer(net, l, &spec);
        bp_net_layer_offsets(net, l, &w, &b);
        for (int64_t o = 0; o < spec.units; o++) {
            z[o] = p[b + o];
            for (int64_t j = 0; j < n_in; j++)
                z[o] += in[j] * p[w + j * spec.units + o];
        }
        reference_activation(z, spec.units, spec.activation);
        memcpy(in, z, (size_t)spec.units * sizeof(double));
        n_in = spec.units;
    }

    if (spec.activation == BP_ACTIVATION_IDENTITY &&
        bp_net_loss(net) == BP_LOSS_CROSS_ENTROPY)
        reference_activation(in, n_in, BP_ACTIVATION_SOFTMAX);
    if (spec.activation == BP_ACTIVATION_IDENTITY &&
        bp_net_loss(net) == BP_LOSS_BINARY_CROSS_ENTROPY)
        reference_activation(in, n_in, BP_ACTIVATION_SIGMOID);
    memcpy(out, in, (size_t)n_in * sizeof(double));
}

/* bp_net_predict against the double reference for each kind of output. */
static void test_predict_reference(void)
{
    static const struct {
        const char *name;
        bp_layer_spec layers[3];
        bp_loss loss;
    } cases[] = {
        {"mse, identity output",
         {SPEC(9, RELU), SPEC(6, TANH),
          SPEC(4, IDENTITY)}, BP_LOSS_MSE},
        {"cross-entropy, identity output",
         {SPEC(9, RELU), SPEC(6, SIGMOID),
          SPEC(4, IDENTITY)}, BP_LOSS_CROSS_ENTROPY},
        {"cross-entropy, softmax output",
         {SPEC(9, TANH), SPEC(6, RELU),
          SPEC(4, SOFTMAX)}, BP_LOSS_CROSS_ENTROPY},
        {"binary cross-entropy, identity output",
         {SPEC(9, RELU), SPEC(6, RELU),
          SPEC(4, IDENTITY)}, BP_LOSS_BINARY_CROSS_ENTROPY},
    };
    const int64_t n = 13, n_in = 5;

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bp_net *net = make_net(n_in, cases[c].layers, 3, cases[c].loss, 9);
        float *x = random_floats(n * n_in, -2.0f, 2.0f);
        float out[13 * 4];
        double ref[13 * 4], worst = 0.0;
        int probabilities = 1;
        bp_workspace *ws;
        char what[160];

        for (int64_t i = 0; i < bp_net_n_params(net); i++)
            bp_net_params(net)[i] += 0.3f * uniform();
        require(bp_workspace_create(&ws, net, 4), "bp_workspace_create");
        require(bp_net_predict(net, ws, out, x, n), "bp_net_predict");
        for (int64_t r = 0; r < n; r++)
            reference_predict(ref + r * 4, net, x + r * n_in);
        for (int64_t i = 0; i < n * 4; i++)
            worst = fmax(worst, fabs(out[i] - ref[i]));

        /* Cross-entropy gives rows of probabilities that sum to 1. */
        for (int64_t r = 0; r < n && cases[c].loss != BP_LOSS_MSE; r++) {
            double sum = 0.0;

            for (int64_t o = 0; o < 4; o++) {
                sum += out[r * 4 + o];
                probabilities &= out[r * 4 + o] >= 0.0f &&
                                 out[r * 4 + o] <= 1.0f;
            }
            if (cases[c].loss == BP_LOSS_CROSS_ENTROPY)
                probabilities &= fabs(sum - 1.0) < 1e-5;
        }
        printf("predict   %-40s largest difference %.3g\n", cases[c].name,
               worst);
        snprintf(what, sizeof what, "predict with %s matches the double "
                 "reference (difference %.3g)", cases[c].name, worst);
        check(worst < 1e-5, what);
        snprintf(what, sizeof what, "predict with %s gives probabilities",
                 cases[c].name);
        check(probabilities, what);

        bp_workspace_free(ws);
        bp_net_free(net);
        free(x);
    }
}

/* One step moves weights by -lr (g + l2 w) and biases by -lr g. */
static void test_sgd_step(void)
{
    const bp_layer_spec layers[] = {
        {.units = 6, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.1f, 0.0f, 0, 0.05f};
    bp_net *net = make_net(4, layers, 2, BP_LOSS_MSE, 21);
    float *x = random_floats(10 * 4, -1.0f, 1.0f);
    float *y = random_floats(10 * 2, -1.0f, 1.0f);
    int64_t n_params = bp_net_n_params(net);
    float *grad = malloc((size_t)n_params * sizeof(float));
    float *before;
    double worst = 0.0;

    /* Nonzero biases, so that an L2 term on them would show. */
    for (int64_t i = 0; i < n_params; i++)
        bp_net_params(net)[i] += 0.5f * uniform();
    before = params_copy(net);
    require(bp_net_gradient(net, x, y, NULL, 10, NULL), "bp_net_gradient");
    memcpy(grad, bp_net_grads(net), (size_t)n_params * sizeof(float));
    require(bp_net_train_batch(net, &sgd, x, y, NULL, 10, NULL),
            "bp_net_train_batch");
    check(memcmp(grad, bp_net_grads(net),
                 (size_t)n_params * sizeof(float)) == 0,
          "train_batch leaves the gradient bp_net_gradient computes");

    for (int l = 0; l < 2; l++) {
        int64_t w, b;

        bp_net_layer_offsets(net, l, &w, &b);
        for (int64_t i = w; i < b + layers[l].units; i++) {
            double l2 = i < b ? sgd.l2 : 0.0;
            double want = before[i] - sgd.lr * (grad[i] + l2 * before[i]);

            worst = fmax(worst, fabs(bp_net_params(net)[i] - want));
        }
    }
    check(worst < 1e-6, "SGD step with L2 on weights only");

    bp_net_free(net);
    free(x);
    free(y);
    free(before);
    free(grad);
}

/* ---------------------------------------------------------------------
 * Learning XOR
 * ------------------------------------------------------------------- */

static const float xor_x[] = {0, 0, 0, 1, 1, 0, 1, 1};
static const float xor_y[] = {0, 1, 1, 0};
static const bp_layer_spec xor_layers[] = {
    {.units = 4, .activation = BP_ACTIVATION_TANH},
    {.units = 1, .activation = BP_ACTIVATION_SIGMOID}};

/* Whether all four XOR outputs are within 0.25 of their targets. */
static int xor_solved(const bp_net *net, bp_workspace *ws)
{
    float out[4];
    int ok = 1;

    require(bp_net_predict(net, ws, out, xor_x, 4), "bp_net_predict XOR");
    for (int i = 0; i < 4; i++)
        ok &= fabsf(out[i] - xor_y[i]) < 0.25f;
    return ok;
}

static void test_xor_batches(void)
{
    const bp_sgd_config sgd = {0.5f, 0.5f, 0, 0.0f};
    bp_net *net = make_net(2, xor_layers, 2, BP_LOSS_BINARY_CROSS_ENTROPY,
                           1);
    bp_workspace *ws;
    double first = NAN, loss = NAN;
    int step = 0;

    require(bp_workspace_create(&ws, net, 4), "bp_workspace_create");
    for (; step < 5000 && !(step > 0 && xor_solved(net, ws)); step++) {
        require(bp_net_train_batch(net, &sgd, xor_x, xor_y, NULL, 4, &loss),
                "bp_net_train_batch XOR");
        if (step == 0)
            first = loss;
    }
    printf("XOR       %-40s %d steps, loss %.3f -> %.3f\n", "train_batch",
           step, first, loss);
    check(step < 5000, "train_batch learns XOR");
    check(loss < 0.5 * first, "train_batch halves the XOR loss");
    bp_workspace_free(ws);
    bp_net_free(net);
}

/* Epochs until XOR is solved, or -1 after 3000 epochs. */
static int xor_epochs(int64_t batch_size, int shuffle, double *loss)
{
    const bp_sgd_config sgd = {0.2f, 0.5f, 0, 0.0f};
    bp_net *net = make_net(2, xor_layers, 2, BP_LOSS_BINARY_CROSS_ENTROPY,
                           2);
    bp_workspace *ws;
    int epoch = 0;

    require(bp_workspace_create(&ws, net, 3), "bp_workspace_create");
    for (; epoch < 3000; epoch++) {
        require(bp_net_train_epoch(net, &sgd, xor_x, xor_y, NULL, 4,
                                   batch_size, shuffle, 77,
                                   (uint64_t)epoch, loss),
                "bp_net_train_epoch XOR");
        if (xor_solved(net, ws))
            break;
    }
    bp_workspace_free(ws);
    bp_net_free(net);
    return epoch < 3000 ? epoch + 1 : -1;
}

static void test_xor_epochs(void)
{
    for (int64_t batch_size = 1; batch_size <= 4; batch_size *= 2) {
        for (int shuffle = 0; shuffle <= 1; shuffle++) {
            double loss = NAN;
            int epochs = xor_epochs(batch_size, shuffle, &loss);
            char label[80], what[160];

            snprintf(label, sizeof label, "train_epoch, batch %lld, "
                     "shuffle %d", (long long)batch_size, shuffle);
            printf("XOR       %-40s %d epochs, loss %.3f\n", label, epochs,
                   loss);
            snprintf(what, sizeof what, "%s learns XOR", label);
            check(epochs > 0 && loss < 0.69, what);
        }
    }
}

/* ---------------------------------------------------------------------
 * Reproducibility
 * ------------------------------------------------------------------- */

/* Ten epochs of a fixed regression problem from `shuffle_seed`. */
static bp_net *train_regression(uint64_t shuffle_seed, int shuffle)
{
    const bp_layer_spec layers[] = {
        {.units = 8, .activation = BP_ACTIVATION_RELU},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.05f, 0.9f, 0, 1e-3f};
    bp_net *net = make_net(3, layers, 2, BP_LOSS_MSE, 5);
    uint64_t saved_state = rng_state;
    float *x, *y;

    /* The same data every call. */
    rng_state = 12345;
    x = random_floats(37 * 3, -1.0f, 1.0f);
    y = random_floats(37 * 2, -1.0f, 1.0f);
    rng_state = saved_state;
    for (uint64_t epoch = 0; epoch < 10; epoch++)
        require(bp_net_train_epoch(net, &sgd, x, y, NULL, 37, 8, shuffle,
                                   shuffle_seed, epoch, NULL),
                "bp_net_train_epoch regression");
    free(x);
    free(y);
    return net;
}

static void test_epoch_determinism(void)
{
    bp_net *a = train_regression(3, 1);
    bp_net *b = train_regression(3, 1);
    bp_net *c = train_regression(4, 1);
    bp_net *d = train_regression(3, 0);

    check(params_equal(a, b), "same seed, same parameters after epochs");
    check(!params_equal(a, c), "the shuffle seed changes the order");
    check(!params_equal(a, d), "shuffling changes the order");
    bp_net_free(a);
    bp_net_free(b);
    bp_net_free(c);
    bp_net_free(d);
}

/*
 * An epoch's mean loss weights each batch by its rows. A learning rate
 * far below float resolution keeps the parameters in place, so the
 * mean must equal bp_net_evaluate's loss before the epoch.
 */
static void test_epoch_mean_loss(void)
{
    const bp_layer_spec layers[] = {
        {.units = 6, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {1e-30f, 0.0f, 0, 0.0f};
    bp_net *net = make_net(4, layers, 2, BP_LOSS_CROSS_ENTROPY, 16);
    float *x = random_floats(10 * 4, -2.0f, 2.0f);
    int32_t *labels = random_labels(10, 3);
    bp_workspace *ws;
    double before, mean = NAN;

    for (int64_t i = 0; i < bp_net_n_params(net); i++)
        bp_net_params(net)[i] += 0.5f * uniform();
    require(bp_workspace_create(&ws, net, 10), "bp_workspace_create");
    before = eval_loss(net, ws, x, NULL, labels, 10);

    /* Batches of 4, 4 and 2 rows. */
    require(bp_net_train_epoch(net, &sgd, x, NULL, labels, 10, 4, 1, 3, 0,
                               &mean), "bp_net_train_epoch");
    check(fabs(mean - before) <= 1e-6 * before,
          "an epoch's mean loss is the row-weighted mean of its batches");
    bp_workspace_free(ws);
    bp_net_free(net);
    free(x);
    free(labels);
}

/* Trains and predicts with `threads` threads; returns the network. */
static bp_net *train_with_threads(int threads, const float *x,
                                  const int32_t *labels, float *out)
{
    const bp_layer_spec layers[] = {
        {.units = 256, .activation = BP_ACTIVATION_RELU},
        {.units = 10, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.05f, 0.9f, 1, 1e-4f};
    bp_net *net = make_net(64, layers, 2, BP_LOSS_CROSS_ENTROPY, 11);
    bp_workspace *ws;

    require(bp_set_num_threads(threads), "bp_set_num_threads");
    check(!bp_has_openmp() || bp_get_num_threads() == threads,
          "bp_get_num_threads returns what was set");

    /* Whole-data batches are large enough to be split across threads. */
    for (uint64_t epoch = 0; epoch < 3; epoch++)
        require(bp_net_train_epoch(net, &sgd, x, NULL, labels, 512,
                                   epoch == 1 ? 100 : 512, 1, 8, epoch,
                                   NULL),
                "bp_net_train_epoch 64-256-10");
    require(bp_workspace_create(&ws, net, 512), "bp_workspace_create");
    require(bp_net_predict(net, ws, out, x, 512), "bp_net_predict");
    bp_workspace_free(ws);
    return net;
}

static void test_thread_determinism(void)
{
    float *x = random_floats(512 * 64, -1.0f, 1.0f);
    int32_t *labels = random_labels(512, 10);
    float *out1 = malloc(512 * 10 * sizeof(float));
    float *out2 = malloc(512 * 10 * sizeof(float));
    bp_net *one = train_with_threads(1, x, labels, out1);
    bp_net *two = train_with_threads(2, x, labels, out2);
    int same = params_equal(one, two);

    printf("threads   %-40s %s\n", "64-256-10 on 512 rows, 1 and 2",
           same ? "bitwise equal" : "DIFFER");
    check(same, "parameters bitwise equal for 1 and 2 threads");
    check(memcmp(out1, out2, 512 * 10 * sizeof(float)) == 0,
          "predictions bitwise equal for 1 and 2 threads");
    require(bp_set_num_threads(1), "bp_set_num_threads");
    bp_net_free(one);
    bp_net_free(two);
    free(x);
    free(labels);
    free(out1);
    free(out2);
}

static void test_clone(void)
{
    const bp_layer_spec layers[] = {
        {.units = 6, .activation = BP_ACTIVATION_TANH},
        {.units = 1, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.1f, 0.5f, 0, 0.0f};
    bp_net *net = make_net(2, layers, 2, BP_LOSS_BINARY_CROSS_ENTROPY, 4);
    bp_net *copy = NULL, *no_copy;

    require(bp_net_train_batch(net, &sgd, xor_x, xor_y, NULL, 4, NULL),
            "bp_net_train_batch");
    require(bp_net_clone(&copy, net), "bp_net_clone");
    check(copy != net && params_equal(copy, net), "clone copies params");
    check(bp_net_n_params(copy) == bp_net_n_params(net) &&
              bp_net_loss(copy) == bp_net_loss(net) &&
              bp_net_n_layers(copy) == 2 && bp_net_n_inputs(copy) == 2,
          "clone copies the layers and loss");
    check(memcmp(bp_net_velocity(copy), bp_net_velocity(net),
                 (size_t)bp_net_n_params(net) * sizeof(float)) == 0,
          "clone copies the velocity");

    /* The same step on both keeps them equal; a step on one does not. */
    float *saved = params_copy(net);
    require(bp_net_train_batch(copy, &sgd, xor_x, xor_y, NULL, 4, NULL),
            "bp_net_train_batch on the clone");
    check(params_equal_to(net, saved), "training the clone leaves the "
          "original alone");
    require(bp_net_train_batch(net, &sgd, xor_x, xor_y, NULL, 4, NULL),
            "bp_net_train_batch on the original");
    check(params_equal(copy, net), "same step on clone and original");
    bp_net_params(net)[0] += 1.0f;
    check(!params_equal(copy, net), "the clone has its own parameters");

    no_copy = copy;
    expect_invalid(bp_net_clone(&no_copy, NULL), "'net'", "clone of NULL");
    check(no_copy == NULL, "a failed clone sets *out to NULL");
    free(saved);
    bp_net_free(copy);
    bp_net_free(net);
}

/* ---------------------------------------------------------------------
 * Inference in chunks
 * ------------------------------------------------------------------- */

static void test_chunks(void)
{
    const bp_layer_spec layers[] = {
        {.units = 7, .activation = BP_ACTIVATION_RELU},
        {.units = 3, .activation = BP_ACTIVATION_IDENTITY}};
    const int64_t n = 37;
    bp_net *net = make_net(5, layers, 2, BP_LOSS_CROSS_ENTROPY, 6);
    float *x = random_floats(n * 5, -1.0f, 1.0f);
    int32_t *labels = random_labels(n, 3);
    float small_out[37 * 3], big_out[37 * 3];
    bp_workspace *small, *big;
    double whole = NAN, small_loss = NAN, total = 0.0;

    require(bp_workspace_create(&small, net, 4), "workspace of 4 rows");
    require(bp_workspace_create(&big, net, 64), "workspace of 64 rows");
    require(bp_net_predict(net, small, small_out, x, n), "predict, 4 rows");
    require(bp_net_predict(net, big, big_out, x, n), "predict, 64 rows");
    check(memcmp(small_out, big_out, sizeof small_out) == 0,
          "predict in chunks of 4 equals one chunk");
    check(bp_net_predict(net, small, NULL, NULL, 0) == BP_STATUS_OK,
          "predict on 0 rows");

    /* The loss is the row-weighted mean of the chunks' losses. */
    require(bp_net_evaluate(net, big, x, NULL, labels, n, &whole),
            "evaluate, 64 rows");
    require(bp_net_evaluate(net, small, x, NULL, labels, n, &small_loss),
            "evaluate, 4 rows");
    for (int64_t start = 0; start < n; start += 5) {
        int64_t rows = n - start < 5 ? n - start : 5;

        total += (double)rows * eval_loss(net, big, x + start * 5, NULL,
                                          labels + start, rows);
    }
    check(fabs(whole - total / (double)n) <= 1e-12 * whole,
          "evaluate equals the mean of per-chunk losses");
    check(fabs(whole - small_loss) <= 1e-12 * whole,
          "evaluate in chunks of 4 equals one chunk");

    bp_workspace_free(small);
    bp_workspace_free(big);
    bp_net_free(net);
    free(x);
    free(labels);
}

/* ---------------------------------------------------------------------
 * Invalid calls
 * ------------------------------------------------------------------- */

static void test_bad_labels(void)
{
    const bp_layer_spec layers[] = {
        {.units = 4, .activation = BP_ACTIVATION_TANH},
        {.units = 3, .activation = BP_ACTIVATION_SOFTMAX}};
    const bp_sgd_config sgd = {0.1f, 0.0f, 0, 0.0f};
    bp_net *net = make_net(2, layers, 2, BP_LOSS_CROSS_ENTROPY, 12);
    float x[10 * 2];
    int32_t labels[10] = {0, 1, 2, 0, 1, 2, 0, 1, 2, 3};
    float *saved = params_copy(net);
    bp_workspace *ws;
    double loss = 0.0;

    for (int i = 0; i < 20; i++)
        x[i] = uniform();
    require(bp_workspace_create(&ws, net, 10), "bp_workspace_create");
    expect_invalid(bp_net_train_epoch(net, &sgd, x, NULL, labels, 10, 2, 1,
                                      1, 0, &loss), "labels[9] is 3",
                   "train_epoch with label 3 of 3 classes");
    labels[9] = 2;
    labels[4] = -1;
    expect_invalid(bp_net_train_batch(net, &sgd, x, NULL, labels, 10, &loss),
                   "labels[4] is -1", "train_batch with label -1");
    expect_invalid(bp_net_gradient(net, x, NULL, labels, 10, &loss),
                   "labels[4]", "gradient with label -1");
    expect_invalid(bp_net_evaluate(net, ws, x, NULL, labels, 10, &loss),
                   "labels[4]", "evaluate with label -1");
    check(params_equal_to(net, saved), "bad labels leave params unchanged");
    bp_workspace_free(ws);
    bp_net_free(net);
    free(saved);
}

static void test_null_pointers(void)
{
    const bp_layer_spec layers[] = {
        {.units = 4, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {0.1f, 0.0f, 0, 0.0f};
    const bp_sgd_config bad_lr = {0.0f, 0.0f, 0, 0.0f};
    bp_net *net = make_net(3, layers, 2, BP_LOSS_MSE, 13);
    bp_workspace *ws, *no_ws;
    float x[3] = {1, 2, 3}, y[2] = {0, 1}, out[2];
    double loss;

    require(bp_workspace_create(&ws, net, 2), "bp_workspace_create");
    expect_invalid(bp_net_init(NULL, BP_INIT_AUTO, 1), "'net'", "init");
    expect_invalid(bp_net_gradient(NULL, x, y, NULL, 1, &loss), "'net'",
                   "gradient net");
    expect_invalid(bp_net_gradient(net, NULL, y, NULL, 1, &loss), "'x'",
                   "gradient x");
    expect_invalid(bp_net_gradient(net, x, NULL, NULL, 1, &loss), "'y'",
                   "gradient y");
    expect_invalid(bp_net_gradient(net, x, y, NULL, 0, &loss), "'batch'",
                   "gradient batch 0");
    expect_invalid(bp_net_train_batch(net, NULL, x, y, NULL, 1, &loss),
                   "'cfg'", "train_batch sgd");
    expect_invalid(bp_net_train_batch(net, &bad_lr, x, y, NULL, 1, &loss),
                   "lr", "train_batch lr 0");
    expect_invalid(bp_net_train_epoch(NULL, &sgd, x, y, NULL, 1, 1, 0, 0, 0,
                                      &loss), "'net'", "train_epoch net");
    expect_invalid(bp_net_train_epoch(net, &sgd, NULL, y, NULL, 1, 1, 0, 0,
                                      0, &loss), "'x'", "train_epoch x");
    expect_invalid(bp_net_train_epoch(net, &sgd, x, NULL, NULL, 1, 1, 0, 0,
                                      0, &loss), "'y'", "train_epoch y");
    expect_invalid(bp_net_train_epoch(net, &sgd, x, y, NULL, 0, 1, 0, 0, 0,
                                      &loss), "'n'", "train_epoch n 0");
    expect_invalid(bp_net_train_epoch(net, &sgd, x, y, NULL, 1, 0, 0, 0, 0,
                                      &loss), "'batch_size'",
                   "train_epoch batch_size 0");
    no_ws = ws;
    expect_invalid(bp_workspace_create(&no_ws, NULL, 2), "'net'",
                   "workspace net");
    check(no_ws == NULL, "a failed workspace_create sets *out to NULL");
    expect_invalid(bp_workspace_create(&no_ws, net, 0), "'max_batch'",
                   "workspace max_batch 0");
    expect_invalid(bp_workspace_create(&no_ws, net, INT64_MAX), "too large",
                   "workspace max_batch INT64_MAX");
    expect_invalid(bp_net_gradient(net, x, y, NULL, INT64_MAX, &loss),
                   "too large", "gradient batch INT64_MAX");
    expect_invalid(bp_net_predict(NULL, ws, out, x, 1), "'net'",
                   "predict net");
    expect_invalid(bp_net_predict(net, NULL, out, x, 1), "'ws'",
                   "predict ws");
    expect_invalid(bp_net_predict(net, ws, NULL, x, 1), "'out'",
                   "predict out");
    expect_invalid(bp_net_predict(net, ws, out, NULL, 1), "'x'",
                   "predict x");
    expect_invalid(bp_net_evaluate(net, ws, x, NULL, NULL, 1, &loss), "'y'",
                   "evaluate y");
    expect_invalid(bp_net_evaluate(net, ws, x, y, NULL, 1, NULL), "'loss'",
                   "evaluate loss");
    expect_invalid(bp_net_layer(NULL, 0, NULL), "'net'", "layer net");

    /* Accessors read a NULL network as empty; frees ignore NULL. */
    check(bp_net_n_params(NULL) == 0 && bp_net_params(NULL) == NULL &&
              bp_net_n_layers(NULL) == 0 && bp_net_n_outputs(NULL) == 0,
          "accessors of a NULL network");
    bp_net_free(NULL);
    bp_workspace_free(NULL);
    bp_workspace_free(ws);
    bp_net_free(net);
}

/* A diverging run stops with NOT_FINITE before the bad batch's update. */
static void test_not_finite(void)
{
    const bp_layer_spec layers[] = {
        {.units = 16, .activation = BP_ACTIVATION_IDENTITY},
        {.units = 1, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_sgd_config sgd = {10.0f, 0.0f, 0, 0.0f};
    bp_net *net = make_net(4, layers, 2, BP_LOSS_MSE, 14);
    float *x = random_floats(32 * 4, -1.0f, 1.0f);
    float *y = random_floats(32, 1e4f, 2e4f);
    float *saved = malloc((size_t)bp_net_n_params(net) * sizeof(float));
    bp_status st = BP_STATUS_OK;
    double loss = 0.0;
    int epoch = 0;

    for (; epoch < 100 && st == BP_STATUS_OK; epoch++) {
        memcpy(saved, bp_net_params_const(net),
               (size_t)bp_net_n_params(net) * sizeof(float));
        st = bp_net_train_epoch(net, &sgd, x, y, NULL, 32, 32, 0, 0,
                                (uint64_t)epoch, &loss);
    }
    printf("diverge   %-40s %s after %d epochs: %s\n",
           "mse, lr 10, targets ~1e4", bp_status_name(st), epoch,
           bp_last_error());
    expect_status(st, BP_STATUS_NOT_FINITE, "bp_net_train_epoch",
                  "a huge learning rate");
    check(!isfinite(loss), "mean_loss reports the non-finite loss");
    check(params_equal_to(net, saved),
          "the non-finite batch was not applied");
    expect_status(bp_net_gradient(net, x, y, NULL, 32, &loss),
                  BP_STATUS_NOT_FINITE, "bp_net_gradient",
                  "gradient of a diverged network");
    expect_status(bp_net_train_batch(net, &sgd, x, y, NULL, 32, &loss),
                  BP_STATUS_NOT_FINITE, "bp_net_train_batch",
                  "train_batch on a diverged network");
    check(params_equal_to(net, saved),
          "train_batch skips the update of a non-finite batch");
    bp_net_free(net);
    free(x);
    free(y);
    free(saved);
}

static void test_workspace_mismatch(void)
{
    const bp_layer_spec narrow[] = {
        {.units = 4, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    const bp_layer_spec wide[] = {
        {.units = 16, .activation = BP_ACTIVATION_TANH},
        {.units = 2, .activation = BP_ACTIVATION_IDENTITY}};
    bp_net *a = make_net(3, narrow, 2, BP_LOSS_MSE, 15);
    bp_net *b = make_net(3, wide, 2, BP_LOSS_MSE, 15);
    float x[3] = {1, 2, 3}, y[2] = {0, 0}, out[2];
    bp_workspace *ws;
    double loss;

    require(bp_workspace_create(&ws, a, 8), "bp_workspace_create");
    expect_invalid(bp_net_predict(b, ws, out, x, 1), "workspace",
                   "predict with a narrower network's workspace");
    expect_invalid(bp_net_evaluate(b, ws, x, y, NULL, 1, &loss),
                   "workspace",
                   "evaluate with a narrower network's workspace");
    bp_workspace_free(ws);
    bp_net_free(a);
    bp_net_free(b);
}

int main(void)
{
    printf("bprop %s, SIMD level %s, OpenMP %s\n", bp_version(),
           bp_simd_name(bp_simd_level()), bp_has_openmp() ? "yes" : "no");
    test_create_errors();
    test_layout();
    test_init();
    test_gradients();
    test_predict_reference();
    test_sgd_step();
    test_xor_batches();
    test_xor_epochs();
    test_epoch_determinism();
    test_epoch_mean_loss();
    test_thread_determinism();
    test_clone();
    test_chunks();
    test_bad_labels();
    test_null_pointers();
    test_not_finite();
    test_workspace_mismatch();

    printf(failures ? "%d checks FAILED\n" : "all checks passed\n",
           failures);
    return failures ? 1 : 0;
}
