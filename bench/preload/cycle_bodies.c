/*
 * LD_PRELOAD shim for h2load: a different request body for every request.
 *
 * h2load reads the file given with -d anew for every request, with pread(fd, buf, n, 0)
 * (nghttp2's data provider, src/h2load_http2_session.cc: file_read_callback). This shim
 * answers such reads of that one file with the next body of a table instead: body i of
 * BENCH_BODIES (a file of BENCH_BODY_COUNT bodies of BENCH_BODY_LEN bytes each, all the
 * length of the -d file, so Content-Length and gRPC framing stay right), cycling, starting
 * at BENCH_BODY_START. Every other pread passes through untouched.
 *
 * At exit it writes how many bodies it served to BENCH_SHIM_REPORT, so the harness can
 * prove that the shim was really used (and not silently ignored).
 *
 * Build: cc -O2 -shared -fPIC -o cycle_bodies.so cycle_bodies.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

static pread_fn real_pread;
static const char *bodies;
static size_t body_len;
static unsigned long body_count;
static unsigned long next_body;
static unsigned long served;
static dev_t data_dev;
static ino_t data_ino;
static int data_fd = -1;

__attribute__((constructor)) static void shim_init(void) {
    real_pread = (pread_fn)dlsym(RTLD_NEXT, "pread");
    const char *path = getenv("BENCH_BODIES");
    const char *data = getenv("BENCH_DATA");
    const char *len = getenv("BENCH_BODY_LEN");
    const char *count = getenv("BENCH_BODY_COUNT");
    const char *start = getenv("BENCH_BODY_START");
    if (!path || !data || !len || !count) return;
    struct stat st;
    if (stat(data, &st) != 0) return;
    data_dev = st.st_dev;
    data_ino = st.st_ino;
    body_len = strtoul(len, NULL, 10);
    body_count = strtoul(count, NULL, 10);
    next_body = start ? strtoul(start, NULL, 10) : 0;
    if (body_len == 0 || body_count == 0 || (size_t)st.st_size != body_len) return;
    int fd = open(path, O_RDONLY);
    if (fd < 0) return;
    void *map = mmap(NULL, body_len * body_count, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) return;
    bodies = map;
}

__attribute__((destructor)) static void shim_report(void) {
    const char *report = getenv("BENCH_SHIM_REPORT");
    if (!report) return;
    FILE *out = fopen(report, "w");
    if (!out) return;
    fprintf(out, "%lu\n", __atomic_load_n(&served, __ATOMIC_RELAXED));
    fclose(out);
}

static int is_data_file(int fd) {
    int known = __atomic_load_n(&data_fd, __ATOMIC_RELAXED);
    if (known >= 0) return fd == known;
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_dev != data_dev || st.st_ino != data_ino) return 0;
    __atomic_store_n(&data_fd, fd, __ATOMIC_RELAXED);
    return 1;
}

ssize_t pread(int fd, void *buf, size_t n, off_t offset) {
    if (bodies && offset == 0 && n >= body_len && is_data_file(fd)) {
        unsigned long i = __atomic_fetch_add(&next_body, 1, __ATOMIC_RELAXED) % body_count;
        memcpy(buf, bodies + i * body_len, body_len);
        __atomic_fetch_add(&served, 1, __ATOMIC_RELAXED);
        return (ssize_t)body_len;
    }
    return real_pread(fd, buf, n, offset);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t offset) {
    return pread(fd, buf, n, offset);
}
