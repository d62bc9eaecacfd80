/* Internal helpers of the loss kernels shared with the network. */
#ifndef BP_KERNELS_LOSS_H
#define BP_KERNELS_LOSS_H

#include "bprop.h"

/*
 * Checks that every label is in [0, classes); on failure the message
 * names `fn`, the first bad row and its label.
 *   labels  B  (IN)
 */
bp_status bp_labels_check(const char *fn, const int32_t *labels,
                          int64_t rows, int64_t classes);

/*
 * Checks a loss configuration (class weights against `classes`) and
 * copies it to *out with the loss's defaults resolved (huber's delta 0
 * and binary cross-entropy's pos_weight 0 become 1; options of other
 * losses must be 0). The message names `fn` and the field.
 */
bp_status bp_loss_config_resolve(const char *fn, const bp_loss_config *cfg,
                                 int64_t classes, bp_loss_config *out);

/* Returns row i's summed loss and writes its gradient if requested. */
typedef double (*bp_loss_row_fn)(const void *ctx, int64_t i);

/*
 * The sum of row_fn(ctx, i) over `rows` rows: rows are grouped into
 * chunks whose bounds depend on the row count only, chunks are summed
 * in order, so the total does not depend on the thread count. `cost`
 * is the whole reduction's flops, for choosing the threads.
 */
double bp_loss_reduce_rows(const void *ctx, bp_loss_row_fn row_fn,
                           int64_t rows, double cost);

/* Checks that every sample weight is finite and >= 0; NULL passes. */
bp_status bp_weights_check(const char *fn, const float *weights, int64_t n);

/*
 * bp_loss_compute with trusted arguments and a resolved configuration;
 * for cross-entropy, labels or (labels NULL) probability targets.
 */
bp_status bp_loss_run(double *loss, float *grad, const float *pred,
                      const float *target, const int32_t *labels,
                      const float *weights, const bp_loss_config *cfg,
                      int64_t rows, int64_t cols);

#endif
