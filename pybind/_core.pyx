# cython: language_level=3, boundscheck=False, wraparound=False
# cython: initializedcheck=False, cdivision=True
"""Compiled core of bprop: thin wrappers over the C library.

Design decisions:
- The Python layer validates and allocates; these wrappers trust shapes
  and dtypes (typed memoryviews still reject a wrong dtype or layout).
- Every C call runs with the GIL released.
- Statuses become exceptions in one place, ``_check``.
- Empty buffers are passed as a pointer to a dummy float, never NULL, so
  the C library's NULL checks keep their meaning.
- NumPy is not needed to build this module: all buffers are memoryviews.
- One Net class serves float32 and float64 networks: each method that
  takes arrays picks the [float] or [double] version of one fused-type
  function after the network's dtype, so the two cannot drift apart.
"""
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memset

from libbprop cimport *

cdef float _empty_f32[1]
cdef double _empty_f64[1]
cdef int32_t _empty_i32[1]

# The element types of float32 and float64 networks.
ctypedef fused real:
    float
    double


class DivergenceError(FloatingPointError, ValueError):
    """Training produced a loss or value that is NaN or infinite.

    Also a ValueError, so that every NaN or infinity the model API meets
    raises one kind of exception.
    """


class ModelFormatError(ValueError):
    """A model file is empty, truncated, corrupt, not a model file, or
    written by a newer version of bprop."""


cdef int _check(bp_status status) except -1:
    if status == BP_STATUS_OK:
        return 0
    message = bp_last_error().decode("utf-8", "replace")
    if status == BP_STATUS_INVALID_ARGUMENT:
        raise ValueError(message)
    if status == BP_STATUS_OUT_OF_MEMORY:
        raise MemoryError(message)
    if status == BP_STATUS_NOT_FINITE:
        raise DivergenceError(message)
    if status == BP_STATUS_IO:
        raise OSError(message)
    if status == BP_STATUS_FORMAT:
        raise ModelFormatError(message)
    raise RuntimeError(f"{bp_status_name(status).decode()}: {message}")


