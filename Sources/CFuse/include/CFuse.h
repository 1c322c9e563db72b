// The C bridge to libfuse3's low-level API, for OuroFS's FUSE adapter (the only module that imports it).
// Everything Swift cannot import directly (function-like macros, versioned symbols, struct-by-value
// option setup) is wrapped here; the rest of <fuse3/fuse_lowlevel.h> is used from Swift as is.
#ifndef CFUSE_H
#define CFUSE_H

// 3.12+: fuse_session_loop_mt takes a fuse_loop_config, so max_threads can be set (with 35 it is a macro).
#define FUSE_USE_VERSION 312
#include <fuse3/fuse_lowlevel.h>

/// Creates a session from `argv` (argv[0] is the program name; options as on a command line, e.g. "-o", "..."):
/// wraps FUSE_ARGS_INIT. Returns NULL if an option is not understood (libfuse prints why).
struct fuse_session *cfuse_session_new(int argc, const char *const *argv, const struct fuse_lowlevel_ops *ops,
                                       void *userdata);

/// Runs the multi-threaded session loop with at most `max_threads` workers and without clone_fd.
/// Returns 0 after an unmount, the signal number after a signal, or -errno.
int cfuse_session_loop_mt(struct fuse_session *se, unsigned max_threads);

/// Makes libfuse read requests and write replies through killpriv.c, after fuse_session_mount (same device fd),
/// so that INIT negotiates FUSE_HANDLE_KILLPRIV_V2 when the kernel offers it. Returns 0 or -errno.
int cfuse_session_watch_io(struct fuse_session *se);

/// 1 once the kernel accepted FUSE_HANDLE_KILLPRIV_V2: it no longer clears setuid/setgid itself, and
/// `cfuse_request_kills_suidgid` says, during a WRITE, SETATTR, OPEN or CREATE, whether the file system must.
int cfuse_killpriv_v2_active(void);

/// 1 if the request this thread is handling asks the file system to clear setuid, and setgid where the group
/// may execute (the caller lacks CAP_FSETID, or it is a chown).
int cfuse_request_kills_suidgid(void);

/// Unblocks SIGINT/SIGTERM/SIGHUP in the calling thread (threads it starts inherit this) and resets SIGINT from
/// SIG_IGN (as `cmd &` leaves it) to SIG_DFL: fuse_set_signal_handlers installs its handler only over SIG_DFL.
void cfuse_prepare_signals(void);

/// Sets the read-ahead window of the FUSE mount at `mountpoint` (canonical path) by writing
/// /sys/class/bdi/<major>:<minor>/read_ahead_kb, with the device id taken from /proc/self/mountinfo
/// (never from stat(2): stat of a FUSE mount from inside its own driver can deadlock). Returns 0 or -errno.
int cfuse_set_read_ahead_kb(const char *mountpoint, unsigned kb);

/// Runs `fusermount3 <option> -- <mountpoint>` and waits for it. Returns its exit status (0 on success),
/// 128 + signal if it was killed, or -errno if it could not be started.
int cfuse_fusermount(const char *option, const char *mountpoint);

#endif
