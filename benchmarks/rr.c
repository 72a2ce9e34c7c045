/* rr: a synthetic HTTP/1.1 request/response workload for the capacity benchmark.
 *
 *   rr SECONDS RATE     (RATE 0: as fast as possible)
 *
 * The process forks a client; the parent is the server (the PID to trace, in `app` mode).
 * They talk over a socketpair: the client writes a request with an x-request-id, the server
 * reads it and writes a 40-byte response, one at a time. The server prints "ready", waits for
 * a line on stdin (so the probe can attach first), runs for SECONDS, then prints the number of
 * requests it answered and the nanoseconds it took. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/wait.h>

static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void client(int fd, int go, double seconds, double rate)
{
    char req[256], buf[256], c;
    if (read(go, &c, 1) != 1)
        _exit(1);
    long long start = now_ns(), end = start + (long long)(seconds * 1e9);
    for (long long i = 0;; i++) {
        long long t = now_ns();
        if (t >= end)
            break;
        if (rate > 0) {
            long long due = start + (long long)(i * 1e9 / rate);
            if (due > t) {
                struct timespec ts = {due / 1000000000LL, due % 1000000000LL};
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            }
        }
        int n = snprintf(req, sizeof req,
                         "GET /bench HTTP/1.1\r\nhost: rr\r\nx-request-id: rr-%lld\r\n\r\n", i);
        if (write(fd, req, n) != n)
            _exit(1);
        size_t got = 0;
        while (got < sizeof RESP - 1) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0)
                _exit(1);
            got += r;
        }
    }
    close(fd);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: rr SECONDS RATE\n");
        return 2;
    }
    double seconds = atof(argv[1]), rate = atof(argv[2]);
    int sv[2], go[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(go))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        close(go[1]);
        client(sv[1], go[0], seconds, rate);
    }
    close(sv[1]);
    close(go[0]);
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    long long start = now_ns(), n = 0;
    if (write(go[1], "g", 1) != 1)
        return 1;
    char buf[4096];
    for (;;) {
        ssize_t r = read(sv[0], buf, sizeof buf);
        if (r <= 0)
            break;
        if (write(sv[0], RESP, sizeof RESP - 1) != (ssize_t)(sizeof RESP - 1))
            break;
        n++;
    }
    long long ns = now_ns() - start;
    close(sv[0]);
    waitpid(pid, NULL, 0);
    printf("%lld %lld\n", n, ns);
    return 0;
}