cdef inline float *_f2(float[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else _empty_f32


cdef inline const float *_cf2(const float[:, ::1] a) noexcept nogil:
    return &a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0 else _empty_f32


cdef inline float *_f1(float[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else _empty_f32


cdef inline const float *_cf1(const float[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else _empty_f32


cdef inline const int32_t *_ci1(const int32_t[::1] a) noexcept nogil:
    return &a[0] if a.shape[0] > 0 else _empty_i32



# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------

SIMD_LEVELS = ("generic", "avx2", "avx512")
# In the order of the C enums: a name's index is its code.
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax",
               "leaky_relu", "elu", "gelu", "gelu_tanh", "silu", "softplus",
               "log_softmax")
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy", "mae", "huber",
          "poisson")
INITS = ("auto", "he", "glorot", "he_normal", "glorot_normal",
         "lecun_uniform", "lecun_normal")
DTYPES = ("float32", "float64")


def version():
    return bp_version().decode()


def simd_level():
    return bp_simd_name(bp_simd_level()).decode()


def simd_best():
    return bp_simd_name(bp_simd_best()).decode()


def simd_set(str name):
    if name not in SIMD_LEVELS:
        raise ValueError(f"unknown SIMD level {name!r}; choose one of "
                         f"{', '.join(SIMD_LEVELS)}")
    cdef int level = SIMD_LEVELS.index(name)
    _check(bp_simd_set(<bp_simd>level))


def get_num_threads():
    return bp_get_num_threads()


def set_num_threads(int n):
    _check(bp_set_num_threads(n))


def get_local_num_threads():
    return bp_get_local_num_threads()


def set_local_num_threads(int n):
    _check(bp_set_local_num_threads(n))


def has_openmp():
    return bool(bp_has_openmp())


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------

cdef enum:
    # Values tested per pass of the branch-free inner loop.
    _FINITE_BLOCK = 4096


cdef int64_t _first_nonfinite(const real *x, int64_t n) noexcept nogil:
    cdef int64_t start = 0, stop, i
    cdef int bad
    while start < n:
        stop = min(n, start + _FINITE_BLOCK)
        bad = 0
        for i in range(start, stop):
            bad |= not isfinite(x[i])
        if bad:
            for i in range(start, stop):
                if not isfinite(x[i]):
                    return i
        start = stop
    return -1


def first_nonfinite(const real[::1] values):
    """Index of the first NaN or infinity in `values` (float32 or
    float64), or -1."""
    cdef int64_t at
    if values.shape[0] == 0:
        return -1
    with nogil:
        at = _first_nonfinite(&values[0], values.shape[0])
    return at


# ---------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------

def sgemm(float[:, ::1] c, const float[:, ::1] a, const float[:, ::1] b,
          bint trans_a, bint trans_b, float alpha, float beta):
    """c = alpha * op(a) @ op(b) + beta * c; shapes checked by the caller."""
    cdef int64_t m = c.shape[0], n = c.shape[1]
    cdef int64_t k = a.shape[0] if trans_a else a.shape[1]
    cdef bp_status s
    with nogil:
        s = bp_sgemm(_f2(c), n, _cf2(a), a.shape[1], _cf2(b), b.shape[1],
                     BP_TRANS_YES if trans_a else BP_TRANS_NO,
                     BP_TRANS_YES if trans_b else BP_TRANS_NO,
                     alpha, beta, m, n, k)
    _check(s)


def activation_param(int act, float param):
    """The parameter the activation uses for `param` (0: its default);
    NaN when `param` is invalid."""
    return bp_activation_param(<bp_activation>act, param)


def activation_needs_input(int act):
    """Whether the activation's derivative needs its input x."""
    return bool(bp_activation_needs_input(<bp_activation>act))


def activation_forward(float[:, ::1] y, const float[:, ::1] x, int act,
                       float param=0.0):
    cdef bp_status s
    with nogil:
        s = bp_activation_forward_ex(_f2(y), _cf2(x), <bp_activation>act,
                                     param, x.shape[0], x.shape[1])
    _check(s)


def activation_backward(float[:, ::1] dx, const float[:, ::1] dy,
                        const float[:, ::1] y, int act, float param=0.0,
                        const float[:, ::1] x=None):
    cdef const float *x_p = NULL if x is None else _cf2(x)
    cdef bp_status s
    with nogil:
        s = bp_activation_backward_ex(_f2(dx), _cf2(dy), _cf2(y), x_p,
                                      <bp_activation>act, param, y.shape[0],
                                      y.shape[1])
    _check(s)


def dense_forward(float[:, ::1] y, const float[:, ::1] x,
                  const float[:, ::1] w, const float[::1] b, int act,
                  float param=0.0, float[:, ::1] z=None):
    cdef const float *bias = NULL if b is None else _cf1(b)
    cdef float *z_p = NULL if z is None else _f2(z)
    cdef bp_status s
    with nogil:
        s = bp_dense_forward_ex(_f2(y), z_p, _cf2(x), _cf2(w), bias,
                                <bp_activation>act, param, x.shape[0],
                                w.shape[0], w.shape[1])
    _check(s)


def dense_backward(float[:, ::1] dx, float[:, ::1] dw, float[::1] db,
                   float[:, ::1] dz, const float[:, ::1] dy,
                   const float[:, ::1] x, const float[:, ::1] w,
                   const float[:, ::1] y, int act, float param=0.0,
                   const float[:, ::1] z=None):
    cdef float *dx_p = NULL if dx is None else _f2(dx)
    cdef float *db_p = NULL if db is None else _f1(db)
    cdef const float *z_p = NULL if z is None else _cf2(z)
    cdef bp_status s
    with nogil:
        s = bp_dense_backward_ex(dx_p, _f2(dw), db_p, _f2(dz), _cf2(dy),
                                 _cf2(x), _cf2(w), _cf2(y), z_p,
                                 <bp_activation>act, param, x.shape[0],
                                 w.shape[0], w.shape[1])
    _check(s)


def loss_mse(float[:, ::1] grad, const float[:, ::1] pred,
             const float[:, ::1] target):
    cdef double loss = 0.0
    cdef float *g = NULL if grad is None else _f2(grad)
    cdef bp_status s
    with nogil:
        s = bp_loss_mse(&loss, g, _cf2(pred), _cf2(target), pred.shape[0],
                        pred.shape[1])
    _check(s)
    return loss


def loss_cross_entropy(float[:, ::1] grad, const float[:, ::1] logits,
                       const int32_t[::1] labels):
    cdef double loss = 0.0
    cdef float *g = NULL if grad is None else _f2(grad)
    cdef bp_status s
    with nogil:
        s = bp_loss_cross_entropy(&loss, g, _cf2(logits), _ci1(labels),
                                  logits.shape[0], logits.shape[1])
    _check(s)
    return loss


def loss_binary_cross_entropy(float[:, ::1] grad, const float[:, ::1] logits,
                              const float[:, ::1] target):
    cdef double loss = 0.0
    cdef float *g = NULL if grad is None else _f2(grad)
    cdef bp_status s
    with nogil:
        s = bp_loss_binary_cross_entropy(&loss, g, _cf2(logits), _cf2(target),
                                         logits.shape[0], logits.shape[1])
    _check(s)
    return loss


# A loss's options travel as a dict: "kind" (a name from LOSSES) and any
# of "delta", "label_smoothing", "pos_weight" (floats, 0: default) and
# "class_weights" (a float32 array of one weight per class, or None).

cdef int _to_loss(bp_loss_config *cfg, dict options,
                  const float[::1] class_weights) except -1:
    kind = options.get("kind", "mse")
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}")
    cfg.kind = <bp_loss><int>LOSSES.index(kind)
    cfg.delta = options.get("delta", 0.0)
    cfg.label_smoothing = options.get("label_smoothing", 0.0)
    cfg.pos_weight = options.get("pos_weight", 0.0)
    cfg.class_weights = NULL
    if class_weights is not None:
        cfg.class_weights = _cf1(class_weights)
    return 0


cdef dict _from_loss(const bp_loss_config *cfg, int64_t classes):
    cdef int64_t k
    weights = None
    if cfg.class_weights != NULL:
        weights = [cfg.class_weights[k] for k in range(classes)]
    return {"kind": LOSSES[<int>cfg.kind], "delta": cfg.delta,
            "label_smoothing": cfg.label_smoothing,
            "pos_weight": cfg.pos_weight, "class_weights": weights}


def loss_compute(float[:, ::1] grad, const float[:, ::1] pred,
                 const float[:, ::1] target, const int32_t[::1] labels,
                 const float[::1] weights, dict options):
    """Any loss with its options (see _to_loss); target or labels, grad and
    weights may be None. Class weights come as options["class_weights"]."""
    cdef bp_loss_config cfg
    cdef const float[::1] cw = options.get("class_weights")
    cdef double loss = 0.0
    cdef float *g = NULL if grad is None else _f2(grad)
    cdef const float *t = NULL if target is None else _cf2(target)
    cdef const int32_t *l = NULL if labels is None else _ci1(labels)
    cdef const float *w = NULL if weights is None else _cf1(weights)
    cdef bp_status s
    _to_loss(&cfg, options, cw)
    with nogil:
        s = bp_loss_compute(&loss, g, _cf2(pred), t, l, w, &cfg,
                            pred.shape[0], pred.shape[1])
    _check(s)
    return loss


def sgd_update(float[::1] w, float[::1] velocity, const float[::1] grad,
               float lr, float momentum, bint nesterov, float l2):
    cdef bp_sgd_config cfg
    cdef float *v = NULL if velocity is None else _f1(velocity)
    cdef bp_status s
    cfg.lr = lr
    cfg.momentum = momentum
    cfg.nesterov = nesterov
    cfg.l2 = l2
    with nogil:
        s = bp_sgd_update(_f1(w), v, _cf1(grad), &cfg, l2, w.shape[0])
    _check(s)


# ---------------------------------------------------------------------------
# Optimizers and learning-rate schedules
# ---------------------------------------------------------------------------
#
# Python describes an optimizer and a schedule as dicts keyed by the fields
# of bp_optimizer and bp_schedule, "kind" being a name from OPTIMIZERS or
# SCHEDULES; a missing key is 0. The C core checks the values.

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES = ("constant", "step", "exponential", "inverse", "cosine",
             "plateau")

_OPTIMIZER_FLOATS = ("lr", "momentum", "beta1", "beta2", "eps", "rho",
                     "weight_decay", "clip_norm", "clip_value",
                     "initial_accumulator")
_SCHEDULE_FLOATS = ("gamma", "power", "min_lr", "threshold")
_SCHEDULE_COUNTS = ("interval", "step_size", "warmup", "period", "patience",
                    "cooldown", "reductions", "wait", "cooldown_left")


cdef int _to_optimizer(bp_optimizer *o, dict cfg) except -1:
    kind = cfg.get("kind", "sgd")
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer kind {kind!r}")
    memset(o, 0, sizeof(bp_optimizer))
    o.kind = <bp_optimizer_kind><int>OPTIMIZERS.index(kind)
    o.lr = cfg.get("lr", 0.0)
    o.momentum = cfg.get("momentum", 0.0)
    o.nesterov = bool(cfg.get("nesterov", False))
    o.beta1 = cfg.get("beta1", 0.0)
    o.beta2 = cfg.get("beta2", 0.0)
    o.eps = cfg.get("eps", 0.0)
    o.rho = cfg.get("rho", 0.0)
    o.weight_decay = cfg.get("weight_decay", 0.0)
    o.decay_biases = bool(cfg.get("decay_biases", False))
    o.clip_norm = cfg.get("clip_norm", 0.0)
    o.clip_value = cfg.get("clip_value", 0.0)
    o.initial_accumulator = cfg.get("initial_accumulator", 0.0)
    return 0


cdef dict _from_optimizer(const bp_optimizer *o):
    return {
        "kind": OPTIMIZERS[<int>o.kind], "lr": o.lr,
        "momentum": o.momentum, "nesterov": bool(o.nesterov),
        "beta1": o.beta1, "beta2": o.beta2, "eps": o.eps, "rho": o.rho,
        "weight_decay": o.weight_decay, "decay_biases": bool(o.decay_biases),
        "clip_norm": o.clip_norm, "clip_value": o.clip_value,
        "initial_accumulator": o.initial_accumulator,
    }


cdef int _to_schedule(bp_schedule *sch, dict cfg) except -1:
    kind = cfg.get("kind", "constant")
    if kind not in SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}")
    memset(sch, 0, sizeof(bp_schedule))
    sch.kind = <bp_schedule_kind><int>SCHEDULES.index(kind)
    sch.interval = cfg.get("interval", 0)
    sch.step_size = cfg.get("step_size", 0)
    sch.gamma = cfg.get("gamma", 0.0)
    sch.power = cfg.get("power", 0.0)
    sch.warmup = cfg.get("warmup", 0)
    sch.period = cfg.get("period", 0)
    sch.min_lr = cfg.get("min_lr", 0.0)
    sch.threshold = cfg.get("threshold", 0.0)
    sch.patience = cfg.get("patience", 0)
    sch.cooldown = cfg.get("cooldown", 0)
    sch.reductions = cfg.get("reductions", 0)
    sch.wait = cfg.get("wait", 0)
    sch.cooldown_left = cfg.get("cooldown_left", 0)
    sch.has_best = bool(cfg.get("has_best", False))
    sch.best = cfg.get("best", 0.0)
    return 0


cdef dict _from_schedule(const bp_schedule *sch):
    return {
        "kind": SCHEDULES[<int>sch.kind], "interval": sch.interval,
        "step_size": sch.step_size, "gamma": sch.gamma, "power": sch.power,
        "warmup": sch.warmup, "period": sch.period, "min_lr": sch.min_lr,
        "threshold": sch.threshold, "patience": sch.patience,
        "cooldown": sch.cooldown, "reductions": sch.reductions,
        "wait": sch.wait, "cooldown_left": sch.cooldown_left,
        "has_best": bool(sch.has_best), "best": sch.best,
    }


def optimizer_defaults(str kind):
    """The settings bp_optimizer_defaults gives `kind`, as a dict."""
    cdef bp_optimizer o
    if kind not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer kind {kind!r}")
    _check(bp_optimizer_defaults(&o, <bp_optimizer_kind><int>OPTIMIZERS.index(
        kind)))
    return _from_optimizer(&o)


def optimizer_update(float[::1] w, float[::1] m, float[::1] s,
                     const float[::1] grad, dict opt, float lr,
                     float weight_decay, uint64_t step):
    """One bp_optimizer_update; m and s may be None when unused."""
    cdef bp_optimizer o
    cdef float *m_p = NULL if m is None else _f1(m)
    cdef float *s_p = NULL if s is None else _f1(s)
    cdef bp_status st
    _to_optimizer(&o, opt)
    with nogil:
        st = bp_optimizer_update(_f1(w), m_p, s_p, _cf1(grad), &o, lr,
                                 weight_decay, step, w.shape[0])
    _check(st)


def schedule_lr(dict sched, float lr, uint64_t step):
    """The rate of the update after `step` updates (sched None: constant)."""
    cdef bp_schedule sch
    cdef float out = 0.0
    if sched is None:
        _check(bp_schedule_lr(NULL, lr, step, &out))
        return out
    _to_schedule(&sch, sched)
    _check(bp_schedule_lr(&sch, lr, step, &out))
    return out


def schedule_observe(dict sched, double metric):
    """The schedule's settings and state after observing `metric`."""
    cdef bp_schedule sch
    _to_schedule(&sch, sched)
    _check(bp_schedule_observe(&sch, metric))
    return _from_schedule(&sch)


cdef int64_t _n_weights(const bp_layer_spec *spec, int64_t n_in) noexcept nogil:
    """The weights of a layer with n_in inputs: I x O for dense, gamma (O)
    for the normalisations, none for dropout."""
    if spec.kind == BP_LAYER_KIND_DENSE:
        return n_in * spec.units
    if spec.kind == BP_LAYER_KIND_DROPOUT:
        return 0
    return spec.units


cdef int _copy_out(real[::1] out, const real *src, int64_t n) except -1:
    if out.shape[0] != n:
        raise ValueError(f"expected {n} values, got {out.shape[0]}")
    if n > 0:
        memcpy(&out[0], src, n * sizeof(real))
    return 0


cdef int _copy_in(real *dst, const real[::1] values, int64_t n) except -1:
    if values.shape[0] != n:
        raise ValueError(f"expected {n} values, got {values.shape[0]}")
    if n > 0:
        memcpy(dst, &values[0], n * sizeof(real))
    return 0


def shuffle_order(int64_t[::1] out, uint64_t seed, uint64_t epoch):
    """Fill `out` with the row order of a shuffled epoch (seed, epoch)."""
    cdef bp_status s
    if out.shape[0] == 0:
        return
    with nogil:
        s = bp_shuffle_order(&out[0], out.shape[0], seed, epoch)
    _check(s)


# ---------------------------------------------------------------------------
# Epoch monitoring
# ---------------------------------------------------------------------------
#
# An EpochMonitor rides along the epochs of Net.train_epoch through the C
# core's per-batch hook. Without the GIL it adds up the epoch's running
# metric and, when asked, each layer's gradient and update sizes; it takes
# the GIL only to call a Python function after each batch, when one is
# given, or every `check_every` seconds to let Python run its signal
# handlers, so that Ctrl-C ends an epoch after the batch it is in.

cdef extern from "Python.h":
    ctypedef struct PyObject
    int PyErr_CheckSignals() except -1

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int timespec_get(timespec *ts, int base)
    int TIME_UTC

METRICS = (None, "argmax", "sign", "r2")

cdef enum:
    _METRIC_NONE = 0
    _METRIC_ARGMAX = 1
    _METRIC_SIGN = 2
    _METRIC_R2 = 3


cdef struct _monitor_state:
    PyObject *owner        # the EpochMonitor (borrowed)
    bint call_python       # call its on_batch after every batch
    double check_every     # seconds between signal checks; < 0: never
    double next_check
    bp_net *net
    int n_layers
    int64_t *layout        # per layer: weights' offset and count, biases'
    int64_t n_params
    # The running metric over the rows trained so far.
    int metric
    int64_t n_out
    int64_t correct
    double *sums           # 3 x O: sums of t, t^2 and (t - p)^2, shifted
    double *shift          # O: the first row's targets
    bint shifted
    # Layer statistics: sums over batches of each layer's squared weight
    # gradient norm and of its update-to-weight norm ratio.
    bint layer_stats
    double *grad_sq
    double *ratio
    double *prev           # n_params: the parameters before the batch
    # Ending the epoch at the first batch that leaves a bad parameter.
    bint stop_on_bad
    int bad_layer
    bint bad_gradient


cdef double _now() noexcept nogil:
    cdef timespec ts
    timespec_get(&ts, TIME_UTC)
    return <double>ts.tv_sec + 1e-9 * <double>ts.tv_nsec


cdef int64_t _argmax(const real *row, int64_t n) noexcept nogil:
    cdef int64_t j, best = 0
    for j in range(1, n):
        if row[j] > row[best]:
            best = j
    return best


cdef void _count_argmax(_monitor_state *st, const bp_batch_info *info,
                        const real *outputs, const real *y) noexcept nogil:
    # Without labels the targets are class probabilities: their most
    # likely class is the label.
    cdef int64_t r, label, n = st.n_out
    for r in range(info.rows):
        if info.labels != NULL:
            label = info.labels[r]
        else:
            label = _argmax(y + r * n, n)
        st.correct += _argmax(outputs + r * n, n) == label


cdef void _count_sign(_monitor_state *st, const bp_batch_info *info,
                      const real *outputs, const real *y) noexcept nogil:
    # Logits: sigmoid(z) > 0.5 exactly when z > 0.
    cdef int64_t r, j, n = st.n_out
    cdef bint right
    for r in range(info.rows):
        right = True
        for j in range(n):
            right &= y[r * n + j] == (1.0 if outputs[r * n + j] > 0 else 0.0)
        st.correct += right


cdef void _add_r2(_monitor_state *st, const bp_batch_info *info,
                  const real *outputs, const real *y) noexcept nogil:
    # Shifting by the first targets keeps the sums of squares accurate
    # for targets far from zero.
    cdef int64_t r, j, n = st.n_out
    cdef double t, p
    if not st.shifted:
        for j in range(n):
            st.shift[j] = y[j]
        st.shifted = True
    for r in range(info.rows):
        for j in range(n):
            t = y[r * n + j] - st.shift[j]
            p = outputs[r * n + j] - st.shift[j]
            st.sums[j] += t
            st.sums[n + j] += t * t
            st.sums[2 * n + j] += (t - p) * (t - p)


cdef void _add_metric(_monitor_state *st, const bp_batch_info *info,
                      const real *outputs, const real *y) noexcept nogil:
    if st.metric == _METRIC_ARGMAX:
        _count_argmax(st, info, outputs, y)
    elif st.metric == _METRIC_SIGN:
        _count_sign(st, info, outputs, y)
    elif st.metric == _METRIC_R2:
        _add_r2(st, info, outputs, y)


cdef void _add_layer_stats(_monitor_state *st, const real *params,
                           const real *grads) noexcept nogil:
    cdef int64_t i, w, count
    cdef double g2, d2, w2, d
    cdef int l
    for l in range(st.n_layers):
        w = st.layout[4 * l]
        count = st.layout[4 * l + 1]
        g2 = d2 = w2 = 0.0
        for i in range(w, w + count):
            g2 += <double>grads[i] * grads[i]
            d = <double>params[i] - st.prev[i]
            d2 += d * d
            w2 += <double>st.prev[i] * st.prev[i]
            st.prev[i] = params[i]
        st.grad_sq[l] += g2
        if w2 > 0:
            st.ratio[l] += (d2 / w2) ** 0.5


cdef bint _bad_layer_span(const real *values, const int64_t *at) noexcept nogil:
    return (_first_nonfinite(values + at[0], at[1]) >= 0
            or _first_nonfinite(values + at[2], at[3]) >= 0)


cdef bint _find_bad_layer(_monitor_state *st, const real *params,
                          const real *velocity, const real *grads) noexcept nogil:
    cdef int l
    for l in range(st.n_layers):
        if (_bad_layer_span(params, st.layout + 4 * l)
                or _bad_layer_span(velocity, st.layout + 4 * l)):
            st.bad_layer = l
            st.bad_gradient = _bad_layer_span(grads, st.layout + 4 * l)
            return True
    return False


cdef int _monitor_hook(void *user, const bp_batch_info *info) noexcept nogil:
    cdef _monitor_state *st = <_monitor_state *>user
    cdef bp_net *net = st.net
    cdef bint f64 = bp_net_dtype(net) == BP_DTYPE_F64
    cdef int stop = 0
    cdef double now
    if f64:
        _add_metric(st, info, info.outputs_f64, info.y_f64)
    else:
        _add_metric(st, info, info.outputs, info.y)
    if st.layer_stats and f64:
        _add_layer_stats(st, <const double *>bp_net_params_f64(net),
                         bp_net_grads_f64(net))
    elif st.layer_stats:
        _add_layer_stats(st, bp_net_params_const(net), bp_net_grads(net))
    if st.stop_on_bad and f64:
        stop = _find_bad_layer(st, <const double *>bp_net_params_f64(net),
                               <const double *>bp_net_velocity_f64(net),
                               bp_net_grads_f64(net))
    elif st.stop_on_bad:
        stop = _find_bad_layer(st, bp_net_params_const(net),
                               <const float *>bp_net_velocity(net),
                               bp_net_grads(net))
    if st.call_python:
        with gil:
            stop |= (<EpochMonitor><object>st.owner)._call(
                info.index, info.rows, info.loss)
    elif st.check_every >= 0:
        # A clock set back must not stop the checks.
        now = _now()
        if now >= st.next_check or now + st.check_every < st.next_check:
            st.next_check = now + st.check_every
            with gil:
                stop |= (<EpochMonitor><object>st.owner)._signals()
    return stop


cdef class EpochMonitor:
    """Watches the epochs of ``Net.train_epoch`` batch by batch.

    metric : None, "argmax", "sign" or "r2"
        The running metric over the rows trained: the fraction of rows
        whose largest output is the label (cross-entropy), whose logits'
        signs match 0/1 targets (binary cross-entropy), or the R^2 of the
        outputs (regression); each batch's outputs are those before its
        update.
    on_batch : callable(index, rows, loss), optional
        Called with the GIL after each batch; a true result ends the epoch.
    check_every : float
        Seconds between checks for signals such as Ctrl-C when there is no
        on_batch (which checks after every batch); < 0 never checks.
    layer_stats : bool
        Add up each layer's weight-gradient norm and update-to-weight ratio.
    stop_on_bad_params : bool
        End the epoch after the first batch that leaves a parameter or a
        momentum NaN or infinite (see bad_layer and bad_gradient).

    An exception raised by on_batch or a signal handler ends the epoch
    after its batch, keeping the updates made; train_epoch then raises it.
    """
    cdef _monitor_state st
    cdef object on_batch
    cdef object error
    cdef readonly int64_t batches
    cdef readonly int64_t rows
    cdef readonly bint stopped
    cdef readonly double mean_loss

    def __cinit__(self):
        self.st.layout = NULL
        self.st.sums = NULL
        self.st.shift = NULL
        self.st.grad_sq = NULL
        self.st.ratio = NULL
        self.st.prev = NULL

    def __init__(self, metric=None, on_batch=None, double check_every=0.02,
                 bint layer_stats=False, bint stop_on_bad_params=False):
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}")
        self.st.owner = <PyObject *>self
        self.st.metric = METRICS.index(metric)
        self.on_batch = on_batch
        self.st.call_python = on_batch is not None
        self.st.check_every = check_every
        self.st.layer_stats = layer_stats
        self.st.stop_on_bad = stop_on_bad_params
        self.st.n_layers = 0
        self.st.n_out = 0
        self.st.n_params = 0

    def __dealloc__(self):
        self._release()

    cdef void _release(self) noexcept:
        free(self.st.layout)
        free(self.st.sums)
        free(self.st.shift)
        free(self.st.grad_sq)
        free(self.st.ratio)
        free(self.st.prev)
        self.st.layout = NULL
        self.st.sums = self.st.shift = NULL
        self.st.grad_sq = self.st.ratio = NULL
        self.st.prev = NULL

    cdef int _begin(self, bp_net *net) except -1:
        """Sizes the state for `net` and zeroes the epoch's sums."""
        cdef int l, n_layers = bp_net_n_layers(net)
        cdef int64_t k
        cdef int64_t n_out = bp_net_n_outputs(net)
        cdef int64_t n_params = bp_net_n_params(net)
        cdef int64_t w_off, b_off, n_in = bp_net_n_inputs(net)
        cdef bp_layer_spec spec
        if (self.st.net != net or n_layers != self.st.n_layers
                or n_out != self.st.n_out or n_params != self.st.n_params
                or self.st.layout == NULL):
            self._release()
            self.st.layout = <int64_t *>malloc(4 * n_layers * sizeof(int64_t))
            self.st.sums = <double *>malloc(3 * n_out * sizeof(double))
            self.st.shift = <double *>malloc(n_out * sizeof(double))
            self.st.grad_sq = <double *>malloc(n_layers * sizeof(double))
            self.st.ratio = <double *>malloc(n_layers * sizeof(double))
            if self.st.layer_stats:
                self.st.prev = <double *>malloc(n_params * sizeof(double) + 1)
            if (self.st.layout == NULL or self.st.sums == NULL
                    or self.st.shift == NULL or self.st.grad_sq == NULL
                    or self.st.ratio == NULL
                    or (self.st.layer_stats and self.st.prev == NULL)):
                self._release()
                raise MemoryError()
            for l in range(n_layers):
                _check(bp_net_layer(net, l, &spec))
                _check(bp_net_layer_offsets(net, l, &w_off, &b_off))
                self.st.layout[4 * l] = w_off
                self.st.layout[4 * l + 1] = _n_weights(&spec, n_in)
                self.st.layout[4 * l + 2] = b_off
                self.st.layout[4 * l + 3] = (
                    0 if spec.kind == BP_LAYER_KIND_DROPOUT else spec.units)
                n_in = spec.units
            self.st.net = net
            self.st.n_layers = n_layers
            self.st.n_out = n_out
            self.st.n_params = n_params

        for l in range(3 * n_out):
            self.st.sums[l] = 0.0
        for l in range(n_layers):
            self.st.grad_sq[l] = 0.0
            self.st.ratio[l] = 0.0
        if self.st.layer_stats and bp_net_dtype(net) == BP_DTYPE_F64:
            memcpy(self.st.prev, bp_net_params_f64(net),
                   n_params * sizeof(double))
        elif self.st.layer_stats:
            for k in range(n_params):
                self.st.prev[k] = bp_net_params_const(net)[k]
        self.st.correct = 0
        self.st.shifted = False
        self.st.bad_layer = -1
        self.st.bad_gradient = False
        self.st.next_check = _now() + self.st.check_every
        self.error = None
        self.batches = self.rows = 0
        self.stopped = False
        self.mean_loss = 0.0
        return 0

    cdef void _end(self, const bp_epoch_report *report) noexcept:
        self.batches = report.batches
        self.rows = report.rows
        self.stopped = report.stopped
        self.mean_loss = report.mean_loss

    cdef int _call(self, int64_t index, int64_t rows, double loss) noexcept:
        try:
            if self.on_batch(index, rows, loss):
                return 1
            PyErr_CheckSignals()
        except BaseException as exc:
            self.error = exc
            return 1
        return 0

    cdef int _signals(self) noexcept:
        try:
            PyErr_CheckSignals()
        except BaseException as exc:
            self.error = exc
            return 1
        return 0

    def pop_error(self):
        """The exception that ended the last epoch early, or None; cleared."""
        error, self.error = self.error, None
        return error

    @property
    def bad_layer(self):
        """With stop_on_bad_params: the first layer (from 0) whose
        parameters or momentum became NaN or infinite, or None."""
        return self.st.bad_layer if self.st.bad_layer >= 0 else None

    @property
    def bad_gradient(self):
        """Whether bad_layer's gradient was NaN or infinite too."""
        return bool(self.st.bad_gradient)

    def metric_value(self):
        """The running metric over the rows trained, or None."""
        cdef int64_t j, n = self.st.n_out
        cdef double total, residual, score = 0.0
        if self.st.metric == _METRIC_NONE or self.rows == 0:
            return None
        if self.st.metric != _METRIC_R2:
            return self.st.correct / <double>self.rows
        for j in range(n):
            total = (self.st.sums[n + j]
                     - self.st.sums[j] * self.st.sums[j] / self.rows)
            residual = self.st.sums[2 * n + j]
            if total > 0:
                score += 1.0 - residual / total
            elif residual == 0:
                score += 1.0
        return score / n

    def layer_stats(self):
        """Per layer, over the last epoch's batches: (the root mean square
        of the weight-gradient norm, the mean ratio of the weight update's
        norm to the weights' norm)."""
        if not self.st.layer_stats or self.batches == 0:
            return None
        return [((self.st.grad_sq[l] / self.batches) ** 0.5,
                 self.st.ratio[l] / self.batches)
                for l in range(self.st.n_layers)]


cdef object _divergence(const bp_epoch_report *report):
    """The DivergenceError of an epoch that stopped on a non-finite loss,
    with the failing batch (from 0), first bad layer (or None) and loss."""
    exc = DivergenceError(bp_last_error().decode("utf-8", "replace"))
    exc.batch = report.batches
    exc.layer = report.bad_layer if report.bad_layer >= 0 else None
    exc.loss = report.mean_loss
    return exc


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

cdef class _FloatSlab:
    """A writable 1-D float32 (format "f") or float64 ("d") buffer over
    memory that `owner` (a Net) holds. Arrays made from it keep it, and
    so the Net, alive."""
    cdef object owner
    cdef void *data
    cdef char *format
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *buf, int flags):
        buf.buf = self.data
        buf.obj = self
        buf.len = self.shape[0] * self.strides[0]
        buf.readonly = 0
        buf.itemsize = self.strides[0]
        buf.format = self.format
        buf.ndim = 1
        buf.shape = self.shape
        buf.strides = self.strides
        buf.suboffsets = NULL
        buf.internal = NULL

    def __releasebuffer__(self, Py_buffer *buf):
        pass


