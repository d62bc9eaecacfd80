/*
 * Optimizers and learning-rate schedules through the public API:
 * bp_optimizer_update for every kind against a double-precision
 * reference over several steps, the schedules against their formulas,
 * reduce-on-plateau's counters, clipping by global norm at the network
 * level, bitwise-identical epochs on 1 and 2 threads, exact resumption
 * of Adam with a schedule through a model file, and the error messages.
 *
 * Exits 0 when every check passes; prints the largest differences.
 */
#if defined(__linux__)
#define _GNU_SOURCE
#endif
#include "bprop.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
#include <malloc.h>
#define HAVE_MALLINFO2 1
#endif

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

static void require(bp_status st, const char *what)
{
    if (st != BP_STATUS_OK) {
        printf("FAIL: %s: %s: %s\n", what, bp_status_name(st),
               bp_last_error());
        exit(1);
    }
}

static void expect_invalid(bp_status st, const char *needle, const char *what)
{
    char line[400];

    snprintf(line, sizeof line, "%s: status %s, message \"%s\" names \"%s\"",
             what, bp_status_name(st), bp_last_error(), needle);
    check(st == BP_STATUS_INVALID_ARGUMENT &&
              strstr(bp_last_error(), needle) != NULL,
          line);
}

/* A fixed pseudo-random value in [-1, 1). */
static double noise(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 4503599627370496.0 - 1.0;
}

/* ------------------------------------------------------------------ */
/* Kernels against a double reference                                  */
/* ------------------------------------------------------------------ */

enum { N = 37, STEPS = 6 };

/* One update of the reference, in double, as bprop.h documents it. */
static void reference_step(double *w, double *m, double *s, const double *g0,
                           const bp_optimizer *o, double lr, double wd,
                           uint64_t t)
{
    for (int i = 0; i < N; i++) {
        double g = g0[i];
        double c = o->clip_value;

        if (c > 0.0)
            g = g > c ? c : (g < -c ? -c : g);
        if (o->kind != BP_OPTIMIZER_ADAMW)
            g += wd * w[i];
        switch (o->kind) {
        case BP_OPTIMIZER_SGD:
            if (o->momentum == 0.0f) {
                w[i] -= lr * g;
                break;
            }
            m[i] = o->momentum * m[i] + g;
            w[i] -= lr * (o->nesterov ? g + o->momentum * m[i] : m[i]);
            break;
        case BP_OPTIMIZER_ADAM:
        case BP_OPTIMIZER_ADAMW:
            if (o->kind == BP_OPTIMIZER_ADAMW)
                w[i] *= 1.0 - lr * wd;
            m[i] = o->beta1 * m[i] + (1.0 - o->beta1) * g;
            s[i] = o->beta2 * s[i] + (1.0 - o->beta2) * g * g;
            w[i] -= lr / (1.0 - pow(o->beta1, (double)t)) * m[i] /
                    (sqrt(s[i] / (1.0 - pow(o->beta2, (double)t))) + o->eps);
            break;
        case BP_OPTIMIZER_RMSPROP: {
            s[i] = o->rho * s[i] + (1.0 - o->rho) * g * g;
            double d = g / (sqrt(s[i]) + o->eps);
            if (o->momentum > 0.0f) {
                m[i] = o->momentum * m[i] + d;
                d = m[i];
            }
            w[i] -= lr * d;
            break;
        }
        case BP_OPTIMIZER_ADAGRAD:
            s[i] += g * g;
            w[i] -= lr * g / (sqrt(s[i] + o->initial_accumulator) + o->eps);
            break;
        }
    }
}

/*
 * STEPS updates of N values by the kernel and by the reference; returns
 * the largest difference relative to the largest change of a weight.
 */
