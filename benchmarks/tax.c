/* tax: what a process the profiler does NOT trace pays per system call.
 *
 *   tax REPS [SCALE [CALL]]
 *
 * Times three calls in a loop, REPS times each, interleaved (one repetition of each call, then
 * the next) so that a noisy neighbour falls on all three alike:
 *   getppid   getppid(), a syscall that touches nothing: only the syscall entry/exit path
 *   read      read(2) of 64 bytes from /dev/zero: a file read (no socket)
 *   sockpair  write(2) of 64 bytes into a unix socketpair, then read(2) of them on the other end
 *   tcp       the same over a TCP connection on 127.0.0.1 (TCP_NODELAY): every packet goes
 *             through the network stack, so hooks that run per packet of the node
 *             (sock:sk_data_ready, net:net_dev_queue) run for it, traced or not
 * SCALE multiplies the iteration counts (1.0: about 0.1 s per repetition of each call here);
 * CALL runs that call only.
 * Prints one line per call: NAME ITERS best_ns median_ns ns_1 .. ns_REPS (nanoseconds per
 * call; ITERS calls per repetition, and ITERS / 10 + 1 more to warm up). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_REPS 64

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int zero_fd, sv[2], tv[2];
static char buf[64];

static int do_getppid(void)
{
    /* the raw syscall: glibc does not cache getppid, but be explicit */
    return syscall(SYS_getppid) > 0 ? 0 : -1;
}

static int do_read(void)
{
    return read(zero_fd, buf, sizeof buf) == (ssize_t)sizeof buf ? 0 : -1;
}

static int do_sockpair(void)
{
    if (write(sv[0], buf, sizeof buf) != (ssize_t)sizeof buf)
        return -1;
    return read(sv[1], buf, sizeof buf) == (ssize_t)sizeof buf ? 0 : -1;
}

static int do_tcp(void)
{
    if (write(tv[0], buf, sizeof buf) != (ssize_t)sizeof buf)
        return -1;
    return read(tv[1], buf, sizeof buf) == (ssize_t)sizeof buf ? 0 : -1;
}

/* A connected TCP pair on loopback: tv[0] the client end, tv[1] the accepted one. */
static int tcp_pair(int tv[2])
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof a;
    int one = 1, lst = socket(AF_INET, SOCK_STREAM, 0);
    if (lst < 0 || bind(lst, (struct sockaddr *)&a, sizeof a) || listen(lst, 1) ||
        getsockname(lst, (struct sockaddr *)&a, &alen))
        return -1;
    tv[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (tv[0] < 0 || connect(tv[0], (struct sockaddr *)&a, sizeof a))
        return -1;
    tv[1] = accept(lst, NULL, NULL);
    close(lst);
    if (tv[1] < 0)
        return -1;
    setsockopt(tv[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(tv[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

struct call {
    const char *name;
    int (*fn)(void);
    long iters;
    double ns[MAX_REPS];
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 4) {
        fprintf(stderr, "usage: tax REPS [SCALE [CALL]]\n");
        return 2;
    }
    int reps = atoi(argv[1]);
    double scale = argc >= 3 ? atof(argv[2]) : 1.0;
    const char *only = argc == 4 ? argv[3] : NULL;
    if (reps < 1 || reps > MAX_REPS || !(scale > 0)) {
        fprintf(stderr, "tax: REPS must be 1..%d and SCALE positive\n", MAX_REPS);
        return 2;
    }
    zero_fd = open("/dev/zero", O_RDONLY);
    if (zero_fd < 0 || socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || tcp_pair(tv)) {
        perror("tax");
        return 1;
    }
    struct call calls[] = {
        {"getppid", do_getppid, (long)(400000 * scale), {0}},
        {"read", do_read, (long)(300000 * scale), {0}},
        {"sockpair", do_sockpair, (long)(60000 * scale), {0}},
        {"tcp", do_tcp, (long)(30000 * scale), {0}},
    };
    int n = sizeof calls / sizeof calls[0];
    if (only) { /* that call alone, moved to the front */
        int k = 0;
        while (k < n && strcmp(calls[k].name, only))
            k++;
        if (k == n) {
            fprintf(stderr, "tax: no call %s (getppid, read, sockpair, tcp)\n", only);
            return 2;
        }
        if (k)
            calls[0] = calls[k];
        n = 1;
    }
    for (int c = 0; c < n; c++) /* warm caches and the socket buffers */
        for (long i = 0; i < calls[c].iters / 10 + 1; i++)
            if (calls[c].fn())
                return 1;
    for (int r = 0; r < reps; r++) {
        for (int c = 0; c < n; c++) {
            long long t0 = now_ns();
            for (long i = 0; i < calls[c].iters; i++)
                if (calls[c].fn()) {
                    perror(calls[c].name);
                    return 1;
                }
            calls[c].ns[r] = (double)(now_ns() - t0) / (double)calls[c].iters;
        }
    }
    for (int c = 0; c < n; c++) {
        double sorted[MAX_REPS];
        memcpy(sorted, calls[c].ns, sizeof(double) * reps);
        qsort(sorted, reps, sizeof(double), cmp_double);
        double median = reps % 2 ? sorted[reps / 2] : (sorted[reps / 2 - 1] + sorted[reps / 2]) / 2;
        printf("%s %ld %.1f %.1f", calls[c].name, calls[c].iters, sorted[0], median);
        for (int r = 0; r < reps; r++)
            printf(" %.1f", calls[c].ns[r]);
        printf("\n");
    }
    return 0;
}