cdef class Workspace:
    """Scratch for predicting up to ``max_batch`` rows at a time.

    One workspace serves one thread at a time.
    """
    cdef bp_workspace *ws
    cdef readonly int64_t max_batch
    cdef readonly Net net

    def __cinit__(self, Net net, int64_t max_batch):
        self.ws = NULL
        self.net = net
        self.max_batch = max_batch
        _check(bp_workspace_create(&self.ws, net.net, max_batch))

    def __dealloc__(self):
        bp_workspace_free(self.ws)


cdef class Net:
    """A network of dense layers owned by the C library."""
    cdef bp_net *net

    def __cinit__(self):
        self.net = NULL

    def __init__(self, int64_t n_inputs, units, activations, int loss,
                 params=None, no_bias=None, dict loss_options=None,
                 kinds=None, layer_options=None, str dtype="float32"):
        """`params` and `no_bias` hold each layer's activation parameter
        and bias flag (None: 0 and False); `loss_options` the options of
        the loss with code `loss` (see _to_loss; its kind is ignored);
        `kinds` each layer's kind code (None: all dense) and
        `layer_options` its (rate, eps, momentum) (None: zeros, the
        defaults); `dtype` is "float32" or "float64"."""
        cdef int n_layers = len(units)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, not {dtype!r}")
        cdef bp_layer_spec *specs
        cdef bp_loss_config cfg
        cdef const float[::1] cw = None
        cdef int i
        if n_layers != len(activations):
            raise ValueError("units and activations differ in length")
        if n_layers == 0:
            raise ValueError("a network needs at least one layer")
        options = dict(loss_options or {})
        options["kind"] = LOSSES[loss] if 0 <= loss < len(LOSSES) else "mse"
        if options.get("class_weights") is not None:
            cw = options["class_weights"]
            if cw.shape[0] != units[n_layers - 1]:
                raise ValueError(f"class_weights has {cw.shape[0]} values "
                                 f"for {units[n_layers - 1]} outputs")
        _to_loss(&cfg, options, cw)
        cfg.kind = <bp_loss>loss
        specs = <bp_layer_spec *>calloc(n_layers, sizeof(bp_layer_spec))
        if specs == NULL:
            raise MemoryError()
        try:
            for i in range(n_layers):
                specs[i].units = units[i]
                specs[i].activation = <bp_activation>activations[i]
                specs[i].activation_param = 0.0 if params is None else params[i]
                specs[i].no_bias = 0 if no_bias is None else bool(no_bias[i])
                if kinds is not None:
                    specs[i].kind = <bp_layer_kind>kinds[i]
                if layer_options is not None:
                    specs[i].rate, specs[i].eps, specs[i].momentum = layer_options[i]
            _check(bp_net_create_dtype(&self.net, n_inputs, specs, n_layers,
                                       &cfg, <bp_dtype><int>DTYPES.index(dtype)))
        finally:
            free(specs)

    def __dealloc__(self):
        bp_net_free(self.net)

    def clone(self):
        cdef Net other = Net.__new__(Net)
        _check(bp_net_clone(&other.net, self.net))
        return other

    def init(self, int init, uint64_t seed):
        cdef bp_status s
        with nogil:
            s = bp_net_init(self.net, <bp_init>init, seed)
        _check(s)

    def init_layer(self, int i, int init, float bias, uint64_t seed):
        """Re-draws layer i's weights with `init`; its biases become `bias`."""
        cdef bp_status s
        with nogil:
            s = bp_net_init_layer(self.net, i, <bp_init>init, bias, seed)
        _check(s)

    def layer_options(self):
        """[(activation parameter, has biases), ...], one per layer."""
        cdef bp_layer_spec spec
        result = []
        for i in range(bp_net_n_layers(self.net)):
            _check(bp_net_layer(self.net, i, &spec))
            result.append((spec.activation_param, not spec.no_bias))
        return result

    def layer_kinds(self):
        """[(kind code, rate, eps, momentum), ...], one per layer, with
        the defaults resolved."""
        cdef bp_layer_spec spec
        result = []
        for i in range(bp_net_n_layers(self.net)):
            _check(bp_net_layer(self.net, i, &spec))
            result.append((<int>spec.kind, spec.rate, spec.eps, spec.momentum))
        return result

    cdef void *_running(self, int i) noexcept:
        """Batch norm layer i's running averages of either dtype, or NULL."""
        if not 0 <= i < bp_net_n_layers(self.net):
            return NULL
        if self._f64():
            return bp_net_running_stats_f64(self.net, i)
        return bp_net_running_stats(self.net, i)

    def get_running(self, int i, out):
        """Copies batch norm layer i's running mean and variance (2 x
        units) into `out`; False for a layer without them."""
        cdef void *src = self._running(i)
        cdef bp_layer_spec spec
        if src == NULL:
            return False
        _check(bp_net_layer(self.net, i, &spec))
        if self._f64():
            _copy_out[double](out, <double *>src, 2 * spec.units)
        else:
            _copy_out[float](out, <float *>src, 2 * spec.units)
        return True

    def set_running(self, int i, values):
        """Sets batch norm layer i's running mean and variance."""
        cdef void *dst = self._running(i)
        cdef bp_layer_spec spec
        if dst == NULL:
            raise ValueError(f"layer {i} has no running averages")
        _check(bp_net_layer(self.net, i, &spec))
        if self._f64():
            _copy_in[double](<double *>dst, values, 2 * spec.units)
        else:
            _copy_in[float](<float *>dst, values, 2 * spec.units)

    @property
    def seed(self):
        """The seed of the dropout masks."""
        return bp_net_seed(self.net)

    @seed.setter
    def seed(self, uint64_t value):
        _check(bp_net_set_seed(self.net, value))

    def loss_options(self):
        """The loss with its options, as loss_compute takes them."""
        cdef bp_loss_config cfg
        _check(bp_net_get_loss_config(self.net, &cfg))
        return _from_loss(&cfg, bp_net_n_outputs(self.net))

    @property
    def n_inputs(self):
        return bp_net_n_inputs(self.net)

    @property
    def n_outputs(self):
        return bp_net_n_outputs(self.net)

    @property
    def n_params(self):
        return bp_net_n_params(self.net)

    @property
    def loss(self):
        return <int>bp_net_loss(self.net)

    def layers(self):
        """[(units, activation code, weight offset, bias offset), ...]"""
        cdef bp_layer_spec spec
        cdef int64_t w_off, b_off
        result = []
        for i in range(bp_net_n_layers(self.net)):
            _check(bp_net_layer(self.net, i, &spec))
            _check(bp_net_layer_offsets(self.net, i, &w_off, &b_off))
            result.append((spec.units, <int>spec.activation, w_off, b_off))
        return result

    def spans(self):
        """[(weight offset, weights, bias offset, biases), ...]: where each
        layer's parameters lie in the slabs. The bias count is the room the
        layer keeps for biases (or beta), held at zero without them."""
        cdef bp_layer_spec spec
        cdef int64_t w_off, b_off, n_in = bp_net_n_inputs(self.net)
        result = []
        for i in range(bp_net_n_layers(self.net)):
            _check(bp_net_layer(self.net, i, &spec))
            _check(bp_net_layer_offsets(self.net, i, &w_off, &b_off))
            n_b = 0 if spec.kind == BP_LAYER_KIND_DROPOUT else spec.units
            result.append((w_off, _n_weights(&spec, n_in), b_off, n_b))
            n_in = spec.units
        return result

    @property
    def dtype(self):
        """"float32" or "float64": the type of every array the methods take."""
        return DTYPES[<int>bp_net_dtype(self.net)]

    cdef bint _f64(self):
        return bp_net_dtype(self.net) == BP_DTYPE_F64

    def get_params(self, out):
        cdef int64_t n = bp_net_n_params(self.net)
        if self._f64():
            _copy_out[double](out, bp_net_params_f64(self.net), n)
        else:
            _copy_out[float](out, bp_net_params_const(self.net), n)

    def set_params(self, values):
        cdef int64_t n = bp_net_n_params(self.net)
        if self._f64():
            _copy_in[double](bp_net_params_f64(self.net), values, n)
        else:
            _copy_in[float](bp_net_params(self.net), values, n)

    def get_grads(self, out):
        cdef int64_t n = bp_net_n_params(self.net)
        if self._f64():
            _copy_out[double](out, bp_net_grads_f64(self.net), n)
        else:
            _copy_out[float](out, bp_net_grads(self.net), n)

    def grads_array(self):
        """The gradient slab as a writable NumPy array of the network's
        dtype over its own memory, without a copy; it keeps this Net
        alive."""
        import numpy
        cdef _FloatSlab slab = _FloatSlab.__new__(_FloatSlab)
        slab.owner = self
        slab.shape[0] = bp_net_n_params(self.net)
        if self._f64():
            slab.data = bp_net_grads_mut_f64(self.net)
            slab.format = b"d"
            slab.strides[0] = sizeof(double)
        else:
            slab.data = bp_net_grads_mut(self.net)
            slab.format = b"f"
            slab.strides[0] = sizeof(float)
        return numpy.asarray(slab)

    def apply_gradients(self, float lr, float momentum, bint nesterov, float l2):
        """One SGD step from the gradient slab as it stands."""
        cdef bp_status s
        cdef bp_sgd_config cfg
        cfg.lr = lr
        cfg.momentum = momentum
        cfg.nesterov = nesterov
        cfg.l2 = l2
        with nogil:
            s = bp_net_apply_gradients(self.net, &cfg)
        _check(s)

    def get_velocity(self, out):
        self.get_state(0, out)

    def set_velocity(self, values):
        self.set_state(0, values)

    cdef void *_state(self, int i, int create) except? NULL:
        """Optimizer state slab `i` of either dtype (NULL if absent)."""
        cdef float *slab = NULL
        cdef double *slab_d = NULL
        if self._f64():
            _check(bp_net_optimizer_state_f64(self.net, i, create, &slab_d))
            return slab_d
        _check(bp_net_optimizer_state(self.net, i, create, &slab))
        return slab

    def has_state(self, int i):
        """Whether optimizer state slab `i` (0 or 1) exists yet."""
        return self._state(i, 0) != NULL

    def get_state(self, int i, out):
        """Copies optimizer state slab `i` (zeros if it does not exist)."""
        cdef void *slab = self._state(i, 0)
        cdef int64_t n = bp_net_n_params(self.net)
        if slab == NULL:
            if len(out) != n:
                raise ValueError(f"expected {n} values, got {len(out)}")
            out[:] = 0.0
        elif self._f64():
            _copy_out[double](out, <double *>slab, n)
        else:
            _copy_out[float](out, <float *>slab, n)

    def set_state(self, int i, values):
        """Writes optimizer state slab `i`, creating it if needed."""
        cdef void *slab = self._state(i, 1)
        cdef int64_t n = bp_net_n_params(self.net)
        if self._f64():
            _copy_in[double](<double *>slab, values, n)
        else:
            _copy_in[float](<float *>slab, values, n)

    @property
    def optimizer_step(self):
        """Updates made: the step schedules and Adam's bias correction see."""
        return bp_net_optimizer_step(self.net)

    @optimizer_step.setter
    def optimizer_step(self, uint64_t step):
        _check(bp_net_set_optimizer_step(self.net, step))

    def apply_update(self, dict opt, dict sched=None):
        """One update by any optimizer from the gradient slab as it stands."""
        cdef bp_optimizer o
        cdef bp_schedule sch
        cdef bp_schedule *sch_p = NULL
        cdef bp_status s
        _to_optimizer(&o, opt)
        if sched is not None:
            _to_schedule(&sch, sched)
            sch_p = &sch
        with nogil:
            s = bp_net_apply_update(self.net, &o, sch_p)
        _check(s)

    cdef object _epoch(self, x, y, labels, int64_t batch_size, bint shuffle,
                       uint64_t seed, uint64_t epoch, bp_optimizer *o,
                       bp_schedule *sch_p, bint sgd, EpochMonitor monitor,
                       weights):
        """One epoch of either dtype; `sgd` marks a plain SGD epoch."""
        cdef bp_status s
        cdef bp_epoch_report report
        cdef bp_batch_hook hook = NULL
        cdef void *user = NULL
        if monitor is not None:
            monitor._begin(self.net)
            hook = _monitor_hook
            user = &monitor.st
        if self._f64():
            s = _epoch[double](self.net, x, y, labels, batch_size, shuffle,
                               seed, epoch, o, sch_p, sgd, hook, user,
                               weights, &report)
        else:
            s = _epoch[float](self.net, x, y, labels, batch_size, shuffle,
                              seed, epoch, o, sch_p, sgd, hook, user,
                              weights, &report)
        if monitor is not None:
            monitor._end(&report)
        if s == BP_STATUS_NOT_FINITE:
            raise _divergence(&report)
        _check(s)
        if monitor is not None and monitor.error is not None:
            raise monitor.pop_error()
        return report.mean_loss

    def train_epoch_opt(self, x, y, labels, int64_t batch_size,
                        bint shuffle, uint64_t seed, uint64_t epoch,
                        dict opt, dict sched=None,
                        EpochMonitor monitor=None, weights=None):
        """train_epoch with any optimizer and a schedule (None: constant)."""
        cdef bp_optimizer o
        cdef bp_schedule sch
        cdef bp_schedule *sch_p = NULL
        _to_optimizer(&o, opt)
        if sched is not None:
            _to_schedule(&sch, sched)
            sch_p = &sch
        return self._epoch(x, y, labels, batch_size, shuffle, seed, epoch,
                           &o, sch_p, False, monitor, weights)

    def gradient(self, x, y, labels, weights=None):
        if self._f64():
            return _gradient[double](self.net, x, y, labels, weights)
        return _gradient[float](self.net, x, y, labels, weights)

    def layer_output(self, int i, out):
        """Copies layer i's output in the last training call's forward
        pass into `out`, shaped (rows of that call, units of layer i)."""
        cdef const void *src
        cdef bp_layer_spec spec
        cdef int64_t rows = out.shape[0]
        _check(bp_net_layer(self.net, i, &spec))
        if self._f64():
            src = bp_net_layer_output_f64(self.net, i, rows)
        else:
            src = bp_net_layer_output(self.net, i, rows)
        if src == NULL or out.shape[1] != spec.units:
            raise ValueError(f"no output of layer {i} for {rows} rows "
                             f"and {out.shape[1]} units")
        if self._f64():
            _copy_out[double](out.reshape(-1), <const double *>src,
                              rows * spec.units)
        else:
            _copy_out[float](out.reshape(-1), <const float *>src,
                             rows * spec.units)

    def train_epoch(self, x, y, labels, int64_t batch_size,
                    bint shuffle, uint64_t seed, uint64_t epoch, float lr,
                    float momentum, bint nesterov, float l2,
                    EpochMonitor monitor=None, weights=None):
        """One epoch; the mean loss of the batches trained. A monitor
        watches its batches and may end it early; an exception it caught
        is raised after the epoch, with the updates made kept. Sample
        weights, when given, scale each row's loss."""
        cdef bp_optimizer o
        # SGD as a bp_optimizer gives the same updates as bp_sgd_config.
        memset(&o, 0, sizeof(bp_optimizer))
        o.kind = BP_OPTIMIZER_SGD
        o.lr = lr
        o.momentum = momentum
        o.nesterov = nesterov
        o.weight_decay = l2
        return self._epoch(x, y, labels, batch_size, shuffle, seed, epoch,
                           &o, NULL, True, monitor, weights)

    def predict(self, Workspace ws, out, x):
        if self._f64():
            _predict[double](self.net, ws.ws, out, x)
        else:
            _predict[float](self.net, ws.ws, out, x)

    def evaluate(self, Workspace ws, x, y, labels, weights=None):
        if self._f64():
            return _evaluate[double](self.net, ws.ws, x, y, labels, weights)
        return _evaluate[float](self.net, ws.ws, x, y, labels, weights)


