/*
 * bprop.h - train multi-layer perceptrons by backpropagation on the CPU.
 *
 * The library has two tiers.
 *
 * Kernels (bp_sgemm, bp_dense_*, bp_activation_*, bp_loss_*, bp_sgd_*,
 * bp_optimizer_*, bp_schedule_*) work on buffers the caller owns, with
 * explicit sizes. They keep no state between calls and are safe to call
 * from any thread. Matrices are row-major. Buffer shapes are given in
 * named dimensions:
 *   B  rows in a batch          I  inputs of a layer
 *   O  outputs of a layer       K  classes
 *
 * Objects live behind opaque handles with create/free pairs:
 *
 *   bp_layer_spec layers[] = {
 *       {.units = 64, .activation = BP_ACTIVATION_RELU},
 *       {.units = 10, .activation = BP_ACTIVATION_IDENTITY}};
 *   bp_net *net;
 *   bp_net_create(&net, 64, layers, 2, BP_LOSS_CROSS_ENTROPY);
 *   bp_net_init(net, BP_INIT_AUTO, seed);
 *   bp_sgd_config sgd = {0.05f, 0.9f, 0, 1e-4f};
 *   for (epoch = 0; epoch < 20; epoch++)
 *       bp_net_train_epoch(net, &sgd, x, NULL, labels, n, 32, 1, seed,
 *                          epoch, &loss);
 *   bp_net_save(net, "model.bpm", NULL);
 *   bp_net_free(net);
 *
 *   bp_net_load(&net, "model.bpm", NULL);
 *   bp_workspace *ws;
 *   bp_workspace_create(&ws, net, 256);
 *   bp_net_predict(net, ws, out, x, n);
 *   bp_workspace_free(ws);
 *   bp_net_free(net);
 *
 * Every call that can fail returns a bp_status; bp_last_error() then says
 * what went wrong. Nothing in the library exits or aborts on a caller's
 * mistake.
 */
#ifndef BPROP_H
#define BPROP_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(BPROP_STATIC)
#define BP_API
#elif defined(_WIN32)
#if defined(BPROP_BUILDING)
#define BP_API __declspec(dllexport)
#else
#define BP_API __declspec(dllimport)
#endif
#else
#define BP_API __attribute__((visibility("default")))
#endif

#define BPROP_VERSION_MAJOR 0
#define BPROP_VERSION_MINOR 1
#define BPROP_VERSION_PATCH 0

/* The library's version as "MAJOR.MINOR.PATCH"; a static string. */
BP_API const char *bp_version(void);

/* ---------------------------------------------------------------------
 * Errors
 * ------------------------------------------------------------------- */

typedef enum bp_status {
    BP_STATUS_OK = 0,
    BP_STATUS_INVALID_ARGUMENT = 1, /* a size, pointer or option is wrong */
    BP_STATUS_OUT_OF_MEMORY = 2,    /* an allocation failed */
    BP_STATUS_NOT_FINITE = 3,       /* a loss or value became NaN or inf */
    BP_STATUS_UNSUPPORTED = 4,      /* e.g. a SIMD level this CPU lacks */
    BP_STATUS_INTERNAL = 5,         /* a bug in bprop */
    BP_STATUS_IO = 6,               /* a file cannot be read or written */
    BP_STATUS_FORMAT = 7            /* a model file is corrupt or too new */
} bp_status;

/*
 * The message of the last failed call on this thread: it names the
 * function, the argument and the value that was wrong. The string is
 * owned by the library and stays valid until the next failing call on
 * the same thread. Never NULL.
 */
BP_API const char *bp_last_error(void);

/* A static name for a status, such as "invalid argument". */
BP_API const char *bp_status_name(bp_status status);

/* ---------------------------------------------------------------------
 * Run-time configuration: SIMD level and threads
 * ------------------------------------------------------------------- */

typedef enum bp_simd {
    BP_SIMD_GENERIC = 0, /* portable C, always available */
    BP_SIMD_AVX2 = 1,    /* AVX2 with FMA */
    BP_SIMD_AVX512 = 2   /* AVX-512 F */
} bp_simd;

/*
 * The SIMD level the kernels use. It is chosen once, on first use, as
 * the best level the CPU and OS support, lowered to the level named by
 * the environment variable BPROP_SIMD (generic, avx2, avx512) if set.
 */
BP_API bp_simd bp_simd_level(void);

/* The best level this CPU supports, ignoring BPROP_SIMD. */
BP_API bp_simd bp_simd_best(void);

/*
 * Switches the kernels to `level`. Fails with BP_STATUS_UNSUPPORTED if
 * the CPU lacks it. Not thread-safe: call it while no kernel runs.
 */
BP_API bp_status bp_simd_set(bp_simd level);

/* A static name for a level: "generic", "avx2" or "avx512". */
BP_API const char *bp_simd_name(bp_simd level);

/*
 * Threads used by the kernels called from this thread: its own count
 * (bp_set_local_num_threads) if it has one, else the last count set by
 * bp_set_num_threads, else OpenMP's default (1 when built without
 * OpenMP). Always 1 in a child process created by fork(), whatever is
 * set there: OpenMP's threads do not survive fork().
 */
BP_API int bp_get_num_threads(void);

/*
 * Sets the thread count for later calls from any thread; n < 1 is an
 * error.
 */
BP_API bp_status bp_set_num_threads(int n);

/*
 * Sets the thread count for later calls made from the calling thread
 * only, overriding bp_set_num_threads there while other threads keep
 * theirs: several threads can each train a network, one thread each.
 * n == 0 removes the override; n < 0 is an error. Results do not depend
 * on it, as they do not depend on any thread count.
 */
BP_API bp_status bp_set_local_num_threads(int n);

/* The calling thread's own count, or 0 when it has none. */
BP_API int bp_get_local_num_threads(void);

/* Nonzero when the library was built with OpenMP. */
BP_API int bp_has_openmp(void);

/* ---------------------------------------------------------------------
 * Kernels: matrix multiply
 * ------------------------------------------------------------------- */

typedef enum bp_trans {
    BP_TRANS_NO = 0, /* use the matrix as stored */
    BP_TRANS_YES = 1 /* use its transpose */
} bp_trans;

/*
 * C = alpha * op(A) @ op(B) + beta * C, all row-major.
 *   c  M x N, leading dimension ldc >= N        (OUT, and IN if beta != 0)
 *   a  op(A) is M x K; A is M x K (lda >= K) or, transposed, K x M
 *      (lda >= M)                               (IN)
 *   b  op(B) is K x N; B is K x N (ldb >= N) or, transposed, N x K
 *      (ldb >= K)                               (IN)
 * With beta == 0, C is not read (NaN in C does not propagate). Any of M,
 * N, K may be 0. The result is bitwise identical for any thread count.
 * Packing buffers are kept per thread and reused across calls.
 */
BP_API bp_status bp_sgemm(float *c, int64_t ldc, const float *a, int64_t lda,
                          const float *b, int64_t ldb, bp_trans trans_a,
                          bp_trans trans_b, float alpha, float beta, int64_t m,
                          int64_t n, int64_t k);

/*
 * bp_sgemm in double: a blocked, portable-C kernel with the same shapes
 * and rules (row-major, beta == 0 does not read C, bitwise identical
 * for any thread count). Float64 networks train with it.
 */
BP_API bp_status bp_dgemm(double *c, int64_t ldc, const double *a,
                          int64_t lda, const double *b, int64_t ldb,
                          bp_trans trans_a, bp_trans trans_b, double alpha,
                          double beta, int64_t m, int64_t n, int64_t k);

