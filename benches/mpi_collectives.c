/* Native MPI collectives, measured exactly like benches/collectives.rs
 * measures the shm backend: per operation, rank 0 calibrates a batch size,
 * broadcasts it, then the median over batches of the mean time per call in a
 * batch is printed as "RESULT\t<ranks>\t<operation>\t<microseconds>".
 * Built and run by benches/collectives.rs with each MPI's mpicc / mpiexec. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef void (*op_fn)(void *);

struct ag { double *send, *recv; int *counts, *displs; int per; };
struct ar { double *send, *recv; int n; };
struct bc { double *buf; int n; };

static void do_barrier(void *s) { (void)s; MPI_Barrier(MPI_COMM_WORLD); }
static void do_allreduce(void *s) {
    struct ar *a = s;
    MPI_Allreduce(a->send, a->recv, a->n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
static void do_allgatherv(void *s) {
    struct ag *a = s;
    MPI_Allgatherv(a->send, a->per, MPI_DOUBLE, a->recv, a->counts, a->displs, MPI_DOUBLE, MPI_COMM_WORLD);
}
static void do_bcast(void *s) {
    struct bc *b = s;
    MPI_Bcast(b->buf, b->n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
}

/* Median over batches of the mean time per call, in microseconds. */
static double measure(op_fn f, void *state, int quick) {
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < 3; i++) f(state);
    double per_call = (MPI_Wtime() - t0) / 3.0;
    /* batch of ~20 ms, at most 1000 calls; 3..30 batches within ~0.5 s */
    int plan[2];
    if (rank == 0) {
        int batch = (int)(0.02 / (per_call > 1e-9 ? per_call : 1e-9));
        if (batch < 1) batch = 1;
        if (batch > 1000) batch = 1000;
        int batches = (int)(0.5 / (batch * (per_call > 1e-9 ? per_call : 1e-9)));
        if (batches < 3) batches = 3;
        if (batches > 30) batches = 30;
        if (quick && batches > 6) batches = 6;
        plan[0] = batch;
        plan[1] = batches;
    }
    MPI_Bcast(plan, 2, MPI_INT, 0, MPI_COMM_WORLD);
    double *t = malloc(sizeof(double) * plan[1]);
    for (int b = 0; b < plan[1]; b++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double s = MPI_Wtime();
        for (int i = 0; i < plan[0]; i++) f(state);
        t[b] = (MPI_Wtime() - s) * 1e6 / plan[0];
    }
    qsort(t, plan[1], sizeof(double), cmp);
    double m = t[plan[1] / 2];
    free(t);
    return m;
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank, n;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    int quick = getenv("COBRE_BENCH_QUICK") != NULL;
    double us;

    us = measure(do_barrier, NULL, quick);
    if (rank == 0) printf("RESULT\t%d\tbarrier\t%.3f\n", n, us);

    double s4[4] = {1, 2, 3, 4}, r4[4];
    struct ar a4 = {s4, r4, 4};
    us = measure(do_allreduce, &a4, quick);
    if (rank == 0) printf("RESULT\t%d\tallreduce 4 x f64\t%.3f\n", n, us);

    double *s4k = calloc(4096, sizeof(double)), *r4k = calloc(4096, sizeof(double));
    struct ar a4k = {s4k, r4k, 4096};
    us = measure(do_allreduce, &a4k, quick);
    if (rank == 0) printf("RESULT\t%d\tallreduce 4096 x f64\t%.3f\n", n, us);

    const char *labels[2] = {"allgatherv 64 KiB", "allgatherv 16 MiB"};
    long totals[2] = {64L << 10, 16L << 20};
    for (int k = 0; k < 2; k++) {
        int per = (int)(totals[k] / 8 / n);
        struct ag g;
        g.per = per;
        g.send = calloc(per, sizeof(double));
        g.recv = calloc((size_t)per * n, sizeof(double));
        g.counts = malloc(sizeof(int) * n);
        g.displs = malloc(sizeof(int) * n);
        for (int r = 0; r < n; r++) { g.counts[r] = per; g.displs[r] = r * per; }
        us = measure(do_allgatherv, &g, quick);
        if (rank == 0) printf("RESULT\t%d\t%s\t%.3f\n", n, labels[k], us);
        free(g.send); free(g.recv); free(g.counts); free(g.displs);
    }

    struct bc b = {calloc((1 << 20) / 8, sizeof(double)), (1 << 20) / 8};
    us = measure(do_bcast, &b, quick);
    if (rank == 0) printf("RESULT\t%d\tbroadcast 1 MiB\t%.3f\n", n, us);

    fflush(stdout);
    MPI_Finalize();
    return 0;
}