# The data calls of either dtype, chosen by the caller with [float] or
# [double] after the network's dtype; every C call releases the GIL.

cdef inline real *_r2(real[:, ::1] a) noexcept nogil:
    return (&a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0
            else <real *>_empty_f64)


cdef inline const real *_cr2(const real[:, ::1] a) noexcept nogil:
    """NULL for None, else the data (a dummy when empty)."""
    if a is None:
        return NULL
    return (&a[0, 0] if a.shape[0] > 0 and a.shape[1] > 0
            else <const real *>_empty_f64)


cdef inline const real *_cr1(const real[::1] a) noexcept nogil:
    """NULL for None, else the data (a dummy when empty)."""
    if a is None:
        return NULL
    return &a[0] if a.shape[0] > 0 else <const real *>_empty_f64


cdef inline const int32_t *_labels(const int32_t[::1] a) noexcept nogil:
    return NULL if a is None else _ci1(a)


cdef bp_status _epoch(bp_net *net, const real[:, ::1] x,
                      const real[:, ::1] y, const int32_t[::1] labels,
                      int64_t batch_size, bint shuffle, uint64_t seed,
                      uint64_t epoch, bp_optimizer *o, bp_schedule *sch_p,
                      bint sgd, bp_batch_hook hook, void *user,
                      const real[::1] weights,
                      bp_epoch_report *report) except *:
    """One epoch; a plain SGD epoch (`sgd`) without weights of a float32
    network runs through bp_net_train_epoch_ex."""
    cdef const real *y_p = _cr2(y)
    cdef const int32_t *l_p = _labels(labels)
    cdef const real *w_p = _cr1(weights)
    cdef bp_sgd_config cfg
    cdef bp_status s
    cfg.lr = o.lr
    cfg.momentum = o.momentum
    cfg.nesterov = o.nesterov
    cfg.l2 = o.weight_decay
    with nogil:
        if real is double:
            s = bp_net_train_epoch_f64(net, o, sch_p, _cr2(x), y_p, l_p, w_p,
                                       x.shape[0], batch_size, shuffle, seed,
                                       epoch, hook, user, report)
        elif w_p != NULL:
            s = bp_net_train_epoch_weighted(
                net, o, sch_p, _cr2(x), y_p, l_p, w_p, x.shape[0],
                batch_size, shuffle, seed, epoch, hook, user, report)
        elif sgd:
            s = bp_net_train_epoch_ex(net, &cfg, _cr2(x), y_p, l_p,
                                      x.shape[0], batch_size, shuffle, seed,
                                      epoch, hook, user, report)
        else:
            s = bp_net_train_epoch_opt(net, o, sch_p, _cr2(x), y_p, l_p,
                                       x.shape[0], batch_size, shuffle, seed,
                                       epoch, hook, user, report)
    return s