static double compare_updates(const bp_optimizer *o, double wd)
{
    float w[N], m[N], s[N], g[N];
    double rw[N], rm[N], rs[N], rg[N], w0[N];
    double gap = 0.0, moved = 0.0;
    uint64_t seed = 12345;

    for (int i = 0; i < N; i++) {
        w[i] = (float)noise(&seed);
        rw[i] = w0[i] = w[i];
        m[i] = s[i] = 0.0f;
        rm[i] = rs[i] = 0.0;
    }
    for (uint64_t t = 1; t <= STEPS; t++) {
        float lr = o->lr * (float)(1.0 / (double)t);

        for (int i = 0; i < N; i++) {
            g[i] = (float)(2.0 * noise(&seed));
            rg[i] = g[i];
        }
        require(bp_optimizer_update(w, m, s, g, o, lr, (float)wd, t, N),
                "bp_optimizer_update");
        reference_step(rw, rm, rs, rg, o, lr, (float)wd, t);
    }
    for (int i = 0; i < N; i++) {
        gap = fmax(gap, fabs(w[i] - rw[i]));
        moved = fmax(moved, fabs(rw[i] - w0[i]));
    }
    return moved > 0.0 ? gap / moved : 1.0;
}

static void test_kernels_match_the_reference(void)
{
    static const struct {
        bp_optimizer_kind kind;
        float momentum;
        int nesterov;
        float clip_value;
        float wd;
        const char *name;
    } cases[] = {
        {BP_OPTIMIZER_SGD, 0.0f, 0, 0.0f, 0.01f, "sgd"},
        {BP_OPTIMIZER_SGD, 0.9f, 0, 0.5f, 0.01f, "sgd momentum, clipped"},
        {BP_OPTIMIZER_SGD, 0.9f, 1, 0.0f, 0.0f, "sgd nesterov"},
        {BP_OPTIMIZER_ADAM, 0.0f, 0, 0.0f, 0.01f, "adam"},
        {BP_OPTIMIZER_ADAM, 0.0f, 0, 0.3f, 0.0f, "adam, clipped"},
        {BP_OPTIMIZER_ADAMW, 0.0f, 0, 0.0f, 0.1f, "adamw"},
        {BP_OPTIMIZER_RMSPROP, 0.0f, 0, 0.0f, 0.01f, "rmsprop"},
        {BP_OPTIMIZER_RMSPROP, 0.5f, 0, 0.0f, 0.0f, "rmsprop momentum"},
        {BP_OPTIMIZER_ADAGRAD, 0.0f, 0, 0.0f, 0.01f, "adagrad"},
    };

    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bp_optimizer o;
        char what[120];

        require(bp_optimizer_defaults(&o, cases[c].kind), "defaults");
        o.lr = 0.05f;
        o.momentum = cases[c].momentum;
        o.nesterov = cases[c].nesterov;
        o.clip_value = cases[c].clip_value;
        o.initial_accumulator = 0.1f;
        double rel = compare_updates(&o, cases[c].wd);
        printf("%-24s largest difference %.2e of the largest change\n",
               cases[c].name, rel);
        snprintf(what, sizeof what, "%s matches the reference", cases[c].name);
        check(rel < 1e-5, what);
    }
}

static void test_defaults_and_names(void)
{
    bp_optimizer o;

    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_ADAMW), "defaults");
    check(o.kind == BP_OPTIMIZER_ADAMW && o.lr == 0.001f &&
              o.beta1 == 0.9f && o.beta2 == 0.999f && o.eps == 1e-8f &&
              o.weight_decay == 0.01f && o.clip_norm == 0.0f,
          "AdamW defaults");
    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_ADAGRAD), "defaults");
    check(o.lr == 0.01f && o.eps == 1e-10f && o.weight_decay == 0.0f,
          "Adagrad defaults");
    check(strcmp(bp_optimizer_name(BP_OPTIMIZER_RMSPROP), "rmsprop") == 0 &&
              bp_optimizer_name((bp_optimizer_kind)9) == NULL,
          "optimizer names");
    check(strcmp(bp_schedule_name(BP_SCHEDULE_COSINE), "cosine") == 0 &&
              bp_schedule_name((bp_schedule_kind)-1) == NULL,
          "schedule names");
    expect_invalid(bp_optimizer_defaults(&o, (bp_optimizer_kind)7), "kind",
                   "unknown kind");
}

