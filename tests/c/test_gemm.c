/*
 * bp_sgemm against a double-precision reference, at every SIMD level this
 * CPU supports: all transpose combinations, odd shapes, alpha and beta
 * variants, padded leading dimensions; bitwise equality across thread
 * counts; and the errors reported for invalid arguments.
 *
 * Uses the public API only. Exits 0 when every check passes.
 */
#include "bprop.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;

static void check(int ok, const char *what)
{
    if (!ok) {
        printf("FAIL: %s\n", what);
        failures++;
    }
}

/* A fixed-seed generator, so every run tests the same values. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float uniform(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((rng_state >> 40) / 8388608.0 - 1.0);
}

static float *random_matrix(int64_t rows, int64_t ld)
{
    size_t count = (size_t)(rows * ld) + 1;
    float *x = malloc(count * sizeof(float));

    for (size_t i = 0; i < count; i++)
        x[i] = uniform();
    return x;
}

/* op(X)[i][j] for a row-major X with leading dimension ld. */
static double element(const float *x, int64_t ld, bp_trans t, int64_t i,
                      int64_t j)
{
    return t == BP_TRANS_NO ? x[i * ld + j] : x[j * ld + i];
}

typedef struct gemm_case {
    bp_trans ta, tb;
    int64_t m, n, k;
    float alpha, beta;
    int64_t pad; /* extra columns in every leading dimension */
} gemm_case;

/*
 * Runs one case and returns the largest error relative to the scale of
 * the terms summed (alpha * sum |a b| + |beta c|); -1 on a hard failure
 * (a status that is not OK, or a value outside C that was written).
 */
static double run_case(const gemm_case *t)
{
    int64_t a_rows = t->ta == BP_TRANS_NO ? t->m : t->k;
    int64_t a_cols = t->ta == BP_TRANS_NO ? t->k : t->m;
    int64_t b_rows = t->tb == BP_TRANS_NO ? t->k : t->n;
    int64_t b_cols = t->tb == BP_TRANS_NO ? t->n : t->k;
    int64_t lda = a_cols + t->pad, ldb = b_cols + t->pad;
    int64_t ldc = t->n + t->pad;
    float *a = random_matrix(a_rows, lda);
    float *b = random_matrix(b_rows, ldb);
    float *c = random_matrix(t->m, ldc);
    float *c0 = malloc(((size_t)(t->m * ldc) + 1) * sizeof(float));
    double worst = 0.0;

    /* With beta == 0, C must not be read: NaN there must not leak out. */
    if (t->beta == 0.0f)
        for (int64_t i = 0; i < t->m * ldc; i++)
            c[i] = NAN;
    memcpy(c0, c, ((size_t)(t->m * ldc) + 1) * sizeof(float));

    bp_status st = bp_sgemm(c, ldc, a, lda, b, ldb, t->ta, t->tb, t->alpha,
                            t->beta, t->m, t->n, t->k);
    if (st != BP_STATUS_OK) {
        printf("bp_sgemm failed: %s\n", bp_last_error());
        worst = -1.0;
    }

    for (int64_t i = 0; i < t->m && worst >= 0.0; i++) {
        for (int64_t j = 0; j < ldc; j++) {
            int64_t at = i * ldc + j;

            /* Padding columns must be left alone. */
            if (j >= t->n) {
                if (memcmp(&c[at], &c0[at], sizeof(float)) != 0)
                    worst = -1.0;
                continue;
            }

            double sum = 0.0, scale = 0.0;
            for (int64_t p = 0; p < t->k; p++) {
                double ab = element(a, lda, t->ta, i, p)
                            * element(b, ldb, t->tb, p, j);
                sum += ab;
                scale += fabs(ab);
            }
            double ref = t->alpha * sum;
            scale *= fabs(t->alpha);
            if (t->beta != 0.0f) {
                ref += (double)t->beta * c0[at];
                scale += fabs((double)t->beta * c0[at]);
            }

            double err = fabs(c[at] - ref) / (scale > 1e-30 ? scale : 1.0);
            if (!(err <= worst))
                worst = isnan(err) ? INFINITY : err;
        }
    }

    /* The element past the last row is a guard. */
    if (memcmp(&c[t->m * ldc], &c0[t->m * ldc], sizeof(float)) != 0)
        worst = -1.0;

    free(a);
    free(b);
    free(c);
    free(c0);
    return worst;
}

static const char *trans_label(bp_trans t)
{
    return t == BP_TRANS_NO ? "N" : "T";
}