/* ---------------------------------------------------------------------
 * Kernels: activations
 * ------------------------------------------------------------------- */

/*
 * Activations. Two take a parameter (see bp_activation_forward_ex):
 * leaky_relu its slope for x < 0, elu its alpha. The per-row ones,
 * softmax and log_softmax, are for output layers only.
 */
typedef enum bp_activation {
    BP_ACTIVATION_IDENTITY = 0,
    BP_ACTIVATION_RELU = 1,
    BP_ACTIVATION_SIGMOID = 2,
    BP_ACTIVATION_TANH = 3,
    BP_ACTIVATION_SOFTMAX = 4,     /* over each row; output layers only */
    BP_ACTIVATION_LEAKY_RELU = 5,  /* x, or slope * x for x < 0 */
    BP_ACTIVATION_ELU = 6,         /* x, or alpha * (e^x - 1) for x < 0 */
    BP_ACTIVATION_GELU = 7,        /* x * Phi(x), Phi the normal CDF (erf) */
    BP_ACTIVATION_GELU_TANH = 8,   /* GELU's tanh approximation */
    BP_ACTIVATION_SILU = 9,        /* x * sigmoid(x) */
    BP_ACTIVATION_SOFTPLUS = 10,   /* log(1 + e^x) */
    BP_ACTIVATION_LOG_SOFTMAX = 11 /* log of softmax, per row; output only */
} bp_activation;

/* A static name for an activation ("relu", ...), or NULL if unknown. */
BP_API const char *bp_activation_name(bp_activation act);

/*
 * Nonzero when act's derivative needs its input x and not only its output
 * y: elu, gelu, gelu_tanh, silu and softplus. Their backward passes take
 * the pre-activation (bp_activation_backward_ex, bp_dense_backward_ex),
 * which the training loop keeps for these layers only.
 */
BP_API int bp_activation_needs_input(bp_activation act);

/*
 * The parameter act uses when given `param`: 0 selects the default
 * (slope 0.01 for leaky_relu, alpha 1 for elu), activations without a
 * parameter give 0. NaN when `param` is invalid (not finite, or < 0).
 */
BP_API float bp_activation_param(bp_activation act, float param);

/*
 * y = act(x), element-wise or, for softmax, per row.
 *   y  B x O  (OUT; may alias x)     x  B x O  (IN)
 */
BP_API bp_status bp_activation_forward(float *y, const float *x,
                                       bp_activation act, int64_t rows,
                                       int64_t cols);

/*
 * dx = dy * act'(x), written in terms of the forward output y.
 *   dx B x O  (OUT; may alias dy)    dy B x O  (IN)
 *   y  B x O  forward output (IN)
 * For softmax this is the full Jacobian product per row:
 * dx = y * (dy - sum(dy * y)). Activations with a parameter use its
 * default; those that need their input (bp_activation_needs_input) fail
 * here: use bp_activation_backward_ex.
 */
BP_API bp_status bp_activation_backward(float *dx, const float *dy,
                                        const float *y, bp_activation act,
                                        int64_t rows, int64_t cols);

/*
 * bp_activation_forward with the activation's parameter (the slope of
 * leaky_relu, the alpha of elu; 0 selects the default, see
 * bp_activation_param; ignored by the others).
 *   y  B x O  (OUT; may alias x)     x  B x O  (IN)
 * Finite for every finite x: no exponential is taken of a positive
 * argument that could overflow.
 */
BP_API bp_status bp_activation_forward_ex(float *y, const float *x,
                                          bp_activation act, float param,
                                          int64_t rows, int64_t cols);

/*
 * dx = dy * act'(x) from the forward output y and, for activations that
 * need it, the input x.
 *   dx B x O  (OUT; may alias dy)    dy B x O  (IN)
 *   y  B x O  forward output (IN)
 *   x  B x O  forward input (IN; may be NULL unless
 *             bp_activation_needs_input(act))
 * For log_softmax, per row: dx = dy - exp(y) * sum(dy).
 */
BP_API bp_status bp_activation_backward_ex(float *dx, const float *dy,
                                           const float *y, const float *x,
                                           bp_activation act, float param,
                                           int64_t rows, int64_t cols);

/* ---------------------------------------------------------------------
 * Kernels: dense layer
 * ------------------------------------------------------------------- */

/*
 * y = act(x @ w + b), with bias and element-wise activation applied
 * while each output tile is still in registers.
 *   y  B x O  (OUT)       x  B x I  (IN)
 *   w  I x O  (IN)        b  O, or NULL for no bias  (IN)
 */
BP_API bp_status bp_dense_forward(float *y, const float *x, const float *w,
                                  const float *b, bp_activation act,
                                  int64_t batch, int64_t n_in, int64_t n_out);

/*
 * Backward pass of bp_dense_forward. Gradients are overwritten, not
 * accumulated.
 *   dx  B x I  (OUT; NULL to skip, as for a first layer)
 *   dw  I x O  (OUT)      db  O  (OUT; NULL to skip)
 *   dz  B x O  (OUT) scratch: the gradient before the activation; it
 *              may alias dy, which is then overwritten
 *   dy  B x O  (IN) gradient of the loss with respect to y
 *   x   B x I  (IN)       w  I x O  (IN)
 *   y   B x O  (IN) the forward output
 */
BP_API bp_status bp_dense_backward(float *dx, float *dw, float *db, float *dz,
                                   const float *dy, const float *x,
                                   const float *w, const float *y,
                                   bp_activation act, int64_t batch,
                                   int64_t n_in, int64_t n_out);

/*
 * bp_dense_forward with the activation's parameter (as in
 * bp_activation_forward_ex), also writing the pre-activation when asked.
 *   y  B x O  (OUT)       z  B x O  x @ w + b  (OUT; NULL to skip)
 *   x  B x I  (IN)        w  I x O  (IN)
 *   b  O, or NULL for no bias  (IN)
 * With z, the bias lands in z in the GEMM's epilogue and the activation
 * is a second pass from z to y.
 */
BP_API bp_status bp_dense_forward_ex(float *y, float *z, const float *x,
                                     const float *w, const float *b,
                                     bp_activation act, float param,
                                     int64_t batch, int64_t n_in,
                                     int64_t n_out);

/*
 * bp_dense_backward with the activation's parameter and, for
 * activations that need it (bp_activation_needs_input), the
 * pre-activation z that bp_dense_forward_ex wrote.
 *   z  B x O  (IN; may be NULL unless the activation needs it)
 * The other buffers are as in bp_dense_backward.
 */
BP_API bp_status bp_dense_backward_ex(float *dx, float *dw, float *db,
                                      float *dz, const float *dy,
                                      const float *x, const float *w,
                                      const float *y, const float *z,
                                      bp_activation act, float param,
                                      int64_t batch, int64_t n_in,
                                      int64_t n_out);

/* ---------------------------------------------------------------------
 * Kernels: losses
 * ------------------------------------------------------------------- */

typedef enum bp_loss {
    BP_LOSS_MSE = 0,                  /* mean squared error */
    BP_LOSS_CROSS_ENTROPY = 1,        /* softmax + cross-entropy */
    BP_LOSS_BINARY_CROSS_ENTROPY = 2, /* sigmoid + cross-entropy, 0/1 */
    BP_LOSS_MAE = 3,                  /* mean absolute error */
    BP_LOSS_HUBER = 4,                /* squared near 0, absolute beyond */
    BP_LOSS_POISSON = 5               /* Poisson, from the log of the rate */
} bp_loss;