static void test_errors_name_the_field(void)
{
    float w[4] = {0}, g[4] = {0}, m[4] = {0}, s[4] = {0};
    bp_optimizer o;

    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_ADAM), "defaults");
    o.beta1 = 1.0f;
    expect_invalid(bp_optimizer_update(w, m, s, g, &o, 0.1f, 0, 1, 4),
                   "opt->beta1 is 1", "beta1 = 1");
    o.beta1 = 0.9f;
    o.eps = 0.0f;
    expect_invalid(bp_optimizer_update(w, m, s, g, &o, 0.1f, 0, 1, 4),
                   "opt->eps", "eps = 0");
    o.eps = 1e-8f;
    o.clip_norm = -1.0f;
    expect_invalid(bp_optimizer_update(w, m, s, g, &o, 0.1f, 0, 1, 4),
                   "opt->clip_norm", "negative clip_norm");
    o.clip_norm = 0.0f;
    expect_invalid(bp_optimizer_update(w, m, s, g, &o, 0.1f, 0, 0, 4),
                   "'step' is 0", "step 0");
    expect_invalid(bp_optimizer_update(w, m, NULL, g, &o, 0.1f, 0, 1, 4),
                   "'s' is NULL", "Adam without s");
    o.kind = BP_OPTIMIZER_SGD;
    o.nesterov = 1;
    expect_invalid(bp_optimizer_update(w, m, s, g, &o, 0.1f, 0, 1, 4),
                   "Nesterov momentum needs momentum > 0", "nesterov");
    o.kind = (bp_optimizer_kind)42;
    expect_invalid(bp_optimizer_update(w, m, s, g, &o, 0.1f, 0, 1, 4),
                   "opt->kind is 42", "unknown kind");
}

/* ------------------------------------------------------------------ */
/* Schedules                                                           */
/* ------------------------------------------------------------------ */

/* The rate bp_schedule_lr gives, or NaN on failure. */
static double rate(const bp_schedule *s, float lr, uint64_t step)
{
    float out = 0.0f;

    if (bp_schedule_lr(s, lr, step, &out) != BP_STATUS_OK)
        return NAN;
    return out;
}

static void test_schedules_follow_their_formulas(void)
{
    const double pi = 3.14159265358979323846, lr = 0.1;
    double gap = 0.0;

    for (uint64_t t = 0; t < 40; t++) {
        bp_schedule step = {.kind = BP_SCHEDULE_STEP, .step_size = 3,
                            .gamma = 0.5f, .interval = 4};
        bp_schedule expo = {.kind = BP_SCHEDULE_EXPONENTIAL,
                            .gamma = 0.9f};
        bp_schedule inv = {.kind = BP_SCHEDULE_INVERSE, .gamma = 1.0f,
                           .power = 0.5f};
        bp_schedule cos_s = {.kind = BP_SCHEDULE_COSINE, .warmup = 5,
                             .period = 30, .min_lr = 0.01f};
        uint64_t k = t / 4;
        double c = t < 5 ? lr * (double)(t + 1) / 5.0
                 : t >= 30 ? 0.01
                 : 0.01 + (lr - 0.01) * 0.5 *
                              (1.0 + cos(pi * (double)(t - 5) / 25.0));
        double want[4] = {lr * pow(0.5, (double)(k / 3)),
                          lr * pow(0.9f, (double)t),
                          lr / sqrt(1.0 + (double)t), c};
        const bp_schedule *all[4] = {&step, &expo, &inv, &cos_s};

        for (int i = 0; i < 4; i++)
            gap = fmax(gap, fabs(rate(all[i], (float)lr, t) - want[i]) /
                                want[i]);
    }
    printf("schedules: largest relative difference %.2e\n", gap);
    check(gap < 1e-6, "schedules follow their formulas");
    check(rate(NULL, 0.25f, 1000) == 0.25f, "NULL is constant");

    bp_schedule bad = {.kind = BP_SCHEDULE_COSINE, .warmup = 5,
                       .period = 5};
    float out;
    expect_invalid(bp_schedule_lr(&bad, 0.1f, 0, &out),
                   "sched->period is 5", "period <= warmup");
    bad = (bp_schedule){.kind = BP_SCHEDULE_STEP, .gamma = 0.5f};
    expect_invalid(bp_schedule_lr(&bad, 0.1f, 0, &out), "sched->step_size",
                   "step_size 0");
}

