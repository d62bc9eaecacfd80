/*
 * The calls that let a program split a training step across processes:
 * bp_net_grads_mut, bp_net_apply_gradients, bp_shuffle_order, and the
 * per-thread count of bp_set_local_num_threads. A data-parallel step is
 * simulated in one process (two shards, weighted, summed) and compared
 * with the one-batch step.
 *
 * Uses the public API only. Exits 0 when every check passes.
 */
#include "bprop.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

static void require(bp_status st, const char *what)
{
    if (st != BP_STATUS_OK) {
        printf("FAIL: %s: %s: %s\n", what, bp_status_name(st),
               bp_last_error());
        exit(1);
    }
}

static void expect_invalid(bp_status st, const char *needle, const char *what)
{
    char line[400];

    snprintf(line, sizeof line, "%s: status %s, message \"%s\" names \"%s\"",
             what, bp_status_name(st), bp_last_error(), needle);
    check(st == BP_STATUS_INVALID_ARGUMENT &&
              strstr(bp_last_error(), needle) != NULL,
          line);
}

enum { ROWS = 24, INPUTS = 6, CLASSES = 4, PARAMS_MAX = 512 };

static float x[ROWS * INPUTS];
static int32_t labels[ROWS];

/* Fixed inputs and labels, the same on every run. */
static void make_data(void)
{
    uint64_t s = 0x2545f4914f6cdd1dull;

    for (int i = 0; i < ROWS * INPUTS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((s >> 40) / 8388608.0 - 1.0);
    }
    for (int i = 0; i < ROWS; i++)
        labels[i] = (int32_t)((i * 7 + 3) % CLASSES);
}

static bp_net *make_net(void)
{
    bp_layer_spec layers[] = {
        {.units = 9, .activation = BP_ACTIVATION_TANH},
        {.units = CLASSES, .activation = BP_ACTIVATION_IDENTITY}};
    bp_net *net = NULL;

    require(bp_net_create(&net, INPUTS, layers, 2, BP_LOSS_CROSS_ENTROPY),
            "bp_net_create");
    require(bp_net_init(net, BP_INIT_AUTO, 7), "bp_net_init");
    return net;
}

static int same_params(const bp_net *a, const bp_net *b)
{
    return memcmp(bp_net_params_const(a), bp_net_params_const(b),
                  (size_t)bp_net_n_params(a) * sizeof(float)) == 0;
}

/* bp_net_gradient then bp_net_apply_gradients is bp_net_train_batch. */
static void test_apply_equals_train_batch(void)
{
    bp_sgd_config sgd = {.lr = 0.1f, .momentum = 0.9f, .nesterov = 1,
                         .l2 = 0.01f};
    bp_net *a = make_net(), *b = make_net();

    check(bp_net_grads_mut(a) == bp_net_grads(a), "grads_mut is the slab");
    for (int step = 0; step < 4; step++) {
        require(bp_net_gradient(a, x, NULL, labels, ROWS, NULL), "gradient");
        require(bp_net_apply_gradients(a, &sgd), "apply_gradients");
        require(bp_net_train_batch(b, &sgd, x, NULL, labels, ROWS, NULL),
                "train_batch");
    }
    check(same_params(a, b), "gradient + apply == train_batch, bitwise");
    bp_net_free(a);
    bp_net_free(b);
}

/*
 * Two shards of 10 and 14 rows, each gradient weighted by its share of
 * the batch and summed in the slab, give the one-batch gradient up to
 * float32 rounding; with the same update the parameters stay within it.
 */
