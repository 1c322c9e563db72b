#ifndef COUROSUPPORT_H
#define COUROSUPPORT_H
#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli) of `len` bytes, continuing from `crc` (start with 0).
/// Uses the SSE4.2 crc32 instruction when the CPU has it, a table otherwise.
uint32_t ouro_crc32c(uint32_t crc, const void *data, size_t len);

/// Starts writing back `[offset, offset+len)` of a file without waiting (Linux sync_file_range with
/// SYNC_FILE_RANGE_WRITE); 0 or -1 with errno. Durability still comes from fsync.
int ouro_start_writeback(int fd, long long offset, long long len);

/// Waits until `[offset, offset+len)` of a file is written back, then drops it from the page cache (HDFS's
/// "drop cache behind writes"); 0 or an error number.
int ouro_drop_behind(int fd, long long offset, long long len);

/// copy_file_range(2) from `in` at `*in_offset` to `out` at `*out_offset` (both advanced); bytes copied or -1.
long long ouro_copy_file_range(int in, long long *in_offset, int out, long long *out_offset, size_t length);

/// An unnamed file in `directory` (O_TMPFILE, read-write, close-on-exec): gone when closed, even after a crash;
/// -1 with errno (EOPNOTSUPP where the file system has no unnamed files).
int ouro_open_unnamed(const char *directory);

/// syncfs(2): writes back and flushes everything of the file system holding `fd` (one device flush for many
/// files); 0 or -1 with errno.
int ouro_syncfs(int fd);

/// Caps glibc's malloc arenas (mallopt M_ARENA_MAX: each thread that allocates otherwise gets its own arena, and
/// memory freed there stays resident) and fixes the mmap threshold, so large buffers go back to the system.
void ouro_limit_malloc_arenas(int arenas, int keep_free_bytes);

/// Unix-domain stream sockets (the node's local socket, `<data>/node.sock`): listen (replacing a stale socket
/// file) and connect (never blocking: EAGAIN when the listener's backlog is full); -1 with errno on failure
/// (ENAMETOOLONG for a path that does not fit).
int ouro_unix_listen(const char *path, int backlog);
int ouro_unix_connect(const char *path);

/// The process id and user id at the other end of a connected Unix socket (SO_PEERCRED), or -1.
int ouro_peer_pid(int sock);
long long ouro_peer_uid(int sock);

/// 1 if process `pid` is in this process's network namespace, 0 if not, -1 if that cannot be told.
int ouro_same_network_namespace(int pid);

/// Sends `length` bytes, with `fd` attached (SCM_RIGHTS) unless it is negative; 0 or -1 with errno.
int ouro_send_with_fd(int sock, const void *data, size_t length, int fd);

/// Receives up to `length` bytes; `*fd` is a descriptor that came with them (close-on-exec) or -1.
long ouro_receive_with_fd(int sock, void *buffer, size_t length, int *fd);

#endif
