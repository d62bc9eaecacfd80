/*
 * Internal functions of the optimizer and schedule kernels that the
 * network's update, the SGD kernel and the model files share.
 */
#ifndef BP_KERNELS_OPTIM_H
#define BP_KERNELS_OPTIM_H

#include "bprop.h"

/*
 * Checks the fields of `opt` its kind uses (see bp_optimizer); the
 * message names `fn` and the field.
 */
bp_status bp_optimizer_check(const char *fn, const bp_optimizer *opt);

/* Checks a schedule's settings and state; NULL is the constant one. */
bp_status bp_schedule_check(const char *fn, const bp_schedule *sched);

/* Nonzero when `opt` reads or writes the first state slab (m, v). */
int bp_optimizer_uses_first(const bp_optimizer *opt);

/* Nonzero when `opt`'s kind keeps the second state slab (s). */
int bp_optimizer_uses_second(const bp_optimizer *opt);

/* The rate of the update after `step` updates, trusted arguments. */
float bp_schedule_rate(const bp_schedule *sched, float lr, uint64_t step);

/* bp_schedule_rate in double, not rounded to float. */
double bp_schedule_rate_f64(const bp_schedule *sched, double lr,
                            uint64_t step);

/* What one update needs besides the buffers, computed once per step. */
typedef struct bp_update_scalars {
    float lr;           /* this update's learning rate */
    float grad_scale;   /* factor of the global-norm clipping; 1: none */
    float weight_decay; /* for this slice of the parameters */
    uint64_t step;      /* 1-based number of this update */
} bp_update_scalars;

/*
 * One update with trusted arguments (see bp_optimizer_update), the
 * gradient first multiplied by u->grad_scale. Split over threads.
 *   w  n (IN/OUT)   m, s  n (IN/OUT, as the kind needs)   grad  n (IN)
 */
void bp_optimizer_step(float *w, float *m, float *s, const float *grad,
                       const bp_optimizer *opt, const bp_update_scalars *u,
                       int64_t n);

/*
 * The sum of x[i]^2 in double, over fixed blocks whose partial sums are
 * added in order: the same bits for any thread count.
 *   x  n (IN)
 */
double bp_sum_squares(const float *x, int64_t n);

#endif