cdef double _gradient(bp_net *net, const real[:, ::1] x,
                      const real[:, ::1] y, const int32_t[::1] labels,
                      const real[::1] weights) except? -1:
    cdef double loss = 0.0
    cdef const real *y_p = _cr2(y)
    cdef const int32_t *l_p = _labels(labels)
    cdef const real *w_p = _cr1(weights)
    cdef bp_status s
    with nogil:
        if real is double:
            s = bp_net_gradient_f64(net, _cr2(x), y_p, l_p, w_p, x.shape[0],
                                    &loss)
        else:
            s = bp_net_gradient_weighted(net, _cr2(x), y_p, l_p, w_p,
                                         x.shape[0], &loss)
    _check(s)
    return loss


cdef int _predict(bp_net *net, bp_workspace *ws, real[:, ::1] out,
                  const real[:, ::1] x) except -1:
    cdef bp_status s
    with nogil:
        if real is double:
            s = bp_net_predict_f64(net, ws, _r2(out), _cr2(x), x.shape[0])
        else:
            s = bp_net_predict(net, ws, _r2(out), _cr2(x), x.shape[0])
    return _check(s)


cdef double _evaluate(bp_net *net, bp_workspace *ws, const real[:, ::1] x,
                      const real[:, ::1] y, const int32_t[::1] labels,
                      const real[::1] weights) except? -1:
    cdef double loss = 0.0
    cdef const real *y_p = _cr2(y)
    cdef const int32_t *l_p = _labels(labels)
    cdef const real *w_p = _cr1(weights)
    cdef bp_status s
    with nogil:
        if real is double:
            s = bp_net_evaluate_f64(net, ws, _cr2(x), y_p, l_p, w_p,
                                    x.shape[0], &loss)
        else:
            s = bp_net_evaluate_weighted(net, ws, _cr2(x), y_p, l_p, w_p,
                                         x.shape[0], &loss)
    _check(s)
    return loss


