// The kernel's FUSE_HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot negotiate: with it the kernel marks the mount
// SB_NOSEC and stops asking GETXATTR "security.capability" before every write (one FUSE round trip per write(2),
// half the cost of a 4 KiB write), and instead tells the file system, per request, when setuid/setgid must go.
//
// libfuse reads every request and writes every reply through these two functions (fuse_session_custom_io). The
// read side notes the kernel's offer in INIT and, for each request, whether it asks to clear setuid/setgid (a
// thread-local: libfuse's workers handle a request on the thread that read it). The write side adds the flag to
// libfuse's INIT reply. Only this file sees the kernel's structures (<linux/fuse.h> clashes with libfuse's).
#define _GNU_SOURCE
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

ssize_t cfuse_io_read(int fd, void *buf, size_t buf_len, void *userdata);
ssize_t cfuse_io_writev(int fd, struct iovec *iov, int count, void *userdata);
int cfuse_killpriv_v2_active(void);
int cfuse_request_kills_suidgid(void);

static _Atomic uint64_t init_unique;     // the INIT request whose reply gets the flag (0: none pending)
static _Atomic int killpriv_v2_active;   // the reply went out with the flag
static __thread int request_kills_suidgid;

/// Whether the u32 field at `offset` of a request argument of `size` bytes has `flag` set (0 if it is short).
static int flag_in(const char *arg, size_t arg_len, size_t size, size_t offset, uint32_t flag) {
    if (arg_len < size) return 0;
    uint32_t field;
    memcpy(&field, arg + offset, sizeof field);
    return (field & flag) != 0;
}

ssize_t cfuse_io_read(int fd, void *buf, size_t buf_len, void *userdata) {
    (void)userdata;
    ssize_t n = read(fd, buf, buf_len);
    request_kills_suidgid = 0;
    if (n < (ssize_t)sizeof(struct fuse_in_header)) return n;
    struct fuse_in_header header;
    memcpy(&header, buf, sizeof header);
    const char *arg = (const char *)buf + sizeof header;
    size_t arg_len = (size_t)n - sizeof header;
    switch (header.opcode) {
    case FUSE_INIT: {
        struct fuse_init_in in;
        if (arg_len >= offsetof(struct fuse_init_in, flags) + sizeof in.flags) {
            memcpy(&in, arg, offsetof(struct fuse_init_in, flags) + sizeof in.flags);
            if (in.major == 7 && in.minor >= 33 && (in.flags & FUSE_HANDLE_KILLPRIV_V2)) atomic_store(&init_unique, header.unique);
        }
        break;
    }
    case FUSE_WRITE:
        request_kills_suidgid = flag_in(arg, arg_len, sizeof(struct fuse_write_in),
                                        offsetof(struct fuse_write_in, write_flags), FUSE_WRITE_KILL_SUIDGID);
        break;
    case FUSE_SETATTR:
        request_kills_suidgid = flag_in(arg, arg_len, sizeof(struct fuse_setattr_in),
                                        offsetof(struct fuse_setattr_in, valid), FATTR_KILL_SUIDGID);
        break;
    case FUSE_OPEN:
        request_kills_suidgid = flag_in(arg, arg_len, sizeof(struct fuse_open_in),
                                        offsetof(struct fuse_open_in, open_flags), FUSE_OPEN_KILL_SUIDGID);
        break;
    case FUSE_CREATE:
        request_kills_suidgid = flag_in(arg, arg_len, sizeof(struct fuse_create_in),
                                        offsetof(struct fuse_create_in, open_flags), FUSE_OPEN_KILL_SUIDGID);
        break;
    default:
        break;
    }
    return n;
}

ssize_t cfuse_io_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    uint64_t pending = atomic_load(&init_unique);
    if (pending != 0 && count >= 2 && iov[0].iov_len == sizeof(struct fuse_out_header)
        && iov[1].iov_len >= offsetof(struct fuse_init_out, flags) + sizeof(uint32_t)) {
        struct fuse_out_header out;
        memcpy(&out, iov[0].iov_base, sizeof out);
        if (out.unique == pending && out.error == 0) {
            uint32_t flags;
            char *at = (char *)iov[1].iov_base + offsetof(struct fuse_init_out, flags);
            memcpy(&flags, at, sizeof flags);
            flags |= FUSE_HANDLE_KILLPRIV_V2;
            memcpy(at, &flags, sizeof flags);
            atomic_store(&init_unique, 0);
            atomic_store(&killpriv_v2_active, 1);
        }
    }
    return writev(fd, iov, count);
}

int cfuse_killpriv_v2_active(void) { return atomic_load(&killpriv_v2_active); }

int cfuse_request_kills_suidgid(void) { return request_kills_suidgid; }
