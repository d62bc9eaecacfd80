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
    float *weights;   /* B: its sample weights, when the epoch has them */
    float *pre;       /* B x U, laid out like acts, or NULL: the
                         pre-activations of layers whose derivative needs
                         them (bp_activation_needs_input) and the masks
                         of dropout layers; only those layers' blocks
                         are written */
    float *norm;      /* 2U: each batch norm layer's batch mean and
                         1 / sqrt(var + eps), at twice its acts offset
                         divided by B */
    int64_t *order;   /* n: the epoch's shuffled row order */
    /* A float64 network's buffers, laid out as their float twins above,
       which it leaves NULL. */
    double *acts_d;
    double *delta_d[2];
    double *x_d;
    double *y_d;
    double *weights_d;
    double *pre_d;
    double *norm_d;
} bp_train_buffers;

/* Frees the training buffers and zeroes their sizes. */
void bp_train_buffers_free(bp_train_buffers *t);

struct bp_net {
    int64_t n_inputs;
    int n_layers;
    bp_layer_spec *layers;  /* n_layers specs */
    bp_loss loss;
    bp_loss_config loss_cfg;  /* resolved options; class_weights points
                                 at the copy below */
    float *class_weights;     /* O, or NULL */
    int64_t *w_offset;      /* n_layers offsets of weights in the slabs */
    int64_t *b_offset;      /* n_layers offsets of biases in the slabs */
    int64_t *s_offset;      /* n_layers offsets in `running`, -1 for
                               layers other than batch norm */
    int64_t n_params;
    int64_t n_running;      /* floats in `running` */
    float *running;         /* batch norm's running means and variances:
                               per such layer, mean (O) then var (O) */
    uint64_t seed;          /* of the dropout masks */
    int64_t sum_units;      /* U */
    int64_t max_units;      /* W */
    float *params;          /* n_params, 64-byte aligned */
    float *grads;           /* n_params, laid out like params */
    float *velocity;        /* n_params, laid out like params */
    float *squares;         /* n_params or NULL: second optimizer slab */
    uint64_t step;          /* optimizer updates made */
    bp_train_buffers train;
    bp_dtype dtype;
    /* A float64 network's slabs, laid out as their float twins above,
       which it leaves NULL. */
    double *params_d;
    double *grads_d;
    double *velocity_d;
    double *squares_d;
    double *running_d;
};

/* Inference scratch: two B x W buffers the layers write in turn. */
struct bp_workspace {
    int64_t max_batch;
    int64_t width;
    bp_dtype dtype;
    float *buf[2];
    double *buf_d[2];  /* a float64 network's, instead of buf */
};

/*
 * Fails naming `fn` unless the network has dtype `want`; `twin` names
 * the call that takes the other dtype's data.
 */
bp_status bp_net_check_dtype(const char *fn, const bp_net *net,
                             bp_dtype want, const char *twin);

/* The bytes of one element of the network's dtype. */
static inline size_t bp_net_elem_size(const bp_net *net)
{
    return net->dtype == BP_DTYPE_F64 ? sizeof(double) : sizeof(float);
}

/*
 * The float64 twin of the training pass (train_f64.c), with arguments
 * checked by its callers.
 *   x  B x I   y  B x O or labels  B   weights  B or NULL  (IN)
 */
bp_status bp_net_backprop_f64(bp_net *net, const double *x, const double *y,
                              const int32_t *labels, const double *weights,
                              int64_t batch, double *loss);

/* One update of a float64 network from its gradient slab (update.c). */
void bp_net_update_f64(bp_net *net, const bp_optimizer *opt,
                       const bp_schedule *sched);

/* The first layer of a float64 network whose kept output is not finite. */
int bp_first_bad_layer_f64(const bp_net *net, int64_t batch);

/* Inputs of layer i: the network's inputs or the previous layer's units. */
static inline int64_t bp_net_layer_inputs(const bp_net *net, int i)
{
    return i == 0 ? net->n_inputs : net->layers[i - 1].units;
}

/*
 * The activation layer i computes. With a fused loss (cross-entropy,
 * binary cross-entropy) the last layer produces logits; the loss (or
 * prediction) applies softmax, log_softmax or sigmoid.
 */
static inline bp_activation bp_net_layer_act(const bp_net *net, int i)
{
    if (i == net->n_layers - 1 && (net->loss == BP_LOSS_CROSS_ENTROPY ||
                                   net->loss == BP_LOSS_BINARY_CROSS_ENTROPY))
        return BP_ACTIVATION_IDENTITY;
    return net->layers[i].activation;
}

/* Layer i's activation parameter, resolved when the network was made. */
static inline float bp_net_layer_param(const bp_net *net, int i)
{
    return net->layers[i].activation_param;
}

/* Layer i's weights: I x O for dense, O (gamma) for norms, none for dropout. */
static inline int64_t bp_net_layer_n_weights(const bp_net *net, int i)
{
    switch (net->layers[i].kind) {
    case BP_LAYER_KIND_DENSE:
        return bp_net_layer_inputs(net, i) * net->layers[i].units;
    case BP_LAYER_KIND_DROPOUT:
        return 0;
    default:
        return net->layers[i].units;
    }
}

/*
 * Layer i's biases in `slab` (parameters or gradients), or NULL for a
 * layer without biases.
 *
 * NOTE: such a layer keeps its place for biases in every slab, held at
 * zero and never read or trained, so that the layout depends on the
 * layer sizes alone: code that walks the slabs layer by layer (updates,
 * all-reduces, model files) treats every layer alike.
 */
static inline float *bp_net_layer_bias(const bp_net *net, float *slab, int i)
{
    return net->layers[i].no_bias ? NULL : slab + net->b_offset[i];
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
 * bp_net_loss_of with per-sample weights.
 *   weights  B, checked by the caller  (IN; NULL for all 1)
 */
bp_status bp_net_loss_weighted(const bp_net *net, double *loss, float *grad,
                               const float *out, const float *y,
                               const int32_t *labels, const float *weights,
                               int64_t batch);

/* Nonzero when some layer keeps its pre-activations for training. */
int bp_net_keeps_pre(const bp_net *net);

/*
 * Checks the target argument the network's loss needs for n rows: not
 * NULL, and for cross-entropy every label in [0, O); cross-entropy
 * takes float probabilities in y when labels is NULL.
 */
bp_status bp_net_check_targets(const char *fn, const bp_net *net,
                               const void *y, const int32_t *labels,
                               int64_t n);

/*
 * Checks sample weights of `dtype` (floats or doubles): finite and >= 0;
 * NULL passes.
 */
bp_status bp_net_check_weights(const char *fn, bp_dtype dtype,
                               const void *weights, int64_t n);

/*
 * Allocates the zeroed second optimizer slab if it does not exist yet;
 * `fn` names the caller in the message.
 */
bp_status bp_net_reserve_squares(const char *fn, bp_net *net);

/*
 * Checks an optimizer and a schedule (NULL: constant) and allocates the
 * state the optimizer needs, before any update (update.c).
 */
bp_status bp_net_prepare_update(const char *fn, bp_net *net,
                                const bp_optimizer *opt,
                                const bp_schedule *sched);

/*
 * One update from the gradient slab, with arguments that
 * bp_net_prepare_update accepted; counts the step.
 */
void bp_net_update(bp_net *net, const bp_optimizer *opt,
                   const bp_schedule *sched);

#endif