/* A static name for a loss ("mse", ...), or NULL if unknown. */
BP_API const char *bp_loss_name(bp_loss loss);

/*
 * Mean squared error over all B x O elements: mean((p - t)^2).
 *   loss  scalar (OUT; NULL to skip)
 *   grad  B x O  d loss / d p (OUT; NULL to skip)
 *   pred, target  B x O  (IN)
 * Sums are accumulated in double.
 */
BP_API bp_status bp_loss_mse(double *loss, float *grad, const float *pred,
                             const float *target, int64_t rows, int64_t cols);

/*
 * Softmax cross-entropy from logits, averaged over rows, computed with
 * log-sum-exp so that any finite logits give a finite loss.
 *   loss    scalar (OUT; NULL to skip)
 *   grad    B x K  d loss / d logits = (softmax - onehot) / B
 *           (OUT; NULL to skip)
 *   logits  B x K  (IN)
 *   labels  B, each in [0, K)  (IN)
 */
BP_API bp_status bp_loss_cross_entropy(double *loss, float *grad,
                                       const float *logits,
                                       const int32_t *labels, int64_t rows,
                                       int64_t classes);

/*
 * Binary cross-entropy from logits (sigmoid fused), averaged over all
 * B x O elements: max(z, 0) - z t + log(1 + exp(-|z|)).
 *   loss    scalar (OUT; NULL to skip)
 *   grad    B x O  (sigmoid(z) - t) / (B O)  (OUT; NULL to skip)
 *   logits  B x O  (IN)      target  B x O in [0, 1]  (IN)
 */
BP_API bp_status bp_loss_binary_cross_entropy(double *loss, float *grad,
                                              const float *logits,
                                              const float *target,
                                              int64_t rows, int64_t cols);

/*
 * A loss and its options. A zeroed struct with only `kind` set is the
 * plain loss: every 0 below selects the default.
 */
typedef struct bp_loss_config {
    bp_loss kind;
    float delta;           /* huber: where squared turns absolute, > 0;
                              0 selects 1 */
    float label_smoothing; /* cross-entropy: in [0, 1); 0 for none */
    float pos_weight;      /* binary cross-entropy: weight of the positive
                              term, > 0; 0 selects 1 */
    const float *class_weights; /* cross-entropy: K weights, finite and
                                   >= 0, owned by the caller; NULL for
                                   all 1 */
} bp_loss_config;

/*
 * Any loss with its options and optional per-sample weights. Per
 * element, with d = pred - target, z = pred and t = target:
 *   mse      d^2
 *   mae      |d|
 *   huber    d^2 / 2 for |d| <= delta, else delta * (|d| - delta / 2)
 *   poisson  e^z - t z  (z the log of the rate; log(t!) is left out)
 *   binary cross-entropy (logits, sigmoid fused)
 *            pos_weight * t * softplus(-z) + (1 - t) * softplus(z)
 * and per row, for cross-entropy from logits (softmax fused):
 *   sum_k c_k q_k (logsumexp(z) - z_k)
 * where c are the class weights and q = (1 - s) p + s / K the target
 * distribution p (one-hot of the label, or the row of `target`)
 * smoothed by s = label_smoothing.
 * Row i's loss is multiplied by weights[i]. The mean divides by the
 * number of rows (cross-entropy) or of elements (the others), never by
 * the sum of the weights, so batch losses times their rows add up to
 * the loss of the whole set.
 *   loss     scalar (OUT; NULL to skip)
 *   grad     B x O  d loss / d pred  (OUT; NULL to skip)
 *   pred     B x O  values, logits or log-rates  (IN)
 *   target   B x O  values; for binary cross-entropy in [0, 1]; for
 *            poisson counts >= 0; for cross-entropy probabilities with
 *            rows summing to 1, read only when labels is NULL  (IN)
 *   labels   B  class indices in [0, O), cross-entropy only
 *            (IN; NULL to use target)
 *   weights  B  per-sample weights, finite and >= 0 (IN; NULL for 1)
 * Sums are accumulated in double. Fails on options that are out of
 * range, naming the field.
 */
BP_API bp_status bp_loss_compute(double *loss, float *grad, const float *pred,
                                 const float *target, const int32_t *labels,
                                 const float *weights,
                                 const bp_loss_config *cfg, int64_t rows,
                                 int64_t cols);

/* ---------------------------------------------------------------------
 * Kernels: optimizer
 * ------------------------------------------------------------------- */

/*
 * Stochastic gradient descent. With g = grad + l2 * w:
 *   momentum == 0:  w -= lr * g
 *   otherwise:      v = momentum * v + g
 *                   w -= lr * (nesterov ? g + momentum * v : v)
 */
typedef struct bp_sgd_config {
    float lr;       /* learning rate, > 0 */
    float momentum; /* in [0, 1) */
    int nesterov;   /* nonzero for Nesterov momentum (needs momentum > 0) */
    float l2;       /* L2 penalty on weights (not biases), >= 0 */
} bp_sgd_config;

/*
 * One SGD step on n parameters.
 *   w         n  (IN/OUT)
 *   velocity  n  (IN/OUT; may be NULL when momentum == 0)
 *   grad      n  (IN)
 * `l2` overrides cfg->l2, so a caller can exempt biases.
 */
BP_API bp_status bp_sgd_update(float *w, float *velocity, const float *grad,
                               const bp_sgd_config *cfg, float l2, int64_t n);

/* The update rules of bp_optimizer. */
typedef enum bp_optimizer_kind {
    BP_OPTIMIZER_SGD = 0,     /* as bp_sgd_config, with weight_decay as l2 */
    BP_OPTIMIZER_ADAM = 1,    /* Adam, L2 penalty added to the gradient */
    BP_OPTIMIZER_ADAMW = 2,   /* Adam with decoupled weight decay */
    BP_OPTIMIZER_RMSPROP = 3, /* RMSprop, optionally with momentum */
    BP_OPTIMIZER_ADAGRAD = 4  /* Adagrad */
} bp_optimizer_kind;

/*
 * Settings of any optimizer; fields a kind does not use are ignored.
 * bp_optimizer_defaults fills them in. With t the 1-based update count,
 * lr the scheduled rate, wd = weight_decay and g the gradient after
 * clipping (and, except for AdamW, plus wd * w):
 *   SGD      v = momentum v + g;  w -= lr (nesterov ? g + momentum v : v)
 *            (w -= lr g without momentum)
 *   Adam     m = beta1 m + (1 - beta1) g;  s = beta2 s + (1 - beta2) g^2
 *            w -= lr / (1 - beta1^t) m / (sqrt(s / (1 - beta2^t)) + eps)
 *   AdamW    w *= 1 - lr wd, then Adam on the raw gradient
 *   RMSprop  s = rho s + (1 - rho) g^2;  d = g / (sqrt(s) + eps)
 *            v = momentum v + d; w -= lr v   (w -= lr d without momentum)
 *   Adagrad  s += g^2;  w -= lr g / (sqrt(s + initial_accumulator) + eps)
 * v and m live in the first state slab, s in the second (see
 * bp_net_velocity and bp_net_optimizer_state).
 */