static void test_plateau_counts_and_cuts(void)
{
    bp_schedule p = {.kind = BP_SCHEDULE_PLATEAU, .gamma = 0.5f,
                     .patience = 2, .cooldown = 1, .threshold = 0.01f,
                     .min_lr = 0.02f};
    static const double metric[] = {1.0, 0.9, 0.895, 0.9, 0.91,
                                    0.92, 0.93, 0.94, 0.95, 0.96};
    static const int64_t reductions[] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    int ok = 1;

    for (int i = 0; i < 10; i++) {
        require(bp_schedule_observe(&p, metric[i]), "observe");
        ok &= p.reductions == reductions[i];
    }
    check(ok && p.best == 0.9, "plateau: reductions after patience, "
                               "cooldown skipped, small gains ignored");
    check(rate(&p, 0.1f, 0) == 0.025f, "plateau rate 0.1 * 0.5^2");
    p.reductions = 10;
    check(rate(&p, 0.1f, 0) == 0.02f, "plateau rate floored at min_lr");
    expect_invalid(bp_schedule_observe(&p, NAN), "'metric' is nan",
                   "NaN metric");
}

/* ------------------------------------------------------------------ */
/* Networks                                                            */
/* ------------------------------------------------------------------ */

enum { ROWS = 48, INPUTS = 300, HIDDEN = 2000, CLASSES = 4 };

static float x[ROWS * INPUTS];
static int32_t labels[ROWS];

static void make_data(void)
{
    uint64_t s = 99;

    for (int i = 0; i < ROWS * INPUTS; i++)
        x[i] = (float)noise(&s);
    for (int i = 0; i < ROWS; i++)
        labels[i] = (int32_t)((i * 5 + 1) % CLASSES);
}

/* 600,000 parameters: enough for the norm and updates to use threads. */
static bp_net *make_net(int64_t hidden)
{
    bp_layer_spec layers[] = {
        {.units = hidden, .activation = BP_ACTIVATION_RELU},
        {.units = CLASSES, .activation = BP_ACTIVATION_IDENTITY}};
    bp_net *net;

    require(bp_net_create(&net, INPUTS, layers, 2, BP_LOSS_CROSS_ENTROPY),
            "create");
    require(bp_net_init(net, BP_INIT_AUTO, 5), "init");
    return net;
}

static int same_slab(const float *a, const float *b, int64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(float)) == 0;
}

/* SGD without momentum, clipped to norm 0.01, moves w by lr g 0.01/|g|. */
static void test_clip_norm_scales_the_step(void)
{
    bp_net *net = make_net(16);
    int64_t n = bp_net_n_params(net);
    float *before = malloc((size_t)n * sizeof(float));
    float *grad = malloc((size_t)n * sizeof(float));
    bp_optimizer o;
    double norm = 0.0, gap = 0.0, top = 0.0;

    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_SGD), "defaults");
    o.lr = 0.5f;
    o.clip_norm = 0.01f;
    require(bp_net_gradient(net, x, NULL, labels, ROWS, NULL), "gradient");
    memcpy(before, bp_net_params_const(net), (size_t)n * sizeof(float));
    memcpy(grad, bp_net_grads(net), (size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        norm += (double)grad[i] * grad[i];
    norm = sqrt(norm);
    require(bp_net_apply_update(net, &o, NULL), "apply_update");

    const float *after = bp_net_params_const(net);
    for (int64_t i = 0; i < n; i++) {
        double want = before[i] - 0.5 * grad[i] * (0.01 / (norm + 1e-6));

        gap = fmax(gap, fabs(after[i] - want));
        top = fmax(top, fabs(after[i] - before[i]));
    }
    printf("clip_norm: gradient norm %.4f, largest gap %.2e of %.2e\n",
           norm, gap, top);
    /* Rounding w itself (about 1e-8) bounds the agreement. */
    check(norm > 0.01 && top > 0.0 && gap < 1e-3 * top,
          "clipping by norm scales the step");
    check(same_slab(bp_net_grads(net), grad, n), "gradient slab unchanged");
    check(bp_net_optimizer_step(net) == 1, "the update was counted");
    free(before);
    free(grad);
    bp_net_free(net);
}

/* Two epochs of Adam with clipping and a schedule on `threads` threads. */
static bp_net *train_adam(int threads, bp_schedule *sched)
{
    bp_net *net = make_net(HIDDEN);
    bp_optimizer o;
    bp_epoch_report report;

    require(bp_set_num_threads(threads), "threads");
    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_ADAM), "defaults");
    o.clip_norm = 0.5f;
    o.weight_decay = 1e-3f;
    for (uint64_t e = 0; e < 2; e++)
        require(bp_net_train_epoch_opt(net, &o, sched, x, NULL, labels, ROWS,
                                       16, 1, 3, e, NULL, NULL, &report),
                "train_epoch_opt");
    check(report.batches == 3 && isfinite(report.mean_loss), "report");
    return net;
}

