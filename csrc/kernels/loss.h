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

#endif