typedef struct bp_optimizer {
    bp_optimizer_kind kind;
    float lr;           /* base learning rate, finite and > 0 */
    float momentum;     /* SGD and RMSprop, in [0, 1) */
    int nesterov;       /* SGD: nonzero for Nesterov (needs momentum > 0) */
    float beta1;        /* Adam(W): first-moment decay, in [0, 1) */
    float beta2;        /* Adam(W): second-moment decay, in [0, 1) */
    float eps;          /* Adam(W), RMSprop, Adagrad: finite and > 0 */
    float rho;          /* RMSprop: decay of the squared average, [0, 1) */
    float weight_decay; /* L2 penalty (decoupled for AdamW), >= 0 */
    int decay_biases;   /* nonzero: weight decay applies to biases too */
    float clip_norm;    /* scale gradients to this global norm; 0: off */
    float clip_value;   /* clamp each gradient to [-v, v]; 0: off */
    float initial_accumulator; /* Adagrad: start of s, >= 0 */
} bp_optimizer;

/*
 * Fills *opt with the defaults of `kind`: lr 0.01 for SGD and Adagrad,
 * 0.001 for the others; beta1 0.9, beta2 0.999, rho 0.9, eps 1e-8
 * (Adagrad 1e-10); weight decay 0 (AdamW 0.01); no momentum, clipping
 * or initial accumulator.
 */
BP_API bp_status bp_optimizer_defaults(bp_optimizer *opt,
                                       bp_optimizer_kind kind);

/* A static name for a kind ("sgd", "adam", ...), or NULL if unknown. */
BP_API const char *bp_optimizer_name(bp_optimizer_kind kind);

/*
 * One update of n parameters by `opt` (clipping by value included, by
 * norm not: that needs the whole gradient; see bp_net_apply_update).
 *   w     n  (IN/OUT)
 *   m     n  first state slab (IN/OUT; NULL when the kind and settings
 *            use none: SGD and RMSprop without momentum, Adagrad)
 *   s     n  second state slab (IN/OUT; NULL for SGD)
 *   grad  n  (IN)
 * `lr` is this update's rate (opt->lr or a schedule's value) and
 * `weight_decay` overrides opt->weight_decay, so a caller can exempt
 * biases. `step` is the 1-based number of this update (Adam's bias
 * correction). State slabs start at zero.
 */
BP_API bp_status bp_optimizer_update(float *w, float *m, float *s,
                                     const float *grad,
                                     const bp_optimizer *opt, float lr,
                                     float weight_decay, uint64_t step,
                                     int64_t n);

/* ---------------------------------------------------------------------
 * Kernels: learning-rate schedules
 * ------------------------------------------------------------------- */

typedef enum bp_schedule_kind {
    BP_SCHEDULE_CONSTANT = 0,    /* lr */
    BP_SCHEDULE_STEP = 1,        /* lr gamma^floor(k / step_size) */
    BP_SCHEDULE_EXPONENTIAL = 2, /* lr gamma^k */
    BP_SCHEDULE_INVERSE = 3,     /* lr / (1 + gamma k)^power */
    BP_SCHEDULE_COSINE = 4,      /* linear warm-up, then cosine decay */
    BP_SCHEDULE_PLATEAU = 5      /* lr gamma^reductions, see below */
} bp_schedule_kind;

/*
 * A learning-rate schedule: the rate of the update that follows `step`
 * earlier updates, as a function of k = floor(step / interval). A zeroed
 * struct is the constant schedule.
 *
 * COSINE: for k < warmup, lr (k + 1) / warmup; then, with
 * p = (k - warmup) / (period - warmup),
 * min_lr + (lr - min_lr) (1 + cos(pi p)) / 2; from k = period on, min_lr.
 *
 * PLATEAU is driven by bp_schedule_observe between epochs: once a metric
 * to minimise has not improved on its best by more than threshold |best|
 * for more than `patience` observations, `reductions` grows by one and
 * `cooldown` observations are skipped. The rate is lr gamma^reductions
 * but never below min_lr (nor above lr).
 */
typedef struct bp_schedule {
    bp_schedule_kind kind;
    int64_t interval;  /* updates per k; 0 or 1: every update */
    int64_t step_size; /* STEP: k between decays, >= 1 */
    float gamma;       /* STEP, EXPONENTIAL: factor in (0, 1]; PLATEAU:
                          in (0, 1); INVERSE: rate >= 0 */
    float power;       /* INVERSE: exponent >= 0 */
    int64_t warmup;    /* COSINE: k of linear warm-up, >= 0 */
    int64_t period;    /* COSINE: k of warm-up and decay, > warmup */
    float min_lr;      /* COSINE, PLATEAU: the lowest rate, >= 0 */
    float threshold;   /* PLATEAU: relative improvement that counts */
    int64_t patience;  /* PLATEAU: observations without improvement */
    int64_t cooldown;  /* PLATEAU: observations ignored after a cut */
    /* PLATEAU's state, kept by bp_schedule_observe; zero to start. */
    int64_t reductions;    /* cuts so far */
    int64_t wait;          /* observations since the last improvement */
    int64_t cooldown_left; /* observations still ignored */
    int has_best;          /* nonzero once `best` holds a metric */
    double best;           /* the lowest metric seen */
} bp_schedule;

/* A static name for a kind ("constant", "cosine", ...), or NULL. */
BP_API const char *bp_schedule_name(bp_schedule_kind kind);

/*
 * The rate of the update that follows `step` earlier updates, for a
 * base rate `lr`. Checks the schedule; sched == NULL means constant.
 */
BP_API bp_status bp_schedule_lr(const bp_schedule *sched, float lr,
                                uint64_t step, float *out);

/*
 * Feeds one value of the monitored metric (lower is better) to a
 * PLATEAU schedule, updating its state; other kinds ignore it. The
 * metric must be finite.
 */
BP_API bp_status bp_schedule_observe(bp_schedule *sched, double metric);

/* ---------------------------------------------------------------------
 * Networks
 * ------------------------------------------------------------------- */

/*
 * What a layer computes. A layer's output is act(f(x)) with f:
 * - DENSE: x @ W + b, with W inputs x units and b units.
 * - DROPOUT: in training, each input is zeroed with probability `rate`
 *   and the others are scaled by 1 / (1 - rate) (inverted dropout); at
 *   inference, x itself. The mask is drawn from the network's seed, the
 *   layer and the optimizer step, so it depends on nothing else. No
 *   parameters; its activation must be identity.
 * - BATCH_NORM: each input column normalised, gamma * (x - mean) /
 *   sqrt(var + eps) + beta, with the batch's mean and (biased) variance
 *   in training and running averages of them at inference. A training
 *   batch moves the running mean and the running unbiased variance a
 *   fraction `momentum` towards the batch's. Training needs batches of
 *   two rows or more.
 * - LAYER_NORM: the same with each row's mean and variance, in training
 *   and at inference alike.
 * The layers after the first dense kind have as many units as inputs
 * (give 0 or that number). Their parameters take the places of a dense
 * layer's: gamma (units) where weights go, beta (units) where biases go.
 */
typedef enum bp_layer_kind {
    BP_LAYER_KIND_DENSE = 0,
    BP_LAYER_KIND_DROPOUT = 1,
    BP_LAYER_KIND_BATCH_NORM = 2,
    BP_LAYER_KIND_LAYER_NORM = 3
} bp_layer_kind;

/* A static name for a layer kind ("dense", "dropout", ...), or NULL. */
BP_API const char *bp_layer_kind_name(bp_layer_kind kind);

/*
 * One layer of a network. The fields after `activation` were added
 * later, and a zero in them keeps the earlier behaviour: a spec that
 * sets only units and activation is a dense layer with the default
 * parameter and biases. Initialise specs with designated initializers,
 * {.units = 64, .activation = BP_ACTIVATION_RELU}: fields may be
 * appended again, and a positional initializer that leaves some out
 * draws a warning (-Wmissing-field-initializers, in -Wextra).
 */