# ---------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------
#
# The Python side describes a file's optional sections as a dict, the
# "state": any of
#   "optimizer": an optimizer dict (see "Optimizers and schedules")
#   "schedule":  a schedule dict, or None, with "optimizer" only
#   "progress":  (epochs, steps)
#   "rng":       (seed, init code, next shuffle stream)
#   "labels":    ("int", int64 array) | ("float", float64 array)
#                | ("str", list of str)
#   "scaling":   (mean, scale), float64 arrays of one value per input
#   "metadata":  {str: str}
# The caller checks types and sizes; the C setters check values.

MODEL_FORMAT_VERSION = BPROP_MODEL_FORMAT_VERSION


cdef int _set_labels(bp_model_extras *ex, str kind, values) except -1:
    cdef const int64_t[::1] ints
    cdef const double[::1] floats
    cdef const char **texts
    cdef int64_t i, n = len(values)
    if n == 0:
        return 0
    if kind == "int":
        ints = values
        _check(bp_model_extras_set_labels_int(ex, &ints[0], n))
    elif kind == "float":
        floats = values
        _check(bp_model_extras_set_labels_float(ex, &floats[0], n))
    else:
        encoded = [value.encode("utf-8") for value in values]
        texts = <const char **>malloc(n * sizeof(const char *))
        if texts == NULL:
            raise MemoryError()
        try:
            for i in range(n):
                texts[i] = <bytes>encoded[i]
            _check(bp_model_extras_set_labels_string(ex, texts, n))
        finally:
            free(texts)
    return 0


