/*
 * Internal double-precision kernels of float64 networks: GEMM, the dense
 * layer, activations, losses and optimizer updates. They mirror the
 * float kernels' formulas and numerically careful forms, computed in
 * double with libm, and take trusted arguments: the network checks
 * everything first, so none of them fails on a caller's mistake.
 */
#ifndef BP_KERNELS_F64_H
#define BP_KERNELS_F64_H

#include "bprop.h"
#include "kernels/optim.h"

/*
 * C = alpha * op(A) @ op(B) + beta * C, then + bias on every row; shapes
 * as in bp_dgemm.
 *   bias  N (IN; NULL for none)
 * Fails only when the packing scratch cannot be allocated.
 */
bp_status bp_dgemm_bias(double *c, int64_t ldc, const double *a,
                        int64_t lda, const double *b, int64_t ldb,
                        bp_trans trans_a, bp_trans trans_b, double alpha,
                        double beta, const double *bias, int64_t m,
                        int64_t n, int64_t k);

/*
 * y = act(x) by rows (softmax and log_softmax per row).
 *   y  B x O  (OUT; may alias x)     x  B x O  (IN)
 * `param` is the resolved parameter (bp_activation_param).
 */
void bp_activation_forward_f64(double *y, const double *x, bp_activation act,
                               double param, int64_t rows, int64_t cols);

/*
 * dx = dy * act'(x) from the output y and, for the activations that need
 * it (bp_activation_needs_input), the input x.
 *   dx  B x O  (OUT; may alias dy)   dy, y  B x O  (IN)
 *   x   B x O  (IN; NULL unless needed)
 */
void bp_activation_backward_f64(double *dx, const double *dy,
                                const double *y, const double *x,
                                bp_activation act, double param,
                                int64_t rows, int64_t cols);

/*
 * y = act(x @ w + b), and z = x @ w + b when z is not NULL.
 *   y, z  B x O  (OUT)   x  B x I   w  I x O   b  O or NULL  (IN)
 */
void bp_dense_forward_f64(double *y, double *z, const double *x,
                          const double *w, const double *b,
                          bp_activation act, double param, int64_t batch,
                          int64_t n_in, int64_t n_out);

/*
 * The backward pass of bp_dense_forward_f64, as bp_dense_backward_ex:
 * dx (B x I, NULL to skip), dw (I x O) and db (O, NULL to skip) are
 * overwritten; dz (B x O) may alias dy. Fails as bp_dgemm_bias does.
 */
bp_status bp_dense_backward_f64(double *dx, double *dw, double *db,
                                double *dz, const double *dy,
                                const double *x, const double *w,
                                const double *y, const double *z,
                                bp_activation act, double param,
                                int64_t batch, int64_t n_in, int64_t n_out);

/*
 * bp_loss_run in double: a resolved configuration, trusted arguments.
 *   loss  scalar (OUT; NULL to skip)   grad  B x O (OUT; NULL to skip)
 *   pred, target  B x O   labels  B or NULL   weights  B or NULL  (IN)
 */
void bp_loss_run_f64(double *loss, double *grad, const double *pred,
                     const double *target, const int32_t *labels,
                     const double *weights, const bp_loss_config *cfg,
                     int64_t rows, int64_t cols);

/* Checks that every sample weight is finite and >= 0; NULL passes. */
bp_status bp_weights_check_f64(const char *fn, const double *weights,
                               int64_t n);

/* What one double update needs besides the buffers (bp_update_scalars). */
typedef struct bp_update_scalars_f64 {
    double lr;
    double grad_scale;
    double weight_decay;
    uint64_t step;
} bp_update_scalars_f64;

/*
 * One update of n parameters by `opt` (see bp_optimizer), the gradient
 * first scaled by u->grad_scale and clamped by opt->clip_value.
 *   w  n (IN/OUT)   m, s  n (IN/OUT, as the kind needs)   grad  n (IN)
 */
void bp_optimizer_step_f64(double *w, double *m, double *s,
                           const double *grad, const bp_optimizer *opt,
                           const bp_update_scalars_f64 *u, int64_t n);

/* The sum of x[i]^2 in fixed blocks: the same bits for any thread count. */
double bp_sum_squares_f64(const double *x, int64_t n);

/*
 * The layers that are not dense, as kernels/norm.h has them, in double:
 * batch norm in training (stats 2n: mean then rstd; running 2n: mean
 * then variance) and at inference, its backward pass (dgamma, dbeta
 * overwritten; dx and dbeta may be NULL), layer norm and its backward
 * pass, and inverted dropout (the mask of the float kernel's draws).
 * All buffers are B x n unless said otherwise.
 */
void bp_batch_norm_train_f64(double *y, double *stats, double *running,
                             const double *x, const double *gamma,
                             const double *beta, double eps, double momentum,
                             int64_t batch, int64_t n);
void bp_batch_norm_infer_f64(double *y, const double *x,
                             const double *running, const double *gamma,
                             const double *beta, double eps, int64_t batch,
                             int64_t n);
void bp_batch_norm_backward_f64(double *dx, double *dgamma, double *dbeta,
                                const double *dy, const double *x,
                                const double *stats, const double *gamma,
                                int64_t batch, int64_t n);
void bp_layer_norm_forward_f64(double *y, const double *x,
                               const double *gamma, const double *beta,
                               double eps, int64_t batch, int64_t n);
void bp_layer_norm_backward_f64(double *dx, double *dgamma, double *dbeta,
                                const double *dy, const double *x,
                                const double *gamma, double eps,
                                int64_t batch, int64_t n);
void bp_dropout_forward_f64(double *y, double *mask, const double *x,
                            double rate, uint64_t seed, uint64_t stream,
                            int64_t count);

#endif
