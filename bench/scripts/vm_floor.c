// The VM's floor (docs/benchmarks.md, pass F), with blocking syscalls and no runtime:
//
// * `tcp` / `ev`: one hop. A TCP loopback ping-pong (32 bytes, TCP_NODELAY; blocking reads, or
//   busy-polling recv with SPIN=1) or an eventfd ping-pong between two threads, pinned to
//   CPU_A and CPU_B or left to the scheduler; the round trip's percentiles over 20,000
//   exchanges after 1,000 of warm-up.
// * `flush`: one durable WAL write. THREADS threads, each with its own file in DIR, overwrite
//   already written 4 KiB blocks with O_DIRECT, made durable by O_DSYNC (DSYNC=1, the WAL's
//   write-through) or by an fdatasync after each write (DSYNC=0).
//
//   gcc -O2 -o /tmp/vm_floor bench/scripts/vm_floor.c -lpthread
//   /tmp/vm_floor tcp          # unpinned
//   /tmp/vm_floor tcp 0 1      # one thread per CPU
//   /tmp/vm_floor tcp 0 0      # both on CPU 0
//   /tmp/vm_floor tcp 0 1 1    # one per CPU, busy-polling
//   /tmp/vm_floor ev 0 1       # eventfd wake-ups across CPUs
//   /tmp/vm_floor flush /tmp 1 0   # one writer, write + fdatasync
//   /tmp/vm_floor flush /tmp 3 1   # three writers (three nodes on one disk), O_DSYNC
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { N = 20000, WARMUP = 1000, PORT = 29555 };
static int cpu_a = -1, cpu_b = -1, spin = 0;
static int e1, e2;

static void pin(int cpu) {
    if (cpu < 0) return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *name, long long *v) {
    qsort(v, N, sizeof *v, cmp);
    printf("%-24s round trip p50 %.1f us  p90 %.1f us  p99 %.1f us\n", name, v[N / 2] / 1e3,
           v[N * 9 / 10] / 1e3, v[N * 99 / 100] / 1e3);
}

static int receive(int fd, char *buf) {
    int r;
    if (!spin) return (int)read(fd, buf, 64);
    do r = (int)recv(fd, buf, 64, MSG_DONTWAIT); while (r < 0);
    return r;
}

static struct sockaddr_in loopback(void) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(PORT);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int listener = -1;

/* The echo side: the listening socket is made before this thread starts, so the client's
   connect never races it. */
static void *tcp_echo(void *unused) {
    (void)unused;
    pin(cpu_b);
    int one = 1, l = listener;
    int c = accept(l, 0, 0);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[64];
    int r;
    while ((r = receive(c, buf)) > 0) write(c, buf, r);
    close(c);
    close(l);
    return 0;
}

static void tcp(const char *name) {
    pthread_t t;
    int one = 1;
    listener = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in la = loopback();
    if (bind(listener, (void *)&la, sizeof la) || listen(listener, 1)) { perror("bind"); exit(1); }
    pthread_create(&t, 0, tcp_echo, 0);
    pin(cpu_a);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback();
    if (connect(s, (void *)&a, sizeof a)) { perror("connect"); exit(1); }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    long long *v = malloc(N * sizeof *v);
    char buf[64] = {0};
    for (int i = 0; i < N + WARMUP; i++) {
        long long t0 = now_ns();
        write(s, buf, 32);
        receive(s, buf);
        if (i >= WARMUP) v[i - WARMUP] = now_ns() - t0;
    }
    close(s);
    pthread_join(t, 0);
    report(name, v);
}

static void *ev_echo(void *unused) {
    (void)unused;
    pin(cpu_b);
    uint64_t x;
    for (int i = 0; i < N + WARMUP; i++) {
        read(e1, &x, 8);
        x = 1;
        write(e2, &x, 8);
    }
    return 0;
}

static void ev(const char *name) {
    e1 = eventfd(0, 0);
    e2 = eventfd(0, 0);
    pthread_t t;
    pthread_create(&t, 0, ev_echo, 0);
    pin(cpu_a);
    long long *v = malloc(N * sizeof *v);
    uint64_t x;
    for (int i = 0; i < N + WARMUP; i++) {
        long long t0 = now_ns();
        x = 1;
        write(e1, &x, 8);
        read(e2, &x, 8);
        if (i >= WARMUP) v[i - WARMUP] = now_ns() - t0;
    }
    pthread_join(t, 0);
    report(name, v);
}

enum { FLUSHES = 400, BLOCK = 4096 };
static int dsync;
static const char *dir;

static void *writer(void *arg) {
    long id = (long)arg;
    char path[4096];
    snprintf(path, sizeof path, "%s/flush-floor-%ld", dir, id);
    int fd = open(path, O_CREAT | O_RDWR | O_DIRECT | (dsync ? O_DSYNC : 0), 0644);
    if (fd < 0) { perror(path); exit(1); }
    void *buf = 0;
    if (posix_memalign(&buf, BLOCK, BLOCK)) exit(1);
    memset(buf, 1, BLOCK);
    // Written blocks first, as the WAL's zero-filled segments are.
    for (int i = 0; i < FLUSHES; i++) pwrite(fd, buf, BLOCK, (off_t)i * BLOCK);
    fsync(fd);
    long long *v = malloc(FLUSHES * sizeof *v);
    for (int i = 0; i < FLUSHES; i++) {
        long long t0 = now_ns();
        pwrite(fd, buf, BLOCK, (off_t)i * BLOCK);
        if (!dsync) fdatasync(fd);
        v[i] = now_ns() - t0;
    }
    qsort(v, FLUSHES, sizeof *v, cmp);
    printf("writer %ld, %s: p50 %.0f us  p90 %.0f us\n", id, dsync ? "O_DSYNC" : "write + fdatasync",
           v[FLUSHES / 2] / 1e3, v[FLUSHES * 9 / 10] / 1e3);
    close(fd);
    unlink(path);
    return 0;
}

static int flush(int argc, char **argv) {
    if (argc < 5) return 2;
    dir = argv[2];
    int threads = atoi(argv[3]);
    dsync = atoi(argv[4]);
    pthread_t t[16];
    if (threads < 1 || threads > 16) return 2;
    for (long i = 0; i < threads; i++) pthread_create(&t[i], 0, writer, (void *)i);
    for (int i = 0; i < threads; i++) pthread_join(t[i], 0);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || (!strcmp(argv[1], "flush") && argc < 5)) {
        fprintf(stderr, "usage: %s tcp|ev [CPU_A CPU_B] [SPIN]\n       %s flush DIR THREADS DSYNC(0|1)\n",
                argv[0], argv[0]);
        return 2;
    }
    if (!strcmp(argv[1], "flush")) return flush(argc, argv);
    if (argc > 3) { cpu_a = atoi(argv[2]); cpu_b = atoi(argv[3]); }
    if (argc > 4) spin = atoi(argv[4]);
    char name[64];
    snprintf(name, sizeof name, "%s cpus %d,%d%s", argv[1], cpu_a, cpu_b, spin ? " spin" : "");
    if (!strcmp(argv[1], "tcp")) tcp(name); else ev(name);
    return 0;
}