cdef bp_model_extras *_extras_new(dict state) except NULL:
    """New extras holding `state`; the caller frees them."""
    cdef bp_model_extras *ex = NULL
    cdef bp_optimizer opt
    cdef bp_schedule sch
    cdef bp_schedule *sch_p = NULL
    cdef const double[::1] mean
    cdef const double[::1] scale
    _check(bp_model_extras_create(&ex))
    try:
        if state.get("optimizer") is not None:
            _to_optimizer(&opt, state["optimizer"])
            if state.get("schedule") is not None:
                _to_schedule(&sch, state["schedule"])
                sch_p = &sch
            _check(bp_model_extras_set_opt(ex, &opt, sch_p))
        if state.get("progress") is not None:
            epochs, steps = state["progress"]
            _check(bp_model_extras_set_progress(ex, epochs, steps))
        if state.get("rng") is not None:
            seed, init, stream = state["rng"]
            _check(bp_model_extras_set_rng(ex, seed, <bp_init><int>init,
                                           stream))
        if state.get("labels") is not None:
            _set_labels(ex, state["labels"][0], state["labels"][1])
        if state.get("scaling") is not None:
            mean, scale = state["scaling"]
            if mean.shape[0] != scale.shape[0]:
                raise ValueError("mean and scale differ in length")
            if mean.shape[0] > 0:
                _check(bp_model_extras_set_scaling(ex, &mean[0], &scale[0],
                                                   mean.shape[0]))
        for key, value in (state.get("metadata") or {}).items():
            _check(bp_model_extras_set_meta(ex, key.encode("utf-8"),
                                            value.encode("utf-8")))
    except BaseException:
        bp_model_extras_free(ex)
        raise
    return ex


