/* Native MPI collectives, measured exactly as `cobre-shm bench` measures the
 * shm backend (launcher/src/bench/collectives.rs): per operation and size,
 * rank 0 calibrates a batch size and broadcasts it, then the median over
 * batches of the mean time per call in a batch is printed as
 * "RESULT\t<operation>\t<bytes>\t<microseconds>".
 * Usage: mpi_collectives BYTES... (COBRE_BENCH_QUICK set: fewer batches;
 * COBRE_BENCH_FRESH set: every sender rewrites its buffer before every call).
 * `cobre-shm bench` writes this file out and builds it with each MPI's mpicc. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

/* Buffers are written before they are measured: calloc'd pages that were
 * never written all map the kernel's zero page, which every read finds in
 * cache, and would flatter whoever reads them. */
static double *filled(size_t n, double v) {
    double *p = malloc(n * sizeof(double));
    if (!p) { fprintf(stderr, "out of memory\n"); MPI_Abort(MPI_COMM_WORLD, 1); }
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef void (*op_fn)(void *);

/* Fresh buffers: a new value per call, written by every sender. */
static int fresh;
static double stamp;
static void rewrite(double *buf, int n, int sender) {
    if (!fresh || !sender) return;
    stamp += 1.0;
    for (int i = 0; i < n; i++) buf[i] = stamp;
}

struct ag { double *send, *recv; int *counts, *displs; int per; };
struct ar { double *send, *recv; int n; };
struct bc { double *buf; int n; int root; };

static void do_barrier(void *s) { (void)s; MPI_Barrier(MPI_COMM_WORLD); }
static void do_allreduce(void *s) {
    struct ar *a = s;
    rewrite(a->send, a->n, 1);
    MPI_Allreduce(a->send, a->recv, a->n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
}
static void do_allgatherv(void *s) {
    struct ag *a = s;
    rewrite(a->send, a->per, 1);
    MPI_Allgatherv(a->send, a->per, MPI_DOUBLE, a->recv, a->counts, a->displs, MPI_DOUBLE,
                   MPI_COMM_WORLD);
}
static void do_bcast(void *s) {
    struct bc *b = s;
    rewrite(b->buf, b->n, b->root);
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
    if (per_call < 1e-9) per_call = 1e-9;
    double target = quick ? 0.005 : 0.02;
    int plan[2];
    if (rank == 0) {
        int batch = (int)(target / per_call);
        if (batch < 1) batch = 1;
        if (batch > 1000) batch = 1000;
        int batches = (int)((quick ? 0.05 : 0.4) / (batch * per_call));
        if (batches < 3) batches = 3;
        if (batches > (quick ? 5 : 25)) batches = quick ? 5 : 25;
        plan[0] = batch;
        plan[1] = batches;
    }
    MPI_Bcast(plan, 2, MPI_INT, 0, MPI_COMM_WORLD);
    double *t = malloc(sizeof(double) * plan[1]);
    for (int b = 0; b < plan[1]; b++) {
        MPI_Barrier(MPI_COMM_WORLD);
        double s = MPI_Wtime();
        for (int i = 0; i < plan[0]; i++) f(state);
        /* Until every rank is done (as the Rust kernel): an eager root is
           charged for the calls its receivers still have to finish. */
        MPI_Barrier(MPI_COMM_WORLD);
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
    fresh = getenv("COBRE_BENCH_FRESH") != NULL;

    double us = measure(do_barrier, NULL, quick);
    if (rank == 0) printf("RESULT\tbarrier\t0\t%.4f\n", us);
    for (int a = 1; a < argc; a++) {
        long bytes = atol(argv[a]);
        int elems = (int)(bytes / 8 > 0 ? bytes / 8 : 1);

        struct ar r;
        r.n = elems;
        r.send = filled(elems, 1.0 + rank);
        r.recv = filled(elems, 0.5);
        us = measure(do_allreduce, &r, quick);
        if (rank == 0) printf("RESULT\tallreduce\t%ld\t%.4f\n", bytes, us);
        free(r.send);
        free(r.recv);

        struct ag g;
        g.per = elems / n > 0 ? elems / n : 1;
        g.send = filled(g.per, 1.0 + rank);
        g.recv = filled((size_t)g.per * n, 0.5);
        g.counts = malloc(sizeof(int) * n);
        g.displs = malloc(sizeof(int) * n);
        for (int q = 0; q < n; q++) { g.counts[q] = g.per; g.displs[q] = q * g.per; }
        us = measure(do_allgatherv, &g, quick);
        if (rank == 0) printf("RESULT\tallgatherv\t%ld\t%.4f\n", bytes, us);
        free(g.send); free(g.recv); free(g.counts); free(g.displs);

        struct bc b = {filled(elems, 0.5), elems, rank == 0};
        us = measure(do_bcast, &b, quick);
        if (rank == 0) printf("RESULT\tbroadcast\t%ld\t%.4f\n", bytes, us);
        free(b.buf);
        fflush(stdout);
    }
    MPI_Finalize();
    return 0;
}
