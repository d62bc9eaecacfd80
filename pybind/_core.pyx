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


def shuffle_order(int64_t[::1] out, uint64_t seed, uint64_t epoch):
    """Fill `out` with the row order of a shuffled epoch (seed, epoch)."""
    cdef bp_status s
    if out.shape[0] == 0:
        return
    with nogil:
        s = bp_shuffle_order(&out[0], out.shape[0], seed, epoch)
    _check(s)


# ---------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------

cdef class _FloatSlab:
    """A writable 1-D float32 buffer over memory that `owner` (a Net)
    holds. Arrays made from it keep it, and so the Net, alive."""
    cdef object owner
    cdef float *data
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]

    def __getbuffer__(self, Py_buffer *buf, int flags):
        buf.buf = self.data
        buf.obj = self
        buf.len = self.shape[0] * sizeof(float)
        buf.readonly = 0
        buf.itemsize = sizeof(float)
        buf.format = b"f"
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

    def grads_array(self):
        """The gradient slab as a writable float32 NumPy array over the
        network's own memory, without a copy; it keeps this Net alive."""
        import numpy
        cdef _FloatSlab slab = _FloatSlab.__new__(_FloatSlab)
        slab.owner = self
        slab.data = bp_net_grads_mut(self.net)
        slab.shape[0] = bp_net_n_params(self.net)
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


# ---------------------------------------------------------------------------
# Model files
# ---------------------------------------------------------------------------
#
# The Python side describes a file's optional sections as a dict, the
# "state": any of
#   "optimizer": (lr, momentum, nesterov, l2)
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
    cdef bp_sgd_config cfg
    cdef const double[::1] mean
    cdef const double[::1] scale
    _check(bp_model_extras_create(&ex))
    try:
        if state.get("optimizer") is not None:
            cfg.lr, cfg.momentum, cfg.nesterov, cfg.l2 = state["optimizer"]
            _check(bp_model_extras_set_optimizer(ex, &cfg))
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
    cdef bp_sgd_config cfg
    cdef uint64_t a, b, c
    cdef bp_init init
    cdef const double *mean
    cdef const double *scale
    cdef const int64_t *ints
    cdef const double *floats
    cdef int64_t i, n
    state = {}
    if bp_model_extras_get_optimizer(ex, &cfg):
        state["optimizer"] = (cfg.lr, cfg.momentum, bool(cfg.nesterov), cfg.l2)
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
