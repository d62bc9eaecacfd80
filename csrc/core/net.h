/*
 * Internal layout of a network, shared by its construction (net.c),
 * training (train.c) and inference (predict.c).
 */
#ifndef BP_CORE_NET_H
#define BP_CORE_NET_H

#include "bprop.h"

/*
 * Scratch for training, owned by the network and grown only when a
 * larger batch or data set is first seen, so that a step on a batch size
 * seen before allocates nothing. L is the number of layers, U the sum
 * of their widths and W the widest.
 */
typedef struct bp_train_buffers {
    int64_t batch;    /* rows the batch buffers hold */
    int64_t n;        /* entries `order` holds */
    float *acts;      /* B x U: layer l's output B x O_l, layer by layer */
    float *delta[2];  /* B x W each: gradients passed between layers */
    float *x;         /* B x I: a gathered batch of inputs */
    float *y;         /* B x O: its targets (mse, binary cross-entropy) */
    int32_t *labels;  /* B: its labels (cross-entropy) */
    int64_t *order;   /* n: the epoch's shuffled row order */
} bp_train_buffers;

/* Frees the training buffers and zeroes their sizes. */
void bp_train_buffers_free(bp_train_buffers *t);

struct bp_net {
    int64_t n_inputs;
    int n_layers;
    bp_layer_spec *layers;  /* n_layers specs */
    bp_loss loss;
    int64_t *w_offset;      /* n_layers offsets of weights in the slabs */
    int64_t *b_offset;      /* n_layers offsets of biases in the slabs */
    int64_t n_params;
    int64_t sum_units;      /* U */
    int64_t max_units;      /* W */
    float *params;          /* n_params, 64-byte aligned */
    float *grads;           /* n_params, laid out like params */
    float *velocity;        /* n_params, laid out like params */
    bp_train_buffers train;
};

/* Inference scratch: two B x W buffers the layers write in turn. */
struct bp_workspace {
    int64_t max_batch;
    int64_t width;
    float *buf[2];
};

/* Inputs of layer i: the network's inputs or the previous layer's units. */
static inline int64_t bp_net_layer_inputs(const bp_net *net, int i)
{
    return i == 0 ? net->n_inputs : net->layers[i - 1].units;
}

/*
 * The activation layer i computes. With a fused loss the last layer
 * produces logits; the loss (or prediction) applies softmax or sigmoid.
 */
static inline bp_activation bp_net_layer_act(const bp_net *net, int i)
{
    if (i == net->n_layers - 1 && net->loss != BP_LOSS_MSE)
        return BP_ACTIVATION_IDENTITY;
    return net->layers[i].activation;
}

/*
 * Runs a loss kernel on the network's output.
 *   loss  scalar (OUT)    grad  B x O (OUT; NULL to skip)
 *   out   B x O  the last layer's output (logits with a fused loss) (IN)
 *   y     B x O  targets, or labels  B, as the loss needs  (IN)
 */
bp_status bp_net_loss_of(const bp_net *net, double *loss, float *grad,
                         const float *out, const float *y,
                         const int32_t *labels, int64_t batch);

/*
 * Checks the target argument the network's loss needs for n rows: not
 * NULL, and for cross-entropy every label in [0, O).
 */
bp_status bp_net_check_targets(const char *fn, const bp_net *net,
                               const float *y, const int32_t *labels,
                               int64_t n);

#endif
