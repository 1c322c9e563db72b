#define _GNU_SOURCE
#include "CFuse.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

struct fuse_session *cfuse_session_new(int argc, const char *const *argv, const struct fuse_lowlevel_ops *ops,
                                       void *userdata) {
    struct fuse_args args = FUSE_ARGS_INIT(argc, (char **)argv);
    struct fuse_session *se = fuse_session_new(&args, ops, sizeof(*ops), userdata);
    fuse_opt_free_args(&args);  // frees only what option parsing allocated, never argv
    return se;
}

int cfuse_session_loop_mt(struct fuse_session *se, unsigned max_threads) {
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    if (config == NULL) return -ENOMEM;
    fuse_loop_cfg_set_clone_fd(config, 0);
    fuse_loop_cfg_set_max_threads(config, max_threads);
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    return result;
}

ssize_t cfuse_io_read(int fd, void *buf, size_t buf_len, void *userdata);
ssize_t cfuse_io_writev(int fd, struct iovec *iov, int count, void *userdata);

int cfuse_session_watch_io(struct fuse_session *se) {
    const struct fuse_custom_io io = { .writev = cfuse_io_writev, .read = cfuse_io_read };
    return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}

void cfuse_prepare_signals(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);

    struct sigaction action;
    if (sigaction(SIGINT, NULL, &action) == 0 && action.sa_handler == SIG_IGN) signal(SIGINT, SIG_DFL);
}

// Decodes the octal escapes (\040 for a space, ...) mountinfo uses in paths, in place.
static void unescape_mountinfo_path(char *path) {
    char *out = path;
    for (char *in = path; *in != '\0'; in++) {
        if (in[0] == '\\' && in[1] >= '0' && in[1] <= '3' && in[2] >= '0' && in[2] <= '7' && in[3] >= '0' &&
            in[3] <= '7') {
            *out++ = (char)((in[1] - '0') * 64 + (in[2] - '0') * 8 + (in[3] - '0'));
            in += 3;
        } else {
            *out++ = *in;
        }
    }
    *out = '\0';
}

// Finds the device id of the newest FUSE mount at `mountpoint` in /proc/self/mountinfo.
static int fuse_mount_device(const char *mountpoint, unsigned *major, unsigned *minor) {
    FILE *file = fopen("/proc/self/mountinfo", "re");
    if (file == NULL) return -errno;
    char *line = NULL;
    size_t capacity = 0;
    int found = -ENOENT;
    // Fields: id parent major:minor root mountpoint options [optional fields...] - fstype source superoptions
    while (getline(&line, &capacity, file) != -1) {
        unsigned line_major, line_minor;
        char path[PATH_MAX];
        if (sscanf(line, "%*u %*u %u:%u %*s %4095s", &line_major, &line_minor, path) != 3) continue;
        const char *separator = strstr(line, " - ");
        if (separator == NULL || strncmp(separator + 3, "fuse", 4) != 0) continue;
        unescape_mountinfo_path(path);
        if (strcmp(path, mountpoint) != 0) continue;
        *major = line_major;
        *minor = line_minor;
        found = 0;  // keep going: a later line is a mount stacked on top of this one
    }
    free(line);
    fclose(file);
    return found;
}

int cfuse_set_read_ahead_kb(const char *mountpoint, unsigned kb) {
    unsigned major, minor;
    int result = fuse_mount_device(mountpoint, &major, &minor);
    if (result != 0) return result;

    char path[64];
    snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major, minor);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    char value[16];
    int length = snprintf(value, sizeof(value), "%u\n", kb);
    ssize_t written = write(fd, value, (size_t)length);
    result = written == length ? 0 : written < 0 ? -errno : -EIO;
    close(fd);
    return result;
}

int cfuse_fusermount(const char *option, const char *mountpoint) {
    char *const argv[] = {"fusermount3", (char *)option, "--", (char *)mountpoint, NULL};
    pid_t pid;
    int error = posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ);
    if (error != 0) return -error;
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -errno;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