static void test_threads_give_the_same_bits(void)
{
    bp_schedule sched = {.kind = BP_SCHEDULE_COSINE, .warmup = 2,
                         .period = 6};
    bp_net *one = train_adam(1, &sched), *two = train_adam(2, &sched);
    int64_t n = bp_net_n_params(one);
    float *s1, *s2;

    require(bp_net_optimizer_state(one, 1, 0, &s1), "state one");
    require(bp_net_optimizer_state(two, 1, 0, &s2), "state two");
    check(s1 != NULL && s2 != NULL, "Adam allocated the second slab");
    check(same_slab(bp_net_params_const(one), bp_net_params_const(two), n) &&
              same_slab(bp_net_velocity(one), bp_net_velocity(two), n) &&
              same_slab(s1, s2, n),
          "1 and 2 threads give the same parameters and state");
    check(bp_net_optimizer_step(one) == 6, "six updates counted");
    bp_net_free(one);
    bp_net_free(two);
}

/* Adam with a step schedule: 4 epochs == 2, save, load, 2 more. */
static void test_resume_through_a_model_file(void)
{
    bp_schedule sched = {.kind = BP_SCHEDULE_STEP, .step_size = 2,
                         .gamma = 0.5f, .interval = 3};
    bp_optimizer o, got_o;
    bp_schedule got_s;
    bp_net *straight = make_net(32), *half = make_net(32), *back;
    bp_model_extras *ex, *got;
    size_t size = 0;

    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_ADAM), "defaults");
    o.lr = 0.01f;
    for (uint64_t e = 0; e < 4; e++)
        require(bp_net_train_epoch_opt(straight, &o, &sched, x, NULL, labels,
                                       ROWS, 16, 1, 3, e, NULL, NULL, NULL),
                "straight");
    for (uint64_t e = 0; e < 2; e++)
        require(bp_net_train_epoch_opt(half, &o, &sched, x, NULL, labels,
                                       ROWS, 16, 1, 3, e, NULL, NULL, NULL),
                "half");

    require(bp_model_extras_create(&ex), "extras");
    require(bp_model_extras_set_opt(ex, &o, &sched), "set_opt");
    require(bp_net_save_buffer(half, ex, NULL, 0, &size), "size");
    unsigned char *buf = malloc(size);
    require(bp_net_save_buffer(half, ex, buf, size, &size), "save");
    require(bp_net_load_buffer(&back, buf, size, &got), "load");
    check(bp_model_extras_get_opt(got, &got_o, &got_s) &&
              got_o.kind == BP_OPTIMIZER_ADAM && got_o.lr == 0.01f &&
              got_o.beta2 == 0.999f && got_s.kind == BP_SCHEDULE_STEP &&
              got_s.interval == 3 && got_s.gamma == 0.5f,
          "optimizer and schedule read back");
    check(!bp_model_extras_get_optimizer(got, NULL),
          "the SGD getter answers no for Adam");
    check(bp_net_optimizer_step(back) == 6, "step counter read back");

    for (uint64_t e = 2; e < 4; e++)
        require(bp_net_train_epoch_opt(back, &got_o, &got_s, x, NULL, labels,
                                       ROWS, 16, 1, 3, e, NULL, NULL, NULL),
                "resumed");
    check(same_slab(bp_net_params_const(straight), bp_net_params_const(back),
                    bp_net_n_params(back)),
          "Adam resumes bit for bit through a model file");

    expect_invalid(bp_model_extras_set_opt(ex, NULL, NULL), "'opt' is NULL",
                   "set_opt NULL");
    free(buf);
    bp_model_extras_free(ex);
    bp_model_extras_free(got);
    bp_net_free(straight);
    bp_net_free(half);
    bp_net_free(back);
}

