/* Internal helpers of the optimizer kernels shared with the network. */
#ifndef BP_KERNELS_SGD_H
#define BP_KERNELS_SGD_H

#include "bprop.h"

/*
 * Checks an SGD configuration (lr > 0 and finite, momentum in [0, 1),
 * nesterov only with momentum > 0, l2 >= 0 and finite); the message
 * names `fn` and the field.
 */
bp_status bp_sgd_check(const char *fn, const bp_sgd_config *cfg);

/* The bp_optimizer that updates as `cfg` does (l2 as weight_decay). */
bp_optimizer bp_sgd_optimizer(const bp_sgd_config *cfg);

#endif