typedef struct bp_layer_spec {
    int64_t units;            /* outputs of the layer, >= 1; 0 for a
                                 layer that keeps its input's width */
    bp_activation activation; /* softmax, log_softmax: last layer only */
    float activation_param;   /* leaky_relu's slope, elu's alpha; 0 selects
                                 the default (bp_activation_param) */
    int no_bias;              /* nonzero: the layer has no biases (dense)
                                 or no beta (normalisation) */
    bp_layer_kind kind;       /* 0: dense */
    float rate;               /* dropout: the fraction zeroed, [0, 1) */
    float eps;                /* normalisation: added to the variance;
                                 0 selects 1e-5 */
    float momentum;           /* batch norm: the running averages' step,
                                 (0, 1]; 0 selects 0.1 */
} bp_layer_spec;

/*
 * Weight initialisers. fan_in is a layer's inputs, fan_out its units.
 * The uniform ones draw from [-limit, limit), the normal ones from a
 * normal distribution with mean 0 (not truncated).
 */
typedef enum bp_init {
    BP_INIT_AUTO = 0,           /* He uniform for the relu family (relu,
                                   leaky_relu, elu, gelu, silu, softplus),
                                   Glorot uniform for the others */
    BP_INIT_HE = 1,             /* uniform, limit sqrt(6 / fan_in) */
    BP_INIT_GLOROT = 2,         /* uniform, limit sqrt(6 / (fan_in +
                                   fan_out)) */
    BP_INIT_HE_NORMAL = 3,      /* normal, std sqrt(2 / fan_in) */
    BP_INIT_GLOROT_NORMAL = 4,  /* normal, std sqrt(2 / (fan_in +
                                   fan_out)) */
    BP_INIT_LECUN_UNIFORM = 5,  /* uniform, limit sqrt(3 / fan_in) */
    BP_INIT_LECUN_NORMAL = 6    /* normal, std sqrt(1 / fan_in) */
} bp_init;

/* A static name for an initialiser ("he_normal", ...), or NULL. */
BP_API const char *bp_init_name(bp_init init);

typedef struct bp_net bp_net;
typedef struct bp_workspace bp_workspace;

/*
 * The element type of a network's parameters, optimizer state and
 * scratch, and of the data its calls take. A float64 network computes
 * in double throughout; it takes the `_f64` calls (bp_net_params_f64,
 * bp_net_gradient_f64, bp_net_train_epoch_f64, bp_net_predict_f64, ...)
 * wherever a float32 network takes float arrays, and each kind of call
 * fails with BP_STATUS_INVALID_ARGUMENT on the other kind of network.
 * Calls without data (bp_net_init, bp_net_apply_update, bp_net_clone,
 * model files) work on both. Optimizer and loss settings stay float
 * fields, widened exactly to double.
 */
typedef enum bp_dtype {
    BP_DTYPE_F32 = 0, /* float */
    BP_DTYPE_F64 = 1  /* double */
} bp_dtype;

/* A static name for a dtype ("float32", "float64"), or NULL. */
BP_API const char *bp_dtype_name(bp_dtype dtype);

/*
 * Creates a network of dense layers. Parameters start at zero; call
 * bp_net_init. The loss is fused with the output activation: with
 * cross-entropy the last layer must be identity, softmax or log_softmax,
 * with binary cross-entropy identity or sigmoid, and training works on
 * the logits. The other losses take any element-wise last activation
 * (poisson reads the output as the log of the rate). On failure *out is
 * set to NULL.
 */
BP_API bp_status bp_net_create(bp_net **out, int64_t n_inputs,
                               const bp_layer_spec *layers, int n_layers,
                               bp_loss loss);

/*
 * bp_net_create with a loss and its options. The network keeps a copy
 * of them, class weights included (one per output), and model files
 * store them.
 */
BP_API bp_status bp_net_create_ex(bp_net **out, int64_t n_inputs,
                                  const bp_layer_spec *layers, int n_layers,
                                  const bp_loss_config *loss);

/*
 * bp_net_create_ex with a dtype. The same seed gives a float64 network
 * the weights of a float32 network, widened, and its dropout layers
 * drop the same units.
 */
BP_API bp_status bp_net_create_dtype(bp_net **out, int64_t n_inputs,
                                     const bp_layer_spec *layers,
                                     int n_layers,
                                     const bp_loss_config *loss,
                                     bp_dtype dtype);

/* The network's dtype (BP_DTYPE_F32 for NULL). */
BP_API bp_dtype bp_net_dtype(const bp_net *net);

/* Frees a network; NULL is ignored. */
BP_API void bp_net_free(bp_net *net);

/* A new network with the same layers, parameters and optimizer state. */
BP_API bp_status bp_net_clone(bp_net **out, const bp_net *net);

/*
 * Draws every weight from the seeded counter-based generator and sets
 * biases and optimizer state to zero. The same seed gives the same
 * weights on every platform and thread count.
 */
BP_API bp_status bp_net_init(bp_net *net, bp_init init, uint64_t seed);

/*
 * Re-draws layer i's weights with `init` and sets each of its biases to
 * `bias` (if it has biases), leaving other layers and the optimizer
 * state alone. Layer i gets the weights bp_net_init(net, init, seed)
 * would give it: call it after bp_net_init to give layers their own
 * initialisers.
 */
BP_API bp_status bp_net_init_layer(bp_net *net, int i, bp_init init,
                                   float bias, uint64_t seed);

BP_API int64_t bp_net_n_inputs(const bp_net *net);
BP_API int64_t bp_net_n_outputs(const bp_net *net);
BP_API int bp_net_n_layers(const bp_net *net);
BP_API bp_loss bp_net_loss(const bp_net *net);

/*
 * The network's loss with its options. cfg->class_weights, when not
 * NULL, points at the network's copy, valid until bp_net_free.
 */
BP_API bp_status bp_net_get_loss_config(const bp_net *net,
                                        bp_loss_config *cfg);

/*
 * Layer `i`'s spec, with the activation parameter the layer uses (0.01
 * for a leaky_relu created with 0, 0 for activations without one) and
 * no_bias as 0 or 1; fails on an index out of range.
 */
BP_API bp_status bp_net_layer(const bp_net *net, int i, bp_layer_spec *spec);

/*
 * All parameters in one slab: for each layer its weights (I x O,
 * row-major) then its biases (O). A layer with no_bias keeps the place
 * of its biases, held at zero and never read or trained, so the layout
 * depends on the layer sizes alone. The pointer is owned by the network
 * and valid until bp_net_free; write through it to set parameters.
 */
BP_API int64_t bp_net_n_params(const bp_net *net);
BP_API float *bp_net_params(bp_net *net);
BP_API const float *bp_net_params_const(const bp_net *net);

/* Gradients of the last training step, laid out like the parameters. */
BP_API const float *bp_net_grads(const bp_net *net);

/*
 * The same gradient slab, writable: a caller may scale or sum it in
 * place (for instance all-reduce it across processes) between
 * bp_net_gradient and bp_net_apply_gradients. Owned by the network and
 * valid until bp_net_free.
 */
BP_API float *bp_net_grads_mut(bp_net *net);

/*
 * Momentum buffers, laid out like the parameters: the first optimizer
 * state slab (SGD's and RMSprop's momentum, Adam's first moments).
 */
BP_API float *bp_net_velocity(bp_net *net);

