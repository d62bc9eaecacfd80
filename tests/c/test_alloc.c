/*
 * Training and inference allocate nothing once warm: after a first epoch
 * has sized the network's buffers and the GEMM scratch, further epochs,
 * training steps and predictions leave the heap exactly as it was.
 *
 * Uses glibc's mallinfo2 to read the heap; elsewhere it only checks that
 * the calls succeed. Exits 0 when every check passes.
 */
#if defined(__linux__)
#define _GNU_SOURCE
#endif
#include "bprop.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#include <malloc.h>
#define HAVE_MALLINFO2 1
#endif

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

static size_t heap_in_use(void)
{
#if defined(HAVE_MALLINFO2)
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
#else
    return 0;
#endif
}

enum { N = 512, INPUTS = 64, CLASSES = 10, BATCH = 32 };

int main(void)
{
    bp_layer_spec layers[] = {
        {.units = 128, .activation = BP_ACTIVATION_RELU},
        {.units = 64, .activation = BP_ACTIVATION_TANH},
        {.units = CLASSES, .activation = BP_ACTIVATION_IDENTITY}};
    bp_sgd_config sgd = {.lr = 0.01f, .momentum = 0.9f, .nesterov = 1};
    float *x = malloc(sizeof(float) * N * INPUTS);
    float *out = malloc(sizeof(float) * N * CLASSES);
    int32_t *labels = malloc(sizeof(int32_t) * N);
    bp_net *net = NULL;
    bp_workspace *ws = NULL;
    double loss;

    for (int i = 0; i < N * INPUTS; i++)
        x[i] = (float)((i * 7919) % 200) / 100.0f - 1.0f;
    for (int i = 0; i < N; i++)
        labels[i] = i % CLASSES;

    check(bp_net_create(&net, INPUTS, layers, 3, BP_LOSS_CROSS_ENTROPY) ==
              BP_STATUS_OK, "create");
    check(bp_net_init(net, BP_INIT_AUTO, 3) == BP_STATUS_OK, "init");
    check(bp_workspace_create(&ws, net, 64) == BP_STATUS_OK, "workspace");

    /* Warm up: every buffer reaches its size, at every thread count. */
    for (int threads = 1; threads <= 2; threads++) {
        bp_set_num_threads(threads);
        check(bp_net_train_epoch(net, &sgd, x, NULL, labels, N, BATCH, 1, 1,
                                 0, &loss) == BP_STATUS_OK, "warm-up epoch");
        check(bp_net_predict(net, ws, out, x, N) == BP_STATUS_OK,
              "warm-up predict");
    }

    for (int threads = 1; threads <= 2; threads++) {
        bp_set_num_threads(threads);
        size_t before = heap_in_use();

        for (uint64_t epoch = 1; epoch <= 3; epoch++)
            check(bp_net_train_epoch(net, &sgd, x, NULL, labels, N, BATCH, 1,
                                     1, epoch, &loss) == BP_STATUS_OK,
                  "epoch");
        for (int step = 0; step < 20; step++)
            check(bp_net_train_batch(net, &sgd, x, NULL, labels, BATCH,
                                     &loss) == BP_STATUS_OK, "step");
        for (int call = 0; call < 20; call++)
            check(bp_net_predict(net, ws, out, x, N) == BP_STATUS_OK,
                  "predict");

        size_t after = heap_in_use();
        printf("%d thread(s): heap in use %zu bytes before, %zu after\n",
               threads, before, after);
        check(after == before, "training and predicting allocated memory");
    }

    bp_workspace_free(ws);
    bp_net_free(net);
    free(x);
    free(out);
    free(labels);
    if (failures == 0)
        printf("all checks passed\n");
    return failures == 0 ? 0 : 1;
}
