/*
 * Internal layout of bp_model_extras, shared by its accessors
 * (extras.c) and the model file reader and writer (model_file.c).
 */
#ifndef BP_CORE_EXTRAS_H
#define BP_CORE_EXTRAS_H

#include "bprop.h"

struct bp_model_extras {
    int has_optimizer;
    bp_optimizer opt;
    bp_schedule sched;       /* the constant schedule unless set */

    int has_progress;
    uint64_t epochs;
    uint64_t steps;

    int has_rng;
    uint64_t seed;
    bp_init init;
    uint64_t next_stream;

    bp_label_type label_type;
    int64_t n_labels;
    int64_t *int_labels;     /* n_labels, for BP_LABEL_TYPE_INT */
    double *float_labels;    /* n_labels, for BP_LABEL_TYPE_FLOAT */
    char **string_labels;    /* n_labels, for BP_LABEL_TYPE_STRING */

    int64_t n_scaling;       /* 0, or the number of input features */
    double *mean;            /* n_scaling */
    double *scale;           /* n_scaling */

    int64_t n_meta;
    char **meta_keys;        /* n_meta, distinct and non-empty */
    char **meta_values;      /* n_meta */
};

/* The longest label, key or value, in bytes without the NUL. */
#define BP_MAX_TEXT 0x7FFFFFFF

/* Frees the labels and sets their type to BP_LABEL_TYPE_NONE. */
void bp_model_extras_drop_labels(bp_model_extras *ex);

/* A NUL-terminated copy of `len` bytes, or NULL when out of memory. */
char *bp_text_copy(const char *text, size_t len);

/*
 * Nonzero when `len` bytes are well-formed UTF-8 without NUL: no
 * overlong forms, surrogates or code points past U+10FFFF.
 */
int bp_text_valid(const char *text, size_t len);

#endif