/*
 * Optimizer state slab `i`, laid out like the parameters: 0 is
 * bp_net_velocity, 1 holds second moments (Adam), squared averages
 * (RMSprop) or sums of squares (Adagrad). Slab 1 is allocated, zeroed,
 * on first use: by this call when `create` is nonzero, or by the first
 * update that needs it. *slab is NULL when slab 1 does not exist yet
 * and `create` is 0. Owned by the network, valid until bp_net_free.
 */
BP_API bp_status bp_net_optimizer_state(bp_net *net, int i, int create,
                                        float **slab);

/*
 * The slabs of a float64 network, laid out as above: parameters,
 * gradients (read-only and writable), momentum and optimizer state
 * slab `i`. The pointer getters give NULL for a float32 network (and
 * the float getters above NULL for a float64 one); the state call fails
 * on a float32 network.
 */
BP_API double *bp_net_params_f64(bp_net *net);
BP_API const double *bp_net_grads_f64(const bp_net *net);
BP_API double *bp_net_grads_mut_f64(bp_net *net);
BP_API double *bp_net_velocity_f64(bp_net *net);
BP_API bp_status bp_net_optimizer_state_f64(bp_net *net, int i, int create,
                                            double **slab);

/*
 * Updates made so far, by any of the training calls: the `step` that
 * schedules and Adam's bias correction see. bp_net_init resets it; a
 * caller restoring saved state may set it.
 */
BP_API uint64_t bp_net_optimizer_step(const bp_net *net);
BP_API bp_status bp_net_set_optimizer_step(bp_net *net, uint64_t step);

/*
 * Offsets of layer i's weights and biases in the parameter slab. A
 * dense layer has inputs x units weights, a normalisation layer units
 * (gamma), a dropout layer none; each but dropout has units biases
 * (beta).
 */
BP_API bp_status bp_net_layer_offsets(const bp_net *net, int i,
                                      int64_t *w_offset, int64_t *b_offset);

/*
 * Batch norm layer i's running mean (units) followed by its running
 * variance (units), owned by the network and writable; NULL for other
 * layers. bp_net_init sets them to 0 and 1; model files keep them.
 */
BP_API float *bp_net_running_stats(bp_net *net, int i);

/* The same of a float64 network, in double (NULL for a float32 one). */
BP_API double *bp_net_running_stats_f64(bp_net *net, int i);

/*
 * The seed of the network's dropout masks: bp_net_init's seed, or the
 * one set here (model files keep it).
 */
BP_API uint64_t bp_net_seed(const bp_net *net);
BP_API bp_status bp_net_set_seed(bp_net *net, uint64_t seed);

/*
 * Forward and backward pass on one batch, leaving gradients in the
 * gradient slab without updating parameters.
 *   x       B x I  (IN)
 *   y       B x O float targets, for every loss but cross-entropy with
 *           labels (IN)
 *   labels  B class indices, for cross-entropy (IN)
 *   loss    the batch's mean loss, without the L2 term (OUT; may be NULL)
 * Pass the target argument the loss needs and NULL for the other.
 * Cross-entropy takes labels or, when labels is NULL, probabilities in
 * y (rows summing to 1). Like every training call it runs the layers in
 * training mode: dropout masks for the current optimizer step, batch
 * norm with the batch's statistics, moving its running averages.
 */
BP_API bp_status bp_net_gradient(bp_net *net, const float *x, const float *y,
                                 const int32_t *labels, int64_t batch,
                                 double *loss);

/*
 * bp_net_gradient with per-sample weights, as bp_loss_compute takes them.
 *   weights  B, finite and >= 0  (IN; NULL for all 1)
 */
BP_API bp_status bp_net_gradient_weighted(bp_net *net, const float *x,
                                          const float *y,
                                          const int32_t *labels,
                                          const float *weights,
                                          int64_t batch, double *loss);

/*
 * Layer i's output in the last forward pass of a training call
 * (bp_net_gradient, a batch, or an epoch's last batch), for inspection:
 * a rows x O_i block, the logits with a fused loss for the last layer.
 * `rows` must be the rows of that call's batch. The block is owned by
 * the network and valid until its next training call; NULL when i or
 * rows is out of range.
 */
BP_API const float *bp_net_layer_output(const bp_net *net, int i,
                                        int64_t rows);

/* bp_net_layer_output of a float64 network (NULL for a float32 one). */
BP_API const double *bp_net_layer_output_f64(const bp_net *net, int i,
                                             int64_t rows);

/* bp_net_gradient, then one SGD step. */
BP_API bp_status bp_net_train_batch(bp_net *net, const bp_sgd_config *sgd,
                                    const float *x, const float *y,
                                    const int32_t *labels, int64_t batch,
                                    double *loss);

/*
 * One SGD step from whatever the gradient slab holds, as the second half
 * of bp_net_train_batch (biases exempt from the L2 penalty). With
 * bp_net_gradient and bp_net_grads_mut it lets a caller combine the
 * gradients of several batches or processes before the update.
 */
BP_API bp_status bp_net_apply_gradients(bp_net *net,
                                        const bp_sgd_config *sgd);

/*
 * The row order an epoch of bp_net_train_epoch visits with shuffling:
 * a permutation of 0 .. n-1 drawn from (seed, epoch).
 *   order  n  (OUT)
 * Lets a caller split the same batches across processes.
 */
BP_API bp_status bp_shuffle_order(int64_t *order, int64_t n, uint64_t seed,
                                  uint64_t epoch);

/*
 * One pass over n samples in batches of batch_size (the last batch may
 * be smaller), in an order shuffled from (seed, epoch) when shuffle is
 * nonzero. *mean_loss is the sample-weighted mean of the batch losses.
 * If a batch's loss is not finite the epoch stops before that batch's
 * update with BP_STATUS_NOT_FINITE; the message names the batch and the
 * first layer whose output was NaN or infinite.
 */
BP_API bp_status bp_net_train_epoch(bp_net *net, const bp_sgd_config *sgd,
                                    const float *x, const float *y,
                                    const int32_t *labels, int64_t n,
                                    int64_t batch_size, int shuffle,
                                    uint64_t seed, uint64_t epoch,
                                    double *mean_loss);

/*
 * What bp_net_train_epoch_ex tells its hook after each batch. The
 * pointers are owned by the network and valid only during the call.
 */
typedef struct bp_batch_info {
    int64_t index;          /* the batch's number in the epoch, from 0 */
    int64_t start;          /* its first row's position in the epoch's order */
    int64_t rows;           /* rows in the batch */
    double loss;            /* its mean loss, before the update */
    const float *outputs;   /* rows x O: the last layer's output before the
                               update (logits with a fused loss) */
    const float *y;         /* rows x O targets, or NULL with labels */
    const int32_t *labels;  /* rows class labels, or NULL with y */
    /* A float64 network's outputs and targets; `outputs` and `y` above
       are then NULL (and these are NULL for a float32 network). */
    const double *outputs_f64;
    const double *y_f64;
} bp_batch_info;

/*
 * Called after each batch's update, with the `user` pointer given to
 * bp_net_train_epoch_ex. Returning nonzero ends the epoch there. A hook
 * may read the network (parameters, gradients) but must not change or
 * free it.
 */
typedef int (*bp_batch_hook)(void *user, const bp_batch_info *info);

