/*
 * Internal kernels of the layers that are not dense: batch norm, layer
 * norm and dropout. The network checks every argument before it calls
 * them; they never fail and never allocate.
 */
#ifndef BP_KERNELS_NORM_H
#define BP_KERNELS_NORM_H

#include <stdint.h>

/*
 * Batch norm in training: y = gamma * (x - mean) * rstd + beta with the
 * mean and rstd = 1 / sqrt(var + eps) of each column of x over the B
 * rows, and the running averages moved by `momentum`.
 *   y        B x n  (OUT)       x  B x n  (IN)
 *   stats    2n: mean, then rstd, for the backward pass  (OUT)
 *   running  2n: running mean, then running variance  (IN/OUT)
 *   gamma n (IN)    beta n (IN; NULL for none)
 */
void bp_batch_norm_train(float *y, float *stats, float *running,
                         const float *x, const float *gamma,
                         const float *beta, float eps, float momentum,
                         int64_t batch, int64_t n);

/* Batch norm at inference, from the running averages (2n, as above). */
void bp_batch_norm_infer(float *y, const float *x, const float *running,
                         const float *gamma, const float *beta, float eps,
                         int64_t batch, int64_t n);

/*
 * The backward pass of bp_batch_norm_train.
 *   dx  B x n  (OUT; NULL to skip)    dy  B x n  (IN)
 *   dgamma n, dbeta n  (OUT, overwritten; dbeta may be NULL)
 *   x, stats, gamma  as the forward pass had them  (IN)
 */
void bp_batch_norm_backward(float *dx, float *dgamma, float *dbeta,
                            const float *dy, const float *x,
                            const float *stats, const float *gamma,
                            int64_t batch, int64_t n);

/* Layer norm: each row of x normalised over its n columns. */
void bp_layer_norm_forward(float *y, const float *x, const float *gamma,
                           const float *beta, float eps, int64_t batch,
                           int64_t n);

/* The backward pass of bp_layer_norm_forward, arguments as above. */
void bp_layer_norm_backward(float *dx, float *dgamma, float *dbeta,
                            const float *dy, const float *x,
                            const float *gamma, float eps, int64_t batch,
                            int64_t n);

/*
 * Inverted dropout: mask[i] = 0 with probability `rate` (rounded to a
 * multiple of 2^-16), else 1 / (1 - rate), drawn from (seed, stream);
 * y = x * mask.
 *   y, mask, x  count  (OUT, OUT, IN)
 */
void bp_dropout_forward(float *y, float *mask, const float *x, float rate,
                        uint64_t seed, uint64_t stream, int64_t count);

#endif