cdef dict _extras_state(const bp_model_extras *ex):
    """The state that `ex` holds, as _extras_new takes it."""
    cdef bp_optimizer opt
    cdef bp_schedule sch
    cdef uint64_t a, b, c
    cdef bp_init init
    cdef const double *mean
    cdef const double *scale
    cdef const int64_t *ints
    cdef const double *floats
    cdef int64_t i, n
    state = {}
    if bp_model_extras_get_opt(ex, &opt, &sch):
        state["optimizer"] = _from_optimizer(&opt)
        state["schedule"] = _from_schedule(&sch)
    if bp_model_extras_get_progress(ex, &a, &b):
        state["progress"] = (a, b)
    if bp_model_extras_get_rng(ex, &a, &init, &c):
        state["rng"] = (a, <int>init, c)

    n = bp_model_extras_n_labels(ex)
    kind = bp_model_extras_label_type(ex)
    if kind == BP_LABEL_TYPE_INT:
        ints = bp_model_extras_labels_int(ex)
        state["labels"] = ("int", [ints[i] for i in range(n)])
    elif kind == BP_LABEL_TYPE_FLOAT:
        floats = bp_model_extras_labels_float(ex)
        state["labels"] = ("float", [floats[i] for i in range(n)])
    elif kind == BP_LABEL_TYPE_STRING:
        state["labels"] = ("str", [
            bp_model_extras_label_string(ex, i).decode("utf-8")
            for i in range(n)])

    n = bp_model_extras_get_scaling(ex, &mean, &scale)
    if n > 0:
        state["scaling"] = ([mean[i] for i in range(n)],
                            [scale[i] for i in range(n)])
    state["metadata"] = {
        bp_model_extras_meta_key(ex, i).decode("utf-8"):
            bp_model_extras_meta_value(ex, i).decode("utf-8")
        for i in range(bp_model_extras_n_meta(ex))}
    return state


def net_save(Net net, bytes path, dict state):
    """Writes `net` and `state` to the file `path` (file system bytes)."""
    cdef const char *c_path = path
    cdef bp_model_extras *ex = _extras_new(state)
    cdef bp_status s
    with nogil:
        s = bp_net_save(net.net, c_path, ex)
    bp_model_extras_free(ex)
    _check(s)


def net_load(bytes path):
    """(Net, state) read from the file `path` (file system bytes)."""
    cdef const char *c_path = path
    cdef Net net = Net.__new__(Net)
    cdef bp_model_extras *ex = NULL
    cdef bp_status s
    with nogil:
        s = bp_net_load(&net.net, c_path, &ex)
    _check(s)
    try:
        return net, _extras_state(ex)
    finally:
        bp_model_extras_free(ex)


def net_dumps(Net net, dict state):
    """The bytes of the model file net_save would write."""
    cdef bp_model_extras *ex = _extras_new(state)
    cdef size_t size = 0
    cdef unsigned char[::1] view
    cdef bp_status s
    try:
        with nogil:
            s = bp_net_save_buffer(net.net, ex, NULL, 0, &size)
        _check(s)
        out = bytearray(size)
        view = out
        with nogil:
            s = bp_net_save_buffer(net.net, ex, &view[0], size, &size)
        _check(s)
    finally:
        bp_model_extras_free(ex)
    return bytes(out)


def net_loads(const unsigned char[::1] data):
    """(Net, state) read from the bytes of a model file."""
    cdef Net net = Net.__new__(Net)
    cdef bp_model_extras *ex = NULL
    cdef const unsigned char *p = &data[0] if data.shape[0] > 0 else NULL
    cdef bp_status s
    with nogil:
        s = bp_net_load_buffer(&net.net, p, data.shape[0], &ex)
    _check(s)
    try:
        return net, _extras_state(ex)
    finally:
        bp_model_extras_free(ex)
