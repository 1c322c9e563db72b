#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include "COuroSupport.h"

int ouro_start_writeback(int fd, long long offset, long long len) {
    return sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE);
}

void ouro_limit_malloc_arenas(int arenas) {
    mallopt(M_ARENA_MAX, arenas);
    /* A fixed threshold: only very large buffers are mapped, and unmapped when freed. (By default glibc raises the
       threshold after such a free, and later buffers of that size then stay in the heap for good.) */
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
}