/* Every shape from a small odd set, at the current SIMD level. */
static void test_accuracy(bp_simd level)
{
    static const int64_t sizes[] = {0, 1, 7, 31, 33, 129};
    static const float alphas[] = {1.0f, -0.7f, 2.0f};
    static const float betas[] = {0.0f, 1.3f, 1.0f};
    const int n_sizes = (int)(sizeof sizes / sizeof sizes[0]);

    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            double worst = 0.0;
            int cases = 0;

            for (int im = 0; im < n_sizes; im++)
            for (int in = 0; in < n_sizes; in++)
            for (int ik = 0; ik < n_sizes; ik++) {
                int v = (im + in + ik) % 3;
                gemm_case t = {(bp_trans)ta, (bp_trans)tb, sizes[im],
                               sizes[in], sizes[ik], alphas[v], betas[v],
                               v == 0 ? 0 : 3 * v - 1};
                double err = run_case(&t);
                double tol = 1e-5 * sqrt((double)(t.k > 1 ? t.k : 1));

                cases++;
                if (err < 0.0 || err > tol) {
                    printf("FAIL: %s %s%s m=%lld n=%lld k=%lld alpha=%g "
                           "beta=%g pad=%lld: error %.3g (tolerance %.3g)\n",
                           bp_simd_name(level), trans_label(t.ta),
                           trans_label(t.tb), (long long)t.m,
                           (long long)t.n, (long long)t.k, t.alpha, t.beta,
                           (long long)t.pad, err, tol);
                    failures++;
                }
                if (err > worst)
                    worst = err;
            }
            printf("%-8s %s%s  %3d cases  largest relative difference "
                   "%.3g\n", bp_simd_name(level), trans_label((bp_trans)ta),
                   trans_label((bp_trans)tb), cases, worst);
        }
    }
}

/* Shapes that span several depth, row and column blocks. */
static void test_large(bp_simd level)
{
    static const gemm_case cases[] = {
        {BP_TRANS_NO, BP_TRANS_NO, 300, 500, 700, 1.0f, 0.0f, 0},
        {BP_TRANS_YES, BP_TRANS_NO, 257, 130, 1025, 0.5f, -1.0f, 5},
        {BP_TRANS_NO, BP_TRANS_YES, 33, 4133, 300, 1.0f, 1.0f, 1},
        {BP_TRANS_YES, BP_TRANS_YES, 401, 97, 513, -2.0f, 0.25f, 0},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const gemm_case *t = &cases[i];
        double err = run_case(t);
        double tol = 1e-5 * sqrt((double)t->k);

        printf("%-8s %s%s  %lldx%lldx%lld  largest relative difference "
               "%.3g\n", bp_simd_name(level), trans_label(t->ta),
               trans_label(t->tb), (long long)t->m, (long long)t->n,
               (long long)t->k, err);
        check(err >= 0.0 && err <= tol, "large case within tolerance");
    }
}

/* The same product with 1 and 2 threads must match bit for bit. */
static void test_thread_determinism(bp_simd level)
{
    const int64_t m = 300, n = 500, k = 700;

    for (int ta = 0; ta < 2; ta++) {
        for (int tb = 0; tb < 2; tb++) {
            float *a = random_matrix(m, k);
            float *b = random_matrix(k, n);
            float *c1 = random_matrix(m, n);
            float *c2 = malloc((size_t)(m * n + 1) * sizeof(float));
            float *c3 = malloc((size_t)(m * n + 1) * sizeof(float));
            int64_t lda = ta ? m : k, ldb = tb ? k : n;
            int ok = 1;

            memcpy(c2, c1, (size_t)(m * n + 1) * sizeof(float));
            memcpy(c3, c1, (size_t)(m * n + 1) * sizeof(float));
            ok &= bp_set_num_threads(1) == BP_STATUS_OK;
            ok &= bp_sgemm(c1, n, a, lda, b, ldb, (bp_trans)ta,
                           (bp_trans)tb, 0.75f, 0.5f, m, n, k)
                  == BP_STATUS_OK;
            ok &= bp_set_num_threads(2) == BP_STATUS_OK;
            ok &= bp_sgemm(c2, n, a, lda, b, ldb, (bp_trans)ta,
                           (bp_trans)tb, 0.75f, 0.5f, m, n, k)
                  == BP_STATUS_OK;
            ok &= bp_set_num_threads(3) == BP_STATUS_OK;
            ok &= bp_sgemm(c3, n, a, lda, b, ldb, (bp_trans)ta,
                           (bp_trans)tb, 0.75f, 0.5f, m, n, k)
                  == BP_STATUS_OK;
            ok &= memcmp(c1, c2, (size_t)(m * n) * sizeof(float)) == 0;
            ok &= memcmp(c1, c3, (size_t)(m * n) * sizeof(float)) == 0;
            printf("%-8s %s%s  %lldx%lldx%lld  1, 2 and 3 threads %s\n",
                   bp_simd_name(level), trans_label((bp_trans)ta),
                   trans_label((bp_trans)tb), (long long)m, (long long)n,
                   (long long)k, ok ? "bitwise equal" : "DIFFER");
            check(ok, "bitwise equal across thread counts");
            free(a);
            free(b);
            free(c1);
            free(c2);
            free(c3);
        }
    }
    bp_set_num_threads(1);
}

