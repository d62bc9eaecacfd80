# Declarations only: a mirror of csrc/include/bprop.h, grouped as the header
# is. Nothing here allocates or runs; see _core.pyx for the wrappers.
from libc.stdint cimport int32_t, int64_t, uint64_t


cdef extern from "bprop.h" nogil:
    const char *bp_version()

    # Errors
    ctypedef enum bp_status:
        BP_STATUS_OK
        BP_STATUS_INVALID_ARGUMENT
        BP_STATUS_OUT_OF_MEMORY
        BP_STATUS_NOT_FINITE
        BP_STATUS_UNSUPPORTED
        BP_STATUS_INTERNAL
        BP_STATUS_IO
        BP_STATUS_FORMAT

    const char *bp_last_error()
    const char *bp_status_name(bp_status status)

    # Run-time configuration
    ctypedef enum bp_simd:
        BP_SIMD_GENERIC
        BP_SIMD_AVX2
        BP_SIMD_AVX512

    bp_simd bp_simd_level()
    bp_simd bp_simd_best()
    bp_status bp_simd_set(bp_simd level)
    const char *bp_simd_name(bp_simd level)
    int bp_get_num_threads()
    bp_status bp_set_num_threads(int n)
    bp_status bp_set_local_num_threads(int n)
    int bp_get_local_num_threads()
    int bp_has_openmp()

    # Kernels: matrix multiply
    ctypedef enum bp_trans:
        BP_TRANS_NO
        BP_TRANS_YES

    bp_status bp_sgemm(float *c, int64_t ldc, const float *a, int64_t lda,
                       const float *b, int64_t ldb, bp_trans trans_a,
                       bp_trans trans_b, float alpha, float beta, int64_t m,
                       int64_t n, int64_t k)
    bp_status bp_dgemm(double *c, int64_t ldc, const double *a, int64_t lda,
                       const double *b, int64_t ldb, bp_trans trans_a,
                       bp_trans trans_b, double alpha, double beta,
                       int64_t m, int64_t n, int64_t k)

    # Kernels: activations
    ctypedef enum bp_activation:
        BP_ACTIVATION_IDENTITY
        BP_ACTIVATION_RELU
        BP_ACTIVATION_SIGMOID
        BP_ACTIVATION_TANH
        BP_ACTIVATION_SOFTMAX
        BP_ACTIVATION_LEAKY_RELU
        BP_ACTIVATION_ELU
        BP_ACTIVATION_GELU
        BP_ACTIVATION_GELU_TANH
        BP_ACTIVATION_SILU
        BP_ACTIVATION_SOFTPLUS
        BP_ACTIVATION_LOG_SOFTMAX

    const char *bp_activation_name(bp_activation act)
    int bp_activation_needs_input(bp_activation act)
    float bp_activation_param(bp_activation act, float param)
    bp_status bp_activation_forward(float *y, const float *x,
                                    bp_activation act, int64_t rows,
                                    int64_t cols)
    bp_status bp_activation_backward(float *dx, const float *dy,
                                     const float *y, bp_activation act,
                                     int64_t rows, int64_t cols)
    bp_status bp_activation_forward_ex(float *y, const float *x,
                                       bp_activation act, float param,
                                       int64_t rows, int64_t cols)
    bp_status bp_activation_backward_ex(float *dx, const float *dy,
                                        const float *y, const float *x,
                                        bp_activation act, float param,
                                        int64_t rows, int64_t cols)

    # Kernels: dense layer
    bp_status bp_dense_forward(float *y, const float *x, const float *w,
                               const float *b, bp_activation act,
                               int64_t batch, int64_t n_in, int64_t n_out)
    bp_status bp_dense_backward(float *dx, float *dw, float *db, float *dz,
                                const float *dy, const float *x,
                                const float *w, const float *y,
                                bp_activation act, int64_t batch,
                                int64_t n_in, int64_t n_out)
    bp_status bp_dense_forward_ex(float *y, float *z, const float *x,
                                  const float *w, const float *b,
                                  bp_activation act, float param,
                                  int64_t batch, int64_t n_in, int64_t n_out)
    bp_status bp_dense_backward_ex(float *dx, float *dw, float *db, float *dz,
                                   const float *dy, const float *x,
                                   const float *w, const float *y,
                                   const float *z, bp_activation act,
                                   float param, int64_t batch, int64_t n_in,
                                   int64_t n_out)

    # Kernels: losses
    ctypedef enum bp_loss:
        BP_LOSS_MSE
        BP_LOSS_CROSS_ENTROPY
        BP_LOSS_BINARY_CROSS_ENTROPY
        BP_LOSS_MAE
        BP_LOSS_HUBER
        BP_LOSS_POISSON

    ctypedef struct bp_loss_config:
        bp_loss kind
        float delta
        float label_smoothing
        float pos_weight
        const float *class_weights

    const char *bp_loss_name(bp_loss loss)
    bp_status bp_loss_compute(double *loss, float *grad, const float *pred,
                              const float *target, const int32_t *labels,
                              const float *weights,
                              const bp_loss_config *cfg, int64_t rows,
                              int64_t cols)
    bp_status bp_loss_mse(double *loss, float *grad, const float *pred,
                          const float *target, int64_t rows, int64_t cols)
    bp_status bp_loss_cross_entropy(double *loss, float *grad,
                                    const float *logits,
                                    const int32_t *labels, int64_t rows,
                                    int64_t classes)
    bp_status bp_loss_binary_cross_entropy(double *loss, float *grad,
                                           const float *logits,
                                           const float *target,
                                           int64_t rows, int64_t cols)

    # Kernels: optimizer
    ctypedef struct bp_sgd_config:
        float lr
        float momentum
        int nesterov
        float l2

    bp_status bp_sgd_update(float *w, float *velocity, const float *grad,
                            const bp_sgd_config *cfg, float l2, int64_t n)

    ctypedef enum bp_optimizer_kind:
        BP_OPTIMIZER_SGD
        BP_OPTIMIZER_ADAM
        BP_OPTIMIZER_ADAMW
        BP_OPTIMIZER_RMSPROP
        BP_OPTIMIZER_ADAGRAD

    ctypedef struct bp_optimizer:
        bp_optimizer_kind kind
        float lr
        float momentum
        int nesterov
        float beta1
        float beta2
        float eps
        float rho
        float weight_decay
        int decay_biases
        float clip_norm
        float clip_value
        float initial_accumulator

    bp_status bp_optimizer_defaults(bp_optimizer *opt, bp_optimizer_kind kind)
    const char *bp_optimizer_name(bp_optimizer_kind kind)
    bp_status bp_optimizer_update(float *w, float *m, float *s,
                                  const float *grad, const bp_optimizer *opt,
                                  float lr, float weight_decay, uint64_t step,
                                  int64_t n)

    # Kernels: learning-rate schedules
    ctypedef enum bp_schedule_kind:
        BP_SCHEDULE_CONSTANT
        BP_SCHEDULE_STEP
        BP_SCHEDULE_EXPONENTIAL
        BP_SCHEDULE_INVERSE
        BP_SCHEDULE_COSINE
        BP_SCHEDULE_PLATEAU

    ctypedef struct bp_schedule:
        bp_schedule_kind kind
        int64_t interval
        int64_t step_size
        float gamma
        float power
        int64_t warmup
        int64_t period
        float min_lr
        float threshold
        int64_t patience
        int64_t cooldown
        int64_t reductions
        int64_t wait
        int64_t cooldown_left
        int has_best
        double best

    const char *bp_schedule_name(bp_schedule_kind kind)
    bp_status bp_schedule_lr(const bp_schedule *sched, float lr,
                             uint64_t step, float *out)
    bp_status bp_schedule_observe(bp_schedule *sched, double metric)

    # Networks
    ctypedef enum bp_layer_kind:
        BP_LAYER_KIND_DENSE
        BP_LAYER_KIND_DROPOUT
        BP_LAYER_KIND_BATCH_NORM
        BP_LAYER_KIND_LAYER_NORM

    const char *bp_layer_kind_name(bp_layer_kind kind)

    ctypedef struct bp_layer_spec:
        int64_t units
        bp_activation activation
        float activation_param
        int no_bias
        bp_layer_kind kind
        float rate
        float eps
        float momentum

    ctypedef enum bp_init:
        BP_INIT_AUTO
        BP_INIT_HE
        BP_INIT_GLOROT
        BP_INIT_HE_NORMAL
        BP_INIT_GLOROT_NORMAL
        BP_INIT_LECUN_UNIFORM
        BP_INIT_LECUN_NORMAL

    const char *bp_init_name(bp_init init)

    ctypedef struct bp_net:
        pass

    ctypedef struct bp_workspace:
        pass

    bp_status bp_net_create(bp_net **out, int64_t n_inputs,
                            const bp_layer_spec *layers, int n_layers,
                            bp_loss loss)
    void bp_net_free(bp_net *net)
    bp_status bp_net_clone(bp_net **out, const bp_net *net)
    bp_status bp_net_create_ex(bp_net **out, int64_t n_inputs,
                               const bp_layer_spec *layers, int n_layers,
                               const bp_loss_config *loss)

    ctypedef enum bp_dtype:
        BP_DTYPE_F32
        BP_DTYPE_F64

    const char *bp_dtype_name(bp_dtype dtype)
    bp_status bp_net_create_dtype(bp_net **out, int64_t n_inputs,
                                  const bp_layer_spec *layers, int n_layers,
                                  const bp_loss_config *loss, bp_dtype dtype)
    bp_dtype bp_net_dtype(const bp_net *net)
    const double *bp_net_layer_output_f64(const bp_net *net, int i,
                                          int64_t rows)
    double *bp_net_params_f64(bp_net *net)
    const double *bp_net_grads_f64(const bp_net *net)
    double *bp_net_grads_mut_f64(bp_net *net)
    double *bp_net_velocity_f64(bp_net *net)
    bp_status bp_net_optimizer_state_f64(bp_net *net, int i, int create,
                                         double **slab)
    bp_status bp_net_init(bp_net *net, bp_init init, uint64_t seed)
    float *bp_net_running_stats(bp_net *net, int i)
    double *bp_net_running_stats_f64(bp_net *net, int i)
    uint64_t bp_net_seed(const bp_net *net)
    bp_status bp_net_set_seed(bp_net *net, uint64_t seed)
    bp_status bp_net_init_layer(bp_net *net, int i, bp_init init, float bias,
                                uint64_t seed)
    bp_status bp_net_get_loss_config(const bp_net *net, bp_loss_config *cfg)
    int64_t bp_net_n_inputs(const bp_net *net)
    int64_t bp_net_n_outputs(const bp_net *net)
    int bp_net_n_layers(const bp_net *net)
    bp_loss bp_net_loss(const bp_net *net)
    bp_status bp_net_layer(const bp_net *net, int i, bp_layer_spec *spec)
    int64_t bp_net_n_params(const bp_net *net)
    float *bp_net_params(bp_net *net)
    const float *bp_net_params_const(const bp_net *net)
    const float *bp_net_grads(const bp_net *net)
    float *bp_net_grads_mut(bp_net *net)
    float *bp_net_velocity(bp_net *net)
    bp_status bp_net_optimizer_state(bp_net *net, int i, int create,
                                     float **slab)
    uint64_t bp_net_optimizer_step(const bp_net *net)
    bp_status bp_net_set_optimizer_step(bp_net *net, uint64_t step)
    bp_status bp_net_layer_offsets(const bp_net *net, int i,
                                   int64_t *w_offset, int64_t *b_offset)
    bp_status bp_net_gradient(bp_net *net, const float *x, const float *y,
                              const int32_t *labels, int64_t batch,
                              double *loss)
    bp_status bp_net_gradient_weighted(bp_net *net, const float *x,
                                       const float *y, const int32_t *labels,
                                       const float *weights, int64_t batch,
                                       double *loss)
    bp_status bp_net_train_batch(bp_net *net, const bp_sgd_config *sgd,
                                 const float *x, const float *y,
                                 const int32_t *labels, int64_t batch,
                                 double *loss)
    bp_status bp_net_apply_gradients(bp_net *net, const bp_sgd_config *sgd)
    bp_status bp_shuffle_order(int64_t *order, int64_t n, uint64_t seed,
                               uint64_t epoch)
    bp_status bp_net_train_epoch(bp_net *net, const bp_sgd_config *sgd,
                                 const float *x, const float *y,
                                 const int32_t *labels, int64_t n,
                                 int64_t batch_size, int shuffle,
                                 uint64_t seed, uint64_t epoch,
                                 double *mean_loss)

    const float *bp_net_layer_output(const bp_net *net, int i, int64_t rows)

    ctypedef struct bp_batch_info:
        int64_t index
        int64_t start
        int64_t rows
        double loss
        const float *outputs
        const float *y
        const int32_t *labels
        const double *outputs_f64
        const double *y_f64

    ctypedef int (*bp_batch_hook)(void *user,
                                  const bp_batch_info *info) noexcept nogil

    ctypedef struct bp_epoch_report:
        double mean_loss
        int64_t batches
        int64_t rows
        int stopped
        int bad_layer

    bp_status bp_net_train_epoch_ex(bp_net *net, const bp_sgd_config *sgd,
                                    const float *x, const float *y,
                                    const int32_t *labels, int64_t n,
                                    int64_t batch_size, int shuffle,
                                    uint64_t seed, uint64_t epoch,
                                    bp_batch_hook hook, void *user,
                                    bp_epoch_report *report)
    bp_status bp_net_apply_update(bp_net *net, const bp_optimizer *opt,
                                  const bp_schedule *sched)
    bp_status bp_net_train_batch_opt(bp_net *net, const bp_optimizer *opt,
                                     const bp_schedule *sched,
                                     const float *x, const float *y,
                                     const int32_t *labels, int64_t batch,
                                     double *loss)
    bp_status bp_net_train_epoch_opt(bp_net *net, const bp_optimizer *opt,
                                     const bp_schedule *sched,
                                     const float *x, const float *y,
                                     const int32_t *labels, int64_t n,
                                     int64_t batch_size, int shuffle,
                                     uint64_t seed, uint64_t epoch,
                                     bp_batch_hook hook, void *user,
                                     bp_epoch_report *report)
    bp_status bp_net_train_epoch_weighted(
        bp_net *net, const bp_optimizer *opt, const bp_schedule *sched,
        const float *x, const float *y, const int32_t *labels,
        const float *weights, int64_t n, int64_t batch_size, int shuffle,
        uint64_t seed, uint64_t epoch, bp_batch_hook hook, void *user,
        bp_epoch_report *report)
    bp_status bp_workspace_create(bp_workspace **out, const bp_net *net,
                                  int64_t max_batch)
    void bp_workspace_free(bp_workspace *ws)
    bp_status bp_net_predict(const bp_net *net, bp_workspace *ws,
                             float *out, const float *x, int64_t n)
    bp_status bp_net_predict_f64(const bp_net *net, bp_workspace *ws,
                                 double *out, const double *x, int64_t n)
    bp_status bp_net_evaluate_f64(const bp_net *net, bp_workspace *ws,
                                  const double *x, const double *y,
                                  const int32_t *labels,
                                  const double *weights, int64_t n,
                                  double *loss)
    bp_status bp_net_gradient_f64(bp_net *net, const double *x,
                                  const double *y, const int32_t *labels,
                                  const double *weights, int64_t batch,
                                  double *loss)
    bp_status bp_net_train_epoch_f64(
        bp_net *net, const bp_optimizer *opt, const bp_schedule *sched,
        const double *x, const double *y, const int32_t *labels,
        const double *weights, int64_t n, int64_t batch_size, int shuffle,
        uint64_t seed, uint64_t epoch, bp_batch_hook hook, void *user,
        bp_epoch_report *report)
    bp_status bp_net_evaluate(const bp_net *net, bp_workspace *ws,
                              const float *x, const float *y,
                              const int32_t *labels, int64_t n,
                              double *loss)
    bp_status bp_net_evaluate_weighted(const bp_net *net, bp_workspace *ws,
                                       const float *x, const float *y,
                                       const int32_t *labels,
                                       const float *weights, int64_t n,
                                       double *loss)

    # Model files
    int BPROP_MODEL_FORMAT_VERSION

    ctypedef struct bp_model_extras:
        pass

    ctypedef enum bp_label_type:
        BP_LABEL_TYPE_NONE
        BP_LABEL_TYPE_INT
        BP_LABEL_TYPE_FLOAT
        BP_LABEL_TYPE_STRING

    bp_status bp_model_extras_create(bp_model_extras **out)
    void bp_model_extras_free(bp_model_extras *ex)
    bp_status bp_model_extras_set_optimizer(bp_model_extras *ex,
                                            const bp_sgd_config *sgd)
    int bp_model_extras_get_optimizer(const bp_model_extras *ex,
                                      bp_sgd_config *sgd)
    bp_status bp_model_extras_set_opt(bp_model_extras *ex,
                                      const bp_optimizer *opt,
                                      const bp_schedule *sched)
    int bp_model_extras_get_opt(const bp_model_extras *ex, bp_optimizer *opt,
                                bp_schedule *sched)
    bp_status bp_model_extras_set_progress(bp_model_extras *ex,
                                           uint64_t epochs, uint64_t steps)
    int bp_model_extras_get_progress(const bp_model_extras *ex,
                                     uint64_t *epochs, uint64_t *steps)
    bp_status bp_model_extras_set_rng(bp_model_extras *ex, uint64_t seed,
                                      bp_init init, uint64_t next_stream)
    int bp_model_extras_get_rng(const bp_model_extras *ex, uint64_t *seed,
                                bp_init *init, uint64_t *next_stream)
    bp_status bp_model_extras_set_labels_int(bp_model_extras *ex,
                                             const int64_t *labels, int64_t n)
    bp_status bp_model_extras_set_labels_float(bp_model_extras *ex,
                                               const double *labels,
                                               int64_t n)
    bp_status bp_model_extras_set_labels_string(bp_model_extras *ex,
                                                const char *const *labels,
                                                int64_t n)
    bp_label_type bp_model_extras_label_type(const bp_model_extras *ex)
    int64_t bp_model_extras_n_labels(const bp_model_extras *ex)
    const int64_t *bp_model_extras_labels_int(const bp_model_extras *ex)
    const double *bp_model_extras_labels_float(const bp_model_extras *ex)
    const char *bp_model_extras_label_string(const bp_model_extras *ex,
                                             int64_t i)
    bp_status bp_model_extras_set_scaling(bp_model_extras *ex,
                                          const double *mean,
                                          const double *scale, int64_t n)
    int64_t bp_model_extras_get_scaling(const bp_model_extras *ex,
                                        const double **mean,
                                        const double **scale)
    bp_status bp_model_extras_set_meta(bp_model_extras *ex, const char *key,
                                       const char *value)
    const char *bp_model_extras_get_meta(const bp_model_extras *ex,
                                         const char *key)
    int64_t bp_model_extras_n_meta(const bp_model_extras *ex)
    const char *bp_model_extras_meta_key(const bp_model_extras *ex,
                                         int64_t i)
    const char *bp_model_extras_meta_value(const bp_model_extras *ex,
                                           int64_t i)
    bp_status bp_net_save(const bp_net *net, const char *path,
                          const bp_model_extras *extras)
    bp_status bp_net_load(bp_net **out, const char *path,
                          bp_model_extras **extras)
    bp_status bp_net_save_buffer(const bp_net *net,
                                 const bp_model_extras *extras, void *buf,
                                 size_t capacity, size_t *size)
    bp_status bp_net_load_buffer(bp_net **out, const void *data, size_t size,
                                 bp_model_extras **extras)