static void test_two_shards_sum_to_the_batch(void)
{
    bp_sgd_config sgd = {.lr = 0.5f};
    bp_net *whole = make_net(), *split = make_net();
    int64_t n = bp_net_n_params(split), cut = 10;
    float first[PARAMS_MAX], full[PARAMS_MAX];
    float *g = bp_net_grads_mut(split);

    require(n <= PARAMS_MAX ? BP_STATUS_OK : BP_STATUS_INTERNAL, "size");
    require(bp_net_gradient(whole, x, NULL, labels, ROWS, NULL), "whole");
    memcpy(full, bp_net_grads(whole), (size_t)n * sizeof(float));

    require(bp_net_gradient(split, x, NULL, labels, cut, NULL), "shard 0");
    for (int64_t i = 0; i < n; i++)
        first[i] = g[i] * ((float)cut / ROWS);
    require(bp_net_gradient(split, x + cut * INPUTS, NULL, labels + cut,
                            ROWS - cut, NULL),
            "shard 1");
    double gap = 0.0, top = 0.0;
    for (int64_t i = 0; i < n; i++) {
        g[i] = first[i] + g[i] * ((float)(ROWS - cut) / ROWS);
        gap = fmax(gap, fabs((double)g[i] - full[i]));
        top = fmax(top, fabs((double)full[i]));
    }
    check(top > 0.0 && gap <= 1e-6 * top, "shard sum == batch gradient");

    require(bp_net_apply_gradients(split, &sgd), "apply split");
    require(bp_net_apply_gradients(whole, &sgd), "apply whole");
    const float *p = bp_net_params_const(split);
    const float *q = bp_net_params_const(whole);
    gap = 0.0;
    for (int64_t i = 0; i < n; i++)
        gap = fmax(gap, fabs((double)p[i] - q[i]));
    check(gap <= 1e-6, "parameters after the sharded step");
    bp_net_free(whole);
    bp_net_free(split);
}

/* bp_shuffle_order is the order bp_net_train_epoch visits. */
static void test_shuffle_order_is_the_epoch_order(void)
{
    bp_sgd_config sgd = {.lr = 0.05f, .momentum = 0.5f};
    bp_net *epoch = make_net(), *manual = make_net();
    int64_t order[ROWS];
    int seen[ROWS] = {0};
    float bx[5 * INPUTS];
    int32_t bl[5];

    require(bp_shuffle_order(order, ROWS, 99, 3), "shuffle_order");
    for (int i = 0; i < ROWS; i++)
        if (order[i] >= 0 && order[i] < ROWS)
            seen[order[i]]++;
    int once = 1;
    for (int i = 0; i < ROWS; i++)
        once = once && seen[i] == 1;
    check(once, "shuffle_order is a permutation");

    require(bp_net_train_epoch(epoch, &sgd, x, NULL, labels, ROWS, 5, 1, 99,
                               3, NULL),
            "train_epoch");
    for (int start = 0; start < ROWS; start += 5) {
        int rows = ROWS - start < 5 ? ROWS - start : 5;

        for (int r = 0; r < rows; r++) {
            memcpy(bx + r * INPUTS, x + order[start + r] * INPUTS,
                   INPUTS * sizeof(float));
            bl[r] = labels[order[start + r]];
        }
        require(bp_net_train_batch(manual, &sgd, bx, NULL, bl, rows, NULL),
                "train_batch");
    }
    check(same_params(epoch, manual), "epoch == batches in shuffle order");
    bp_net_free(epoch);
    bp_net_free(manual);
}

static void test_local_thread_count(void)
{
    int global = bp_get_num_threads();

    check(bp_get_local_num_threads() == 0, "no override at first");
    require(bp_set_local_num_threads(1), "set local 1");
    check(bp_get_local_num_threads() == 1, "override read back");
    check(bp_get_num_threads() == 1, "override wins");
    require(bp_set_local_num_threads(0), "remove override");
    check(bp_get_num_threads() == global, "global count again");
    expect_invalid(bp_set_local_num_threads(-2), "'n' is -2",
                   "negative local count");
}

static void test_errors(void)
{
    bp_sgd_config bad = {.lr = 0.0f};
    bp_sgd_config good = {.lr = 0.1f};
    bp_net *net = make_net();
    int64_t order[3];

    expect_invalid(bp_net_apply_gradients(NULL, &good), "net",
                   "apply to NULL");
    expect_invalid(bp_net_apply_gradients(net, NULL), "is NULL", "NULL sgd");
    expect_invalid(bp_net_apply_gradients(net, &bad),
                   "bp_net_apply_gradients", "lr 0");
    expect_invalid(bp_shuffle_order(NULL, 3, 0, 0), "order", "NULL order");
    expect_invalid(bp_shuffle_order(order, -1, 0, 0), "'n' is -1",
                   "negative n");
    check(bp_shuffle_order(NULL, 0, 0, 0) == BP_STATUS_OK, "empty order");
    check(bp_net_grads_mut(NULL) == NULL, "grads_mut(NULL)");
    bp_net_free(net);
}

int main(void)
{
    make_data();
    test_apply_equals_train_batch();
    test_two_shards_sum_to_the_batch();
    test_shuffle_order_is_the_epoch_order();
    test_local_thread_count();
    test_errors();
    printf(failures ? "%d checks FAILED\n" : "all checks passed\n",
           failures);
    return failures ? 1 : 0;
}
