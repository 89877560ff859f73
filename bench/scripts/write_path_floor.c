// The floor of a 3-node concurrency-1 write on this machine (docs/benchmarks.md, pass L):
// the same four hops and three durable writes as Tessera's, with blocking syscalls, one
// thread per process and nothing else. Four processes on loopback: a client sends a
// 300-byte request to a leader, which sends it on to two followers, then writes its own
// 4 KiB block (O_DIRECT | O_DSYNC, an overwrite of written blocks, as the WAL's
// write-through group commit); each follower writes its block and acknowledges; the leader
// answers once its own write is done and one follower has acknowledged (two of three
// durable), and the client measures the round trip.
//
//   gcc -O2 -o /tmp/write_path_floor bench/scripts/write_path_floor.c
//   /tmp/write_path_floor DIR PORT N [MODE]
//     DIR   where the three 1 MiB files go (the data disk, e.g. /tmp)
//     PORT  the leader's port; the followers use PORT+1 and PORT+2
//     N     round trips; the first 10 % are warm-up
//     MODE  dsync (default): O_DSYNC writes; nosync: O_DIRECT writes without O_DSYNC;
//           nodisk: no writes (the four hops alone)
//
// Prints the round trip's p50, p90 and p99 in microseconds.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 300
#define BLOCK 4096
#define FILE_BLOCKS 256

static const char *dir;
static int mode_sync = 1, mode_disk = 1;

static void die(const char *what) {
    perror(what);
    exit(1);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static void nodelay(int s) {
    int one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int accept_one(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(port);
    if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) die("bind/listen");
    int c = accept(l, 0, 0);
    if (c < 0) die("accept");
    close(l);
    nodelay(c);
    return c;
}

static int dial(int port) {
    for (int tries = 0; tries < 5000; tries++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = loopback(port);
        if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
            nodelay(s);
            return s;
        }
        close(s);
        usleep(1000);
    }
    die("connect");
    return -1;
}

static void read_msg(int s, char *b) {
    for (int n = 0; n < MSG;) {
        int r = read(s, b + n, MSG - n);
        if (r <= 0) exit(0);
        n += r;
    }
}

static void write_msg(int s, const char *b) {
    if (write(s, b, MSG) != MSG) die("write");
}

// A 1 MiB file of written (not merely allocated) blocks, opened for durable overwrites.
static int wal_file(const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/write_path_floor.%s.%d", dir, name, getpid());
    int f = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (f < 0) die(path);
    static char zeros[BLOCK * FILE_BLOCKS];
    if (write(f, zeros, sizeof zeros) != sizeof zeros || fsync(f)) die("zero-fill");
    close(f);
    f = open(path, O_RDWR | O_DIRECT | (mode_sync ? O_DSYNC : 0));
    if (f < 0) die(path);
    unlink(path);
    return f;
}

static void *block(void) {
    void *b;
    if (posix_memalign(&b, BLOCK, BLOCK)) die("posix_memalign");
    memset(b, 7, BLOCK);
    return b;
}

static void durable_write(int f, void *b, long k) {
    if (mode_disk && pwrite(f, b, BLOCK, (k % FILE_BLOCKS) * BLOCK) != BLOCK) die("pwrite");
}

static void follower(int port, const char *name) {
    int c = accept_one(port), f = mode_disk ? wal_file(name) : -1;
    void *b = block();
    char m[MSG];
    for (long k = 0;; k++) {
        read_msg(c, m);
        durable_write(f, b, k);
        write_msg(c, m);
    }
}

static void leader(int port) {
    int f1 = dial(port + 1), f2 = dial(port + 2);
    int c = accept_one(port), f = mode_disk ? wal_file("leader") : -1;
    void *b = block();
    char m[MSG], ack[MSG];
    long owed1 = 0, owed2 = 0;
    for (long k = 0;; k++) {
        read_msg(c, m);
        write_msg(f1, m);
        write_msg(f2, m);
        owed1++, owed2++;
        durable_write(f, b, k);
        // One acknowledgement of this round (older ones are drained on the way).
        for (int done = 0; !done;) {
            struct pollfd p[2] = {{f1, POLLIN, 0}, {f2, POLLIN, 0}};
            if (poll(p, 2, -1) < 0) die("poll");
            if (p[0].revents) {
                read_msg(f1, ack);
                done |= --owed1 == 0;
            }
            if (p[1].revents) {
                read_msg(f2, ack);
                done |= --owed2 == 0;
            }
        }
        write_msg(c, m);
    }
}

static int by_value(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s DIR PORT N [dsync|nosync|nodisk]\n", argv[0]);
        return 2;
    }
    dir = argv[1];
    int port = atoi(argv[2]);
    long n = atol(argv[3]);
    const char *mode = argc > 4 ? argv[4] : "dsync";
    mode_sync = strcmp(mode, "dsync") == 0;
    mode_disk = strcmp(mode, "nodisk") != 0;
    if (n < 10) n = 10;
    setpgid(0, 0);
    pid_t kids[3];
    if ((kids[0] = fork()) == 0) follower(port + 1, "f1");
    if ((kids[1] = fork()) == 0) follower(port + 2, "f2");
    if ((kids[2] = fork()) == 0) leader(port);
    int s = dial(port);
    double *lat = malloc(n * sizeof *lat);
    char m[MSG];
    memset(m, 1, MSG);
    for (long i = 0; i < n; i++) {
        double t = now_us();
        write_msg(s, m);
        read_msg(s, m);
        lat[i] = now_us() - t;
    }
    long warm = n / 10, kept = n - warm;
    qsort(lat + warm, kept, sizeof *lat, by_value);
    printf("write_path_floor %s: %ld round trips, p50 %.0f p90 %.0f p99 %.0f us\n", mode, kept,
           lat[warm + kept / 2], lat[warm + kept * 9 / 10], lat[warm + kept * 99 / 100]);
    close(s);
    for (int i = 0; i < 3; i++) kill(kids[i], SIGTERM);
    for (int i = 0; i < 3; i++) waitpid(kids[i], 0, 0);
    return 0;
}
