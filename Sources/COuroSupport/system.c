#define _GNU_SOURCE
#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>
#include "COuroSupport.h"

int ouro_start_writeback(int fd, long long offset, long long len) {
    return sync_file_range(fd, offset, len, SYNC_FILE_RANGE_WRITE);
}

int ouro_drop_behind(int fd, long long offset, long long len) {
    int result = sync_file_range(fd, offset, len,
                                 SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
    if (result == 0) result = posix_fadvise(fd, offset, len, POSIX_FADV_DONTNEED);
    return result;
}

int ouro_open_unnamed(const char *directory) {
    return open(directory, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
}

int ouro_syncfs(int fd) {
    return syncfs(fd);
}

void ouro_limit_malloc_arenas(int arenas, int keep_free_bytes) {
    mallopt(M_ARENA_MAX, arenas);
    /* A fixed threshold: only very large buffers are mapped, and unmapped when freed. (By default glibc raises the
       threshold after such a free, and later buffers of that size then stay in the heap for good.) */
    mallopt(M_MMAP_THRESHOLD, 4 * 1024 * 1024);
    /* Free memory at the top of the heap kept for the next request rather than handed back at once: a 1 MiB buffer
       given back and taken again costs hundreds of page faults, slow on a VM that returns freed pages to its host. */
    if (keep_free_bytes > 0) mallopt(M_TRIM_THRESHOLD, keep_free_bytes);
}

#include <sys/socket.h>
#include <sys/un.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <stdio.h>
#include <sys/stat.h>

static int unix_address(const char *path, struct sockaddr_un *address) {
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof address->sun_path) { errno = ENAMETOOLONG; return -1; }
    strcpy(address->sun_path, path);
    return 0;
}

int ouro_unix_listen(const char *path, int backlog) {
    struct sockaddr_un address;
    if (unix_address(path, &address) != 0) return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    unlink(path);
    /* Created 0600 (owner only) from the start: a connection on it is trusted, so no moment with wider modes. */
    mode_t previous = umask(077);
    int bound = bind(fd, (struct sockaddr *)&address, sizeof address);
    umask(previous);
    if (bound != 0 || listen(fd, backlog) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int ouro_unix_connect(const char *path) {
    struct sockaddr_un address;
    if (unix_address(path, &address) != 0) return -1;
    /* Non-blocking: a listener that stopped accepting (a frozen node, its backlog full) fails at once (EAGAIN)
       instead of blocking the caller. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

int ouro_peer_pid(int sock) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    return credentials.pid;
}

long long ouro_peer_uid(int sock) {
    struct ucred credentials;
    socklen_t length = sizeof credentials;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return -1;
    return credentials.uid;
}

int ouro_same_network_namespace(int pid) {
    char path[64];
    struct stat mine, theirs;
    snprintf(path, sizeof path, "/proc/%d/ns/net", pid);
    if (stat("/proc/self/ns/net", &mine) != 0 || stat(path, &theirs) != 0) return -1;
    return mine.st_dev == theirs.st_dev && mine.st_ino == theirs.st_ino;
}

int ouro_send_with_fd(int sock, const void *data, size_t length, int fd) {
    struct iovec iov = { (void *)data, length };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int))];
    memset(control, 0, sizeof control);
    if (fd >= 0) {
        message.msg_control = control;
        message.msg_controllen = sizeof control;
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &fd, sizeof(int));
    }
    ssize_t sent;
    do { sent = sendmsg(sock, &message, MSG_NOSIGNAL); } while (sent < 0 && errno == EINTR);
    return sent == (ssize_t)length ? 0 : -1;
}

long ouro_receive_with_fd(int sock, void *buffer, size_t length, int *fd) {
    struct iovec iov = { buffer, length };
    struct msghdr message;
    memset(&message, 0, sizeof message);
    message.msg_iov = &iov;
    message.msg_iovlen = 1;
    char control[CMSG_SPACE(sizeof(int))];
    message.msg_control = control;
    message.msg_controllen = sizeof control;
    *fd = -1;
    ssize_t received;
    do { received = recvmsg(sock, &message, MSG_CMSG_CLOEXEC); } while (received < 0 && errno == EINTR);
    for (struct cmsghdr *header = CMSG_FIRSTHDR(&message); header != NULL; header = CMSG_NXTHDR(&message, header)) {
        if (header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS) memcpy(fd, CMSG_DATA(header), sizeof(int));
    }
    return received;
}

long long ouro_copy_file_range(int in, long long *in_offset, int out, long long *out_offset, size_t length) {
    loff_t from = *in_offset, to = *out_offset;
    ssize_t copied = copy_file_range(in, &from, out, &to, length, 0);
    *in_offset = from;
    *out_offset = to;
    return copied;
}
