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
"""
from libc.math cimport isfinite
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from libbprop cimport *

cdef float _empty_f32[1]
cdef int32_t _empty_i32[1]


class DivergenceError(FloatingPointError):
    """Training produced a loss or value that is NaN or infinite."""


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
ACTIVATIONS = ("identity", "relu", "sigmoid", "tanh", "softmax")
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")
INITS = ("auto", "he", "glorot")


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


def has_openmp():
    return bool(bp_has_openmp())


# ---------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------

cdef enum:
    # Values tested per pass of the branch-free inner loop.
    _FINITE_BLOCK = 4096


cdef int64_t _first_nonfinite(const float *x, int64_t n) noexcept nogil:
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


def first_nonfinite(const float[::1] values):
    """Index of the first NaN or infinity in `values`, or -1."""
    cdef int64_t at
    with nogil:
        at = _first_nonfinite(_cf1(values), values.shape[0])
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


def activation_forward(float[:, ::1] y, const float[:, ::1] x, int act):
    cdef bp_status s
    with nogil:
        s = bp_activation_forward(_f2(y), _cf2(x), <bp_activation>act,
                                  x.shape[0], x.shape[1])
    _check(s)


def activation_backward(float[:, ::1] dx, const float[:, ::1] dy,
                        const float[:, ::1] y, int act):
    cdef bp_status s
    with nogil:
        s = bp_activation_backward(_f2(dx), _cf2(dy), _cf2(y),
                                   <bp_activation>act, y.shape[0], y.shape[1])
    _check(s)


def dense_forward(float[:, ::1] y, const float[:, ::1] x,
                  const float[:, ::1] w, const float[::1] b, int act):
    cdef const float *bias = NULL if b is None else _cf1(b)
    cdef bp_status s
    with nogil:
        s = bp_dense_forward(_f2(y), _cf2(x), _cf2(w), bias,
                             <bp_activation>act, x.shape[0], w.shape[0],
                             w.shape[1])
    _check(s)


def dense_backward(float[:, ::1] dx, float[:, ::1] dw, float[::1] db,
                   float[:, ::1] dz, const float[:, ::1] dy,
                   const float[:, ::1] x, const float[:, ::1] w,
                   const float[:, ::1] y, int act):
    cdef float *dx_p = NULL if dx is None else _f2(dx)
    cdef float *db_p = NULL if db is None else _f1(db)
    cdef bp_status s
    with nogil:
        s = bp_dense_backward(dx_p, _f2(dw), db_p, _f2(dz), _cf2(dy), _cf2(x),
                              _cf2(w), _cf2(y), <bp_activation>act,
                              x.shape[0], w.shape[0], w.shape[1])
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


cdef int _copy_out(float[::1] out, const float *src, int64_t n) except -1:
    if out.shape[0] != n:
        raise ValueError(f"expected {n} values, got {out.shape[0]}")
    if n > 0:
        memcpy(&out[0], src, n * sizeof(float))
    return 0


cdef int _copy_in(float *dst, const float[::1] values, int64_t n) except -1:
    if values.shape[0] != n:
        raise ValueError(f"expected {n} values, got {values.shape[0]}")
    if n > 0:
        memcpy(dst, &values[0], n * sizeof(float))
    return 0


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

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

    def __init__(self, int64_t n_inputs, units, activations, int loss):
        cdef int n_layers = len(units)
        cdef bp_layer_spec *specs
        cdef int i
        if n_layers != len(activations):
            raise ValueError("units and activations differ in length")
        if n_layers == 0:
            raise ValueError("a network needs at least one layer")
        specs = <bp_layer_spec *>malloc(n_layers * sizeof(bp_layer_spec))
        if specs == NULL:
            raise MemoryError()
        try:
            for i in range(n_layers):
                specs[i].units = units[i]
                specs[i].activation = <bp_activation>activations[i]
            _check(bp_net_create(&self.net, n_inputs, specs, n_layers,
                                 <bp_loss>loss))
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

    def get_params(self, float[::1] out):
        _copy_out(out, bp_net_params_const(self.net), bp_net_n_params(self.net))

    def set_params(self, const float[::1] values):
        _copy_in(bp_net_params(self.net), values, bp_net_n_params(self.net))

    def get_grads(self, float[::1] out):
        _copy_out(out, bp_net_grads(self.net), bp_net_n_params(self.net))

    def get_velocity(self, float[::1] out):
        _copy_out(out, bp_net_velocity(self.net), bp_net_n_params(self.net))

    def set_velocity(self, const float[::1] values):
        _copy_in(bp_net_velocity(self.net), values, bp_net_n_params(self.net))

    def gradient(self, const float[:, ::1] x, const float[:, ::1] y,
                 const int32_t[::1] labels):
        cdef double loss = 0.0
        cdef const float *y_p = NULL if y is None else _cf2(y)
        cdef const int32_t *l_p = NULL if labels is None else _ci1(labels)
        cdef bp_status s
        with nogil:
            s = bp_net_gradient(self.net, _cf2(x), y_p, l_p, x.shape[0], &loss)
        _check(s)
        return loss

    def train_epoch(self, const float[:, ::1] x, const float[:, ::1] y,
                    const int32_t[::1] labels, int64_t batch_size,
                    bint shuffle, uint64_t seed, uint64_t epoch, float lr,
                    float momentum, bint nesterov, float l2):
        cdef double loss = 0.0
        cdef const float *y_p = NULL if y is None else _cf2(y)
        cdef const int32_t *l_p = NULL if labels is None else _ci1(labels)
        cdef bp_status s
        cdef bp_sgd_config cfg
        cfg.lr = lr
        cfg.momentum = momentum
        cfg.nesterov = nesterov
        cfg.l2 = l2
        with nogil:
            s = bp_net_train_epoch(self.net, &cfg, _cf2(x), y_p, l_p,
                                   x.shape[0], batch_size, shuffle, seed,
                                   epoch, &loss)
        _check(s)
        return loss

    def predict(self, Workspace ws, float[:, ::1] out, const float[:, ::1] x):
        cdef bp_status s
        with nogil:
            s = bp_net_predict(self.net, ws.ws, _f2(out), _cf2(x), x.shape[0])
        _check(s)

    def evaluate(self, Workspace ws, const float[:, ::1] x,
                 const float[:, ::1] y, const int32_t[::1] labels):
        cdef double loss = 0.0
        cdef const float *y_p = NULL if y is None else _cf2(y)
        cdef const int32_t *l_p = NULL if labels is None else _ci1(labels)
        cdef bp_status s
        with nogil:
            s = bp_net_evaluate(self.net, ws.ws, _cf2(x), y_p, l_p,
                                x.shape[0], &loss)
        _check(s)
        return loss