/* One invalid call: the status and a message naming `name`. */
static void expect_invalid(bp_status st, const char *name)
{
    char what[160], quoted[40];

    snprintf(quoted, sizeof quoted, "'%s'", name);
    snprintf(what, sizeof what, "invalid '%s' gives invalid argument",
             name);
    check(st == BP_STATUS_INVALID_ARGUMENT, what);
    snprintf(what, sizeof what, "message for '%s' names it: \"%s\"", name,
             bp_last_error());
    check(strstr(bp_last_error(), quoted) != NULL, what);
}

static void test_invalid_arguments(void)
{
    float a[64], b[64], c[64];
    const bp_trans no = BP_TRANS_NO, yes = BP_TRANS_YES;

    for (int i = 0; i < 64; i++)
        a[i] = b[i] = c[i] = 1.0f;

    expect_invalid(bp_sgemm(c, 4, a, 4, b, 4, no, no, 1, 0, -1, 4, 4), "m");
    expect_invalid(bp_sgemm(c, 4, a, 4, b, 4, no, no, 1, 0, 4, -2, 4), "n");
    expect_invalid(bp_sgemm(c, 4, a, 4, b, 4, no, no, 1, 0, 4, 4, -3), "k");
    expect_invalid(bp_sgemm(c, 3, a, 4, b, 4, no, no, 1, 0, 4, 4, 4),
                   "ldc");
    expect_invalid(bp_sgemm(c, 4, a, 3, b, 4, no, no, 1, 0, 4, 4, 4),
                   "lda");
    expect_invalid(bp_sgemm(c, 4, a, 3, b, 4, yes, no, 1, 0, 4, 4, 3),
                   "lda");
    expect_invalid(bp_sgemm(c, 4, a, 4, b, 3, no, no, 1, 0, 4, 4, 4),
                   "ldb");
    expect_invalid(bp_sgemm(c, 4, a, 4, b, 3, no, yes, 1, 0, 4, 4, 4),
                   "ldb");
    expect_invalid(bp_sgemm(NULL, 4, a, 4, b, 4, no, no, 1, 0, 4, 4, 4),
                   "c");
    expect_invalid(bp_sgemm(c, 4, NULL, 4, b, 4, no, no, 1, 0, 4, 4, 4),
                   "a");
    expect_invalid(bp_sgemm(c, 4, a, 4, NULL, 4, no, no, 1, 0, 4, 4, 4),
                   "b");
    expect_invalid(bp_sgemm(c, 4, a, 4, b, 4, (bp_trans)2, no, 1, 0, 4, 4,
                            4), "trans_a");
    expect_invalid(bp_sgemm(c, 4, a, 4, b, 4, no, (bp_trans)-1, 1, 0, 4, 4,
                            4), "trans_b");
    expect_invalid(bp_set_num_threads(0), "n");

    /* Empty matrices may be NULL. */
    check(bp_sgemm(NULL, 4, NULL, 4, b, 4, no, no, 1, 0, 0, 4, 4)
              == BP_STATUS_OK, "m == 0 with NULL c and a is accepted");
    check(bp_sgemm(c, 4, a, 0, NULL, 4, no, no, 1, 0, 4, 4, 0)
              == BP_STATUS_OK, "k == 0 with NULL b is accepted");

    /* Failed calls leave C untouched. */
    for (int i = 0; i < 64; i++)
        check(c[i] == (i < 16 ? 0.0f : 1.0f), "c untouched by failures");
}

static void test_simd_levels(void)
{
    bp_simd best = bp_simd_best();

    check(bp_simd_level() <= best, "current level <= best");
    check(strcmp(bp_simd_name(BP_SIMD_GENERIC), "generic") == 0,
          "name of generic");
    check(strcmp(bp_simd_name(BP_SIMD_AVX512), "avx512") == 0,
          "name of avx512");
    check(bp_simd_set((bp_simd)7) == BP_STATUS_INVALID_ARGUMENT,
          "an unknown level is invalid");
    if (best < BP_SIMD_AVX512) {
        check(bp_simd_set(BP_SIMD_AVX512) == BP_STATUS_UNSUPPORTED,
              "a level beyond the CPU is unsupported");
        check(bp_last_error()[0] != '\0', "unsupported level has a message");
    }
}

int main(void)
{
    bp_simd best = bp_simd_best();

    printf("bprop %s, best SIMD level %s, OpenMP %s\n", bp_version(),
           bp_simd_name(best), bp_has_openmp() ? "yes" : "no");
    test_simd_levels();
    test_invalid_arguments();

    for (int level = BP_SIMD_GENERIC; level <= (int)best; level++) {
        check(bp_simd_set((bp_simd)level) == BP_STATUS_OK, "set level");
        check(bp_simd_level() == (bp_simd)level, "level is the one set");
        bp_set_num_threads(1);
        test_accuracy((bp_simd)level);
        bp_set_num_threads(2);
        test_large((bp_simd)level);
        test_thread_determinism((bp_simd)level);
    }
    bp_simd_set(best);

    printf(failures ? "%d checks FAILED\n" : "all checks passed\n",
           failures);
    return failures ? 1 : 0;
}