/* What an epoch of bp_net_train_epoch_ex did. */
typedef struct bp_epoch_report {
    double mean_loss;  /* sample-weighted mean loss of the batches trained;
                          with BP_STATUS_NOT_FINITE, the failing loss */
    int64_t batches;   /* batches whose update was applied: with
                          BP_STATUS_NOT_FINITE, the failing batch's index */
    int64_t rows;      /* rows in those batches */
    int stopped;       /* nonzero when the hook ended the epoch early */
    int bad_layer;     /* with BP_STATUS_NOT_FINITE: the first layer (from
                          0) whose output was NaN or infinite, else -1 */
} bp_epoch_report;

/*
 * bp_net_train_epoch with a hook called after every batch (NULL for
 * none) that may end the epoch early, and a report of what was done
 * (may be NULL). An epoch the hook ends returns BP_STATUS_OK with
 * report->stopped set. The batches, and so the results, are those of
 * bp_net_train_epoch.
 */
BP_API bp_status bp_net_train_epoch_ex(bp_net *net, const bp_sgd_config *sgd,
                                       const float *x, const float *y,
                                       const int32_t *labels, int64_t n,
                                       int64_t batch_size, int shuffle,
                                       uint64_t seed, uint64_t epoch,
                                       bp_batch_hook hook, void *user,
                                       bp_epoch_report *report);

/*
 * Training with any optimizer and a learning-rate schedule (NULL:
 * constant). Each update takes the rate the schedule gives for
 * bp_net_optimizer_step(net), clips the gradient as opt->clip_norm and
 * opt->clip_value ask (the global norm is summed in a fixed order, so
 * results do not depend on the thread count; the gradient slab itself
 * is left as it was), applies weight decay to weights (and to biases
 * with opt->decay_biases), updates the state slabs and counts the step.
 * The SGD calls above are these with an SGD optimizer.
 *
 * bp_net_apply_update is bp_net_apply_gradients, bp_net_train_batch_opt
 * bp_net_train_batch, and bp_net_train_epoch_opt bp_net_train_epoch_ex
 * (hook, user and report may be NULL; the mean loss is in the report).
 */
BP_API bp_status bp_net_apply_update(bp_net *net, const bp_optimizer *opt,
                                     const bp_schedule *sched);
BP_API bp_status bp_net_train_batch_opt(bp_net *net, const bp_optimizer *opt,
                                        const bp_schedule *sched,
                                        const float *x, const float *y,
                                        const int32_t *labels, int64_t batch,
                                        double *loss);
BP_API bp_status bp_net_train_epoch_opt(bp_net *net, const bp_optimizer *opt,
                                        const bp_schedule *sched,
                                        const float *x, const float *y,
                                        const int32_t *labels, int64_t n,
                                        int64_t batch_size, int shuffle,
                                        uint64_t seed, uint64_t epoch,
                                        bp_batch_hook hook, void *user,
                                        bp_epoch_report *report);

/*
 * bp_net_train_epoch_opt with per-sample weights (as bp_loss_compute
 * takes them), gathered with the rows of each shuffled batch; the mean
 * loss in the report is then sum(weight * loss) / rows. With weights
 * NULL it is bp_net_train_epoch_opt.
 *   weights  n, finite and >= 0  (IN; NULL for all 1)
 */
BP_API bp_status bp_net_train_epoch_weighted(
    bp_net *net, const bp_optimizer *opt, const bp_schedule *sched,
    const float *x, const float *y, const int32_t *labels,
    const float *weights, int64_t n, int64_t batch_size, int shuffle,
    uint64_t seed, uint64_t epoch, bp_batch_hook hook, void *user,
    bp_epoch_report *report);

/*
 * The training calls of a float64 network: bp_net_gradient_weighted and
 * bp_net_train_epoch_weighted on double data (weights NULL for all 1).
 * The hook sees the batch in bp_batch_info's outputs_f64 and y_f64.
 */
BP_API bp_status bp_net_gradient_f64(bp_net *net, const double *x,
                                     const double *y, const int32_t *labels,
                                     const double *weights, int64_t batch,
                                     double *loss);
BP_API bp_status bp_net_train_epoch_f64(
    bp_net *net, const bp_optimizer *opt, const bp_schedule *sched,
    const double *x, const double *y, const int32_t *labels,
    const double *weights, int64_t n, int64_t batch_size, int shuffle,
    uint64_t seed, uint64_t epoch, bp_batch_hook hook, void *user,
    bp_epoch_report *report);

/*
 * Scratch for inference on up to `max_batch` rows at a time, of the
 * network's dtype: it serves networks of that dtype only. A workspace
 * belongs to one thread at a time; one network may serve many threads,
 * each with its own workspace.
 */
BP_API bp_status bp_workspace_create(bp_workspace **out, const bp_net *net,
                                     int64_t max_batch);
BP_API void bp_workspace_free(bp_workspace *ws);

/*
 * Outputs for n rows, in chunks of the workspace's batch size.
 *   out  n x O  (OUT) the output layer's activation; with a fused loss,
 *        probabilities (softmax or sigmoid of the logits), or
 *        log-probabilities for a log_softmax output layer; for poisson,
 *        the rate e^z of the output z (the log of the rate)
 *   x    n x I  (IN)
 * Reads the network only; thread-safe with distinct workspaces. Fails
 * with BP_STATUS_NOT_FINITE, naming the row, if an output of the last
 * layer (a logit, with a fused loss) is NaN or infinite; earlier chunks
 * of `out` are then written.
 */
BP_API bp_status bp_net_predict(const bp_net *net, bp_workspace *ws,
                                float *out, const float *x, int64_t n);

/*
 * Mean loss over n rows without training (targets as in
 * bp_net_gradient), accumulated in double. Fails with
 * BP_STATUS_NOT_FINITE as bp_net_predict does.
 */
BP_API bp_status bp_net_evaluate(const bp_net *net, bp_workspace *ws,
                                 const float *x, const float *y,
                                 const int32_t *labels, int64_t n,
                                 double *loss);

/*
 * bp_net_evaluate with per-sample weights: sum(weight * loss) / n.
 *   weights  n, finite and >= 0  (IN; NULL for all 1)
 */
BP_API bp_status bp_net_evaluate_weighted(const bp_net *net,
                                          bp_workspace *ws, const float *x,
                                          const float *y,
                                          const int32_t *labels,
                                          const float *weights, int64_t n,
                                          double *loss);

/*
 * bp_net_predict and bp_net_evaluate_weighted of a float64 network, on
 * double data.
 */
BP_API bp_status bp_net_predict_f64(const bp_net *net, bp_workspace *ws,
                                    double *out, const double *x,
                                    int64_t n);
BP_API bp_status bp_net_evaluate_f64(const bp_net *net, bp_workspace *ws,
                                     const double *x, const double *y,
                                     const int32_t *labels,
                                     const double *weights, int64_t n,
                                     double *loss);

/* ---------------------------------------------------------------------
 * Model files
 *
 * One portable binary format (docs/model-format.md) holds a network's
 * layers, loss and parameters, and optionally what a bp_model_extras
 * carries: the optimizer's settings with the momentum buffers, progress
 * counters, the random generator's seed and position, class labels,
 * input scaling and string metadata. Files are little-endian on every
 * platform and end with a CRC-32 checksum.
 *
 *   bp_model_extras *ex;
 *   bp_model_extras_create(&ex);
 *   bp_model_extras_set_optimizer(ex, &sgd);
 *   bp_model_extras_set_progress(ex, epochs, steps);
 *   bp_net_save(net, "model.bpm", ex);
 *   bp_model_extras_free(ex);
 *
 *   bp_net *net;
 *   bp_model_extras *ex;
 *   if (bp_net_load(&net, "model.bpm", &ex) != BP_STATUS_OK)
 *       fprintf(stderr, "%s\n", bp_last_error());
 *
 * Loading fails with BP_STATUS_IO when the file cannot be read and with
 * BP_STATUS_FORMAT when it is empty, truncated, corrupt, not a model
 * file or written by a newer format version; the message names the file
 * and the problem. Nothing is handed out unless the whole file is valid.
 * ------------------------------------------------------------------- */

