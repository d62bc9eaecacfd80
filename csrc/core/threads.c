#include "core/threads.h"

#include "core/error.h"
#include "core/memory.h"

#include <stdatomic.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#if defined(__unix__) || defined(__APPLE__)
#define BP_HAVE_PTHREAD 1
#include <pthread.h>
#endif

/*
 * Below this much work per thread, waking another thread costs more
 * than it saves (a parallel region costs a few microseconds).
 */
#define BP_FLOPS_PER_THREAD 4.0e6

#if defined(_OPENMP)
/*
 * NOTE: OpenMP keeps its thread count per calling thread, so
 * omp_set_num_threads alone would not reach kernels called from other
 * threads. The count set by bp_set_num_threads is kept here for the
 * whole process; 0 means "not set" and leaves OpenMP's default.
 */
static atomic_int bp_num_threads = 0;

/* Nonzero in a child created by fork(): it keeps one thread for good. */
static atomic_int bp_forked_child = 0;
#endif

/*
 * The calling thread's own count, set by bp_set_local_num_threads; 0
 * means "none" and defers to the process-wide count. Several threads
 * can then each train a network with their own number of threads.
 */
static _Thread_local int bp_local_num_threads = 0;

#if defined(_OPENMP) && defined(BP_HAVE_PTHREAD)
static atomic_int bp_fork_handler_registered = 0;

/*
 * NOTE: libgomp's thread pool does not survive fork(): the first
 * parallel region in the child would wait for threads that no longer
 * exist. One thread runs regions inline and never touches the pool.
 */
static void bp_after_fork_in_child(void)
{
    atomic_store(&bp_forked_child, 1);
    omp_set_num_threads(1);
    atomic_store(&bp_num_threads, 1);
    bp_local_num_threads = 0;
}

/*
 * NOTE: the plain load comes first because kernels call this on every
 * call from every thread: an unconditional atomic write would bounce the
 * flag's cache line between cores that train networks side by side.
 */
static void bp_register_fork_handler(void)
{
    if (atomic_load_explicit(&bp_fork_handler_registered,
                             memory_order_relaxed) == 0 &&
        atomic_exchange(&bp_fork_handler_registered, 1) == 0)
        pthread_atfork(NULL, NULL, bp_after_fork_in_child);
}

#if defined(__GNUC__)
/* Registered at load time, before the program can fork. */
__attribute__((constructor)) static void bp_threads_on_load(void)
{
    bp_register_fork_handler();
}
#endif
#else
static void bp_register_fork_handler(void)
{
}
#endif

int bp_get_num_threads(void)
{
#if defined(_OPENMP)
    /* Counts set after a fork() would wake the lost pool: ignore them. */
    if (atomic_load_explicit(&bp_forked_child, memory_order_relaxed))
        return 1;
    if (bp_local_num_threads > 0)
        return bp_local_num_threads;

    int n = atomic_load(&bp_num_threads);

    return n > 0 ? n : omp_get_max_threads();
#else
    return 1;
#endif
}

bp_status bp_set_num_threads(int n)
{
    if (n < 1)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "bp_set_num_threads: argument 'n' is %d; it must "
                       "be >= 1", n);

    bp_register_fork_handler();
#if defined(_OPENMP)
    atomic_store(&bp_num_threads, n);
    omp_set_num_threads(n);
#endif
    return BP_STATUS_OK;
}

bp_status bp_set_local_num_threads(int n)
{
    if (n < 0)
        return bp_fail(BP_STATUS_INVALID_ARGUMENT,
                       "bp_set_local_num_threads: argument 'n' is %d; it "
                       "must be >= 0 (0 removes the override)", n);

    bp_register_fork_handler();
    bp_local_num_threads = n;
    return BP_STATUS_OK;
}

int bp_get_local_num_threads(void)
{
    return bp_local_num_threads;
}

int bp_has_openmp(void)
{
#if defined(_OPENMP)
    return 1;
#else
    return 0;
#endif
}

int bp_threads_for(double flops)
{
#if defined(_OPENMP)
    bp_register_fork_handler();
    if (omp_in_parallel())
        return 1;

    int max = bp_get_num_threads();
    double useful = flops / BP_FLOPS_PER_THREAD;

    if (useful < 2.0)
        return 1;
    return useful < (double)max ? (int)useful : max;
#else
    (void)flops;
    return 1;
#endif
}

void bp_parallel_for(int threads, int64_t n, bp_range_fn fn, void *ctx)
{
    if (n <= 0)
        return;
#if defined(_OPENMP)
    if (threads > 1 && n > 1) {
#pragma omp parallel num_threads(threads)
        {
            int64_t parts = omp_get_num_threads(), t = omp_get_thread_num();
            int64_t q = n / parts, r = n % parts;
            int64_t begin = q * t + (t < r ? t : r);
            int64_t end = begin + q + (t < r);

            if (begin < end)
                fn(ctx, begin, end);
        }
        return;
    }
#else
    (void)threads;
#endif
    fn(ctx, 0, n);
}

int bp_thread_index(void)
{
#if defined(_OPENMP)
    return omp_get_thread_num();
#else
    return 0;
#endif
}

typedef struct bp_scratch_buffer {
    void *ptr;
    size_t bytes;
} bp_scratch_buffer;

static _Thread_local bp_scratch_buffer bp_scratch_buffers[BP_SCRATCH_SLOTS];

#if defined(BP_HAVE_PTHREAD)
static pthread_key_t bp_scratch_key;
static pthread_once_t bp_scratch_key_once = PTHREAD_ONCE_INIT;
static int bp_scratch_key_ok = 0;

/* Runs at thread exit with the exiting thread's buffers. */
static void bp_scratch_release(void *arg)
{
    bp_scratch_buffer *buffers = arg;

    for (int i = 0; i < BP_SCRATCH_SLOTS; i++) {
        bp_free(buffers[i].ptr);
        buffers[i].ptr = NULL;
        buffers[i].bytes = 0;
    }
}

static void bp_scratch_make_key(void)
{
    bp_scratch_key_ok =
        pthread_key_create(&bp_scratch_key, bp_scratch_release) == 0;
}

static void bp_scratch_watch_thread(void)
{
    pthread_once(&bp_scratch_key_once, bp_scratch_make_key);
    if (bp_scratch_key_ok)
        pthread_setspecific(bp_scratch_key, bp_scratch_buffers);
}
#else
/*
 * NOTE: without POSIX threads there is no portable thread-exit hook, so
 * a thread's scratch lives until the process ends.
 */
static void bp_scratch_watch_thread(void)
{
}
#endif

void *bp_scratch(bp_scratch_slot slot, size_t bytes)
{
    bp_scratch_buffer *buf = &bp_scratch_buffers[slot];

    if (bytes <= buf->bytes)
        return buf->ptr;

    /* Grow by at least half again so that slowly growing sizes settle. */
    size_t grown = buf->bytes + buf->bytes / 2;
    if (grown > bytes)
        bytes = grown;

    void *ptr = bp_malloc(bytes);
    if (ptr == NULL)
        return NULL;

    int first = 1;
    for (int i = 0; i < BP_SCRATCH_SLOTS; i++)
        first = first && bp_scratch_buffers[i].ptr == NULL;
    if (first)
        bp_scratch_watch_thread();

    bp_free(buf->ptr);
    buf->ptr = ptr;
    buf->bytes = bytes;
    return ptr;
}
