import Glibc
import OuroCore

extension FileSystemError {
    /// The one table from wire error codes to errno at the FUSE boundary.
    init(_ error: Error, xattr: Bool = false) {
        guard let error = error as? OuroError else {
            self.init((error as? FileSystemError)?.errno ?? EIO)
            return
        }
        switch error.code {
        case .notFound: self.init(xattr ? ENODATA : ENOENT)
        case .gone: self.init(ENOENT)
        case .exists: self.init(EEXIST)
        case .notEmpty: self.init(ENOTEMPTY)
        case .notDir: self.init(ENOTDIR)
        case .isDir: self.init(EISDIR)
        case .badRequest: self.init(EINVAL)
        case .tooLarge: self.init(EFBIG)
        case .noSpace: self.init(ENOSPC)
        case .denied: self.init(EPERM)
        case .notSupported: self.init(ENOTSUP)
        case .unavailable, .corrupt, .internal: self.init(EIO)
        }
    }
}

extension InodeKind {
    /// The file-type bits of `st_mode`.
    var modeBits: UInt32 {
        switch self {
        case .file: UInt32(S_IFREG)
        case .directory: UInt32(S_IFDIR)
        case .symlink: UInt32(S_IFLNK)
        case .fifo: UInt32(S_IFIFO)
        case .socket: UInt32(S_IFSOCK)
        case .characterDevice: UInt32(S_IFCHR)
        case .blockDevice: UInt32(S_IFBLK)
        }
    }

    init?(modeBits mode: UInt32) {
        switch mode & UInt32(S_IFMT) {
        case UInt32(S_IFREG), 0: self = .file
        case UInt32(S_IFDIR): self = .directory
        case UInt32(S_IFLNK): self = .symlink
        case UInt32(S_IFIFO): self = .fifo
        case UInt32(S_IFSOCK): self = .socket
        case UInt32(S_IFCHR): self = .characterDevice
        case UInt32(S_IFBLK): self = .blockDevice
        default: return nil
        }
    }
}

func timespec(nanoseconds: Int64) -> timespec {
    // Rounded down: a time before 1970 with a fraction has a negative second and a positive tv_nsec.
    let (seconds, fraction) = nanoseconds.quotientAndRemainder(dividingBy: 1_000_000_000)
    return fraction < 0 ? Glibc.timespec(tv_sec: Int(seconds - 1), tv_nsec: Int(fraction + 1_000_000_000))
                        : Glibc.timespec(tv_sec: Int(seconds), tv_nsec: Int(fraction))
}

func nanoseconds(_ time: timespec) -> Int64 { Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec) }

func nowNanoseconds() -> Int64 {
    var now = Glibc.timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return nanoseconds(now)
}