/* The SGD calls are the general ones with an SGD optimizer. */
static void test_sgd_calls_equal_the_general_ones(void)
{
    bp_sgd_config sgd = {.lr = 0.1f, .momentum = 0.9f, .nesterov = 1,
                         .l2 = 0.01f};
    bp_optimizer o = {.kind = BP_OPTIMIZER_SGD, .lr = 0.1f,
                      .momentum = 0.9f, .nesterov = 1,
                      .weight_decay = 0.01f};
    bp_net *a = make_net(12), *b = make_net(12);

    for (uint64_t e = 0; e < 3; e++) {
        require(bp_net_train_epoch(a, &sgd, x, NULL, labels, ROWS, 10, 1, 1,
                                   e, NULL), "sgd epoch");
        require(bp_net_train_epoch_opt(b, &o, NULL, x, NULL, labels, ROWS,
                                       10, 1, 1, e, NULL, NULL, NULL),
                "opt epoch");
    }
    check(same_slab(bp_net_params_const(a), bp_net_params_const(b),
                    bp_net_n_params(a)),
          "bp_net_train_epoch == bp_net_train_epoch_opt with SGD");
    check(bp_net_optimizer_step(a) == 15, "SGD updates are counted too");
    bp_net_free(a);
    bp_net_free(b);
}

/* Bytes the heap holds; 0 where glibc's mallinfo2 is missing. */
static size_t heap_in_use(void)
{
#if defined(HAVE_MALLINFO2)
    struct mallinfo2 info = mallinfo2();
    return info.uordblks + info.hblkhd;
#else
    return 0;
#endif
}

/* Once the first epoch made the second slab, epochs allocate nothing. */
static void test_warm_adam_epochs_allocate_nothing(void)
{
    bp_schedule sched = {.kind = BP_SCHEDULE_COSINE, .period = 9};
    bp_net *net = make_net(24);
    bp_optimizer o;

    require(bp_optimizer_defaults(&o, BP_OPTIMIZER_ADAMW), "defaults");
    o.clip_norm = 1.0f;
    require(bp_net_train_epoch_opt(net, &o, &sched, x, NULL, labels, ROWS, 8,
                                   1, 1, 0, NULL, NULL, NULL),
            "first epoch");
    size_t before = heap_in_use();
    for (uint64_t e = 1; e < 4; e++)
        require(bp_net_train_epoch_opt(net, &o, &sched, x, NULL, labels, ROWS,
                                       8, 1, 1, e, NULL, NULL, NULL),
                "warm epoch");
    require(bp_net_gradient(net, x, NULL, labels, 8, NULL), "gradient");
    require(bp_net_apply_update(net, &o, &sched), "apply_update");
    check(heap_in_use() == before, "warm AdamW epochs allocate nothing");
    bp_net_free(net);
}

int main(void)
{
    make_data();
    test_kernels_match_the_reference();
    test_defaults_and_names();
    test_errors_name_the_field();
    test_schedules_follow_their_formulas();
    test_plateau_counts_and_cuts();
    test_clip_norm_scales_the_step();
    test_threads_give_the_same_bits();
    test_resume_through_a_model_file();
    test_sgd_calls_equal_the_general_ones();
    test_warm_adam_epochs_allocate_nothing();
    if (failures > 0) {
        printf("%d check(s) failed\n", failures);
        return 1;
    }
    printf("all optimizer checks passed\n");
    return 0;
}