/* The newest format version this library writes and reads. */
#define BPROP_MODEL_FORMAT_VERSION 1

typedef struct bp_model_extras bp_model_extras;

/* What the class labels of a bp_model_extras are. */
typedef enum bp_label_type {
    BP_LABEL_TYPE_NONE = 0,   /* no labels */
    BP_LABEL_TYPE_INT = 1,    /* int64_t values */
    BP_LABEL_TYPE_FLOAT = 2,  /* double values */
    BP_LABEL_TYPE_STRING = 3  /* UTF-8 strings */
} bp_label_type;

/*
 * Creates an empty set of extras. Every setter copies what it is given,
 * so the caller's buffers may be freed right after the call. One object
 * belongs to one thread at a time.
 */
BP_API bp_status bp_model_extras_create(bp_model_extras **out);

/* Frees extras and all they hold; NULL is ignored. */
BP_API void bp_model_extras_free(bp_model_extras *ex);

/*
 * SGD settings. When set, a saved file also holds the network's
 * momentum buffers (bp_net_velocity), so training resumes exactly. The
 * getter returns nonzero when the file's optimizer is SGD and then
 * copies its settings (weight decay as l2) to *sgd.
 */
BP_API bp_status bp_model_extras_set_optimizer(bp_model_extras *ex,
                                               const bp_sgd_config *sgd);
BP_API int bp_model_extras_get_optimizer(const bp_model_extras *ex,
                                         bp_sgd_config *sgd);

/*
 * Any optimizer's settings and its schedule (NULL: constant). A saved
 * file then also holds both state slabs the kind uses and the
 * network's step counter. bp_model_extras_get_optimizer answers only
 * for SGD; bp_model_extras_get_opt returns nonzero when settings are
 * present, and copies them to the pointers that are not NULL.
 */
BP_API bp_status bp_model_extras_set_opt(bp_model_extras *ex,
                                         const bp_optimizer *opt,
                                         const bp_schedule *sched);
BP_API int bp_model_extras_get_opt(const bp_model_extras *ex,
                                   bp_optimizer *opt, bp_schedule *sched);

/*
 * Progress counters: epochs trained and SGD updates made. The getter
 * returns nonzero when present; either pointer may be NULL.
 */
BP_API bp_status bp_model_extras_set_progress(bp_model_extras *ex,
                                              uint64_t epochs,
                                              uint64_t steps);
BP_API int bp_model_extras_get_progress(const bp_model_extras *ex,
                                        uint64_t *epochs, uint64_t *steps);

/*
 * The random generator's state: the seed and init given to bp_net_init,
 * and the stream the next shuffle draws from (the `epoch` argument of
 * the next bp_net_train_epoch). The getter returns nonzero when present;
 * any pointer may be NULL.
 */
BP_API bp_status bp_model_extras_set_rng(bp_model_extras *ex, uint64_t seed,
                                         bp_init init, uint64_t next_stream);
BP_API int bp_model_extras_get_rng(const bp_model_extras *ex, uint64_t *seed,
                                   bp_init *init, uint64_t *next_stream);

/*
 * Class labels: one per output unit, or two for a single sigmoid output
 * (the labels of 0 and 1). Each setter replaces earlier labels; n == 0
 * removes them. Strings must be NUL-terminated UTF-8, each shorter than
 * 2^31 bytes.
 */
BP_API bp_status bp_model_extras_set_labels_int(bp_model_extras *ex,
                                                const int64_t *labels,
                                                int64_t n);
BP_API bp_status bp_model_extras_set_labels_float(bp_model_extras *ex,
                                                  const double *labels,
                                                  int64_t n);
BP_API bp_status bp_model_extras_set_labels_string(bp_model_extras *ex,
                                                   const char *const *labels,
                                                   int64_t n);

/* The labels' type (BP_LABEL_TYPE_NONE without labels) and count. */
BP_API bp_label_type bp_model_extras_label_type(const bp_model_extras *ex);
BP_API int64_t bp_model_extras_n_labels(const bp_model_extras *ex);

/*
 * The labels, owned by the extras and valid until they are changed or
 * freed. The array getters return NULL unless the labels have that type;
 * the string getter returns NULL unless they are strings and i is in
 * range.
 */
BP_API const int64_t *bp_model_extras_labels_int(const bp_model_extras *ex);
BP_API const double *bp_model_extras_labels_float(const bp_model_extras *ex);
BP_API const char *bp_model_extras_label_string(const bp_model_extras *ex,
                                                int64_t i);

/*
 * Input scaling: a program feeds the network (x - mean) / scale for
 * each of the n input features, computed in double. Every mean must be
 * finite and every scale finite and nonzero; n == 0 removes the scaling.
 * The getter returns n (0 without scaling) and points *mean and *scale
 * at arrays owned by the extras; either pointer may be NULL.
 */
BP_API bp_status bp_model_extras_set_scaling(bp_model_extras *ex,
                                             const double *mean,
                                             const double *scale, int64_t n);
BP_API int64_t bp_model_extras_get_scaling(const bp_model_extras *ex,
                                           const double **mean,
                                           const double **scale);

/*
 * String metadata: key/value pairs of NUL-terminated UTF-8 text. Setting
 * a key again replaces its value; a NULL value removes the key. Keys are
 * non-empty. Getters return strings owned by the extras, valid until the
 * metadata changes, or NULL for a missing key or an index out of range.
 */
BP_API bp_status bp_model_extras_set_meta(bp_model_extras *ex,
                                          const char *key, const char *value);
BP_API const char *bp_model_extras_get_meta(const bp_model_extras *ex,
                                            const char *key);
BP_API int64_t bp_model_extras_n_meta(const bp_model_extras *ex);
BP_API const char *bp_model_extras_meta_key(const bp_model_extras *ex,
                                            int64_t i);
BP_API const char *bp_model_extras_meta_value(const bp_model_extras *ex,
                                              int64_t i);

/*
 * Writes `net` and `extras` (NULL for none) to `path`. The file is
 * written under a temporary name in the same folder and then renamed,
 * so a failed save leaves any earlier file at `path` as it was. Reads
 * the network only.
 */
BP_API bp_status bp_net_save(const bp_net *net, const char *path,
                             const bp_model_extras *extras);

/*
 * Reads a network from `path` into a new *out, and the extras into a new
 * *extras unless `extras` is NULL. The caller frees both. On failure
 * both are set to NULL and nothing is allocated.
 */
BP_API bp_status bp_net_load(bp_net **out, const char *path,
                             bp_model_extras **extras);

/*
 * The same file format in memory. bp_net_save_buffer sets *size to the
 * bytes the model takes and, unless `buf` is NULL, writes them to `buf`,
 * which must hold `capacity` >= *size bytes. bp_net_load_buffer reads
 * `size` bytes as bp_net_load reads a file.
 */
BP_API bp_status bp_net_save_buffer(const bp_net *net,
                                    const bp_model_extras *extras, void *buf,
                                    size_t capacity, size_t *size);
BP_API bp_status bp_net_load_buffer(bp_net **out, const void *data,
                                    size_t size, bp_model_extras **extras);

#ifdef __cplusplus
}
#endif

#endif /* BPROP_H */
