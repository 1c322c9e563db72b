import Glibc

/// A point in monotonic time after which a wait gives up.
struct Deadline {
    let end: Double

    init(seconds: Double) { end = Deadline.now + seconds }

    var passed: Bool { Deadline.now >= end }
    var remaining: Double { max(0, end - Deadline.now) }

    static var now: Double {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }
}

/// Polls `condition` every `intervalSeconds` until it returns true; throws with `what` (and the last value seen,
/// if `describe` gives one) when `timeoutSeconds` pass first. Errors thrown by `condition` count as "not yet".
func waitUntil(_ what: @autoclosure () -> String, timeoutSeconds: Double, intervalSeconds: Double = 0.05,
               describe: (() -> String)? = nil, _ condition: () throws -> Bool) throws {
    let deadline = Deadline(seconds: timeoutSeconds)
    var lastError: Error?
    while true {
        do {
            if try condition() { return }
        } catch {
            lastError = error
        }
        if deadline.passed {
            var message = "timed out after \(timeoutSeconds) s waiting for \(what())"
            if let describe { message += "; last seen: \(describe())" }
            if let lastError { message += "; last error: \(lastError)" }
            throw TestFailure(message)
        }
        usleep(UInt32(intervalSeconds * 1_000_000))
    }
}

/// Like `waitUntil`, but `condition` must hold on every poll for `stableSeconds` in a row (for "nothing is left
/// behind" checks, where a state can look right for a moment before a late step of the node changes it).
func waitUntilStable(_ what: @autoclosure () -> String, timeoutSeconds: Double, stableSeconds: Double,
                     intervalSeconds: Double = 0.05, describe: (() -> String)? = nil, _ condition: () throws -> Bool) throws {
    var holdingSince: Double?
    try waitUntil("\(what()) (for \(stableSeconds) s in a row)", timeoutSeconds: timeoutSeconds, intervalSeconds: intervalSeconds,
                  describe: describe) {
        guard try condition() else {
            holdingSince = nil
            return false
        }
        let since = holdingSince ?? Deadline.now
        holdingSince = since
        return Deadline.now - since >= stableSeconds
    }
}
