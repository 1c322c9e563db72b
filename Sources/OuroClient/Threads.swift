import Glibc

/// Starts a detached OS thread. Blocking I/O lives on these, never on Swift concurrency's small pool.
public func startThread(name: String = "ouro", _ body: @escaping () -> Void) {
    final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
    let box = Unmanaged.passRetained(Box(body)).toOpaque()
    var attributes = pthread_attr_t()
    pthread_attr_init(&attributes)
    pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
    pthread_attr_setstacksize(&attributes, 1 << 20)
    var thread = pthread_t()
    let result = pthread_create(&thread, &attributes, { raw in
        let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, box)
    pthread_attr_destroy(&attributes)
    precondition(result == 0, "pthread_create failed: \(result)")
}

/// Runs `work` for every element on up to `width` threads at once and returns the results in order.
public func parallelMap<T, R>(_ items: [T], width: Int, _ work: @escaping (T) -> R) -> [R] {
    guard items.count > 1, width > 1 else { return items.map(work) }
    let lock = Lock()
    var results = [R?](repeating: nil, count: items.count)
    var next = 0
    let done = Semaphore()
    let workers = min(width, items.count)
    for _ in 0..<workers {
        startThread {
            while true {
                let index: Int? = lock.withLock {
                    guard next < items.count else { return nil }
                    defer { next += 1 }
                    return next
                }
                guard let index else { break }
                let result = work(items[index])
                lock.withLock { results[index] = result }
            }
            done.signal()
        }
    }
    for _ in 0..<workers { done.wait() }
    return results.map { $0! }
}

/// A counting semaphore on a pthread mutex and condition.
public final class Semaphore: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var count: Int

    public init(_ count: Int = 0) {
        self.count = count
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    public func signal() {
        pthread_mutex_lock(&mutex)
        count += 1
        pthread_cond_signal(&condition)
        pthread_mutex_unlock(&mutex)
    }

    public func wait() {
        pthread_mutex_lock(&mutex)
        while count == 0 { pthread_cond_wait(&condition, &mutex) }
        count -= 1
        pthread_mutex_unlock(&mutex)
    }

    /// Takes one unit if one is free right now; never blocks.
    public func tryWait() -> Bool {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        guard count > 0 else { return false }
        count -= 1
        return true
    }

    /// Waits at most `seconds`; returns false on timeout.
    public func wait(seconds: Double) -> Bool {
        var deadline = timespec()
        clock_gettime(CLOCK_REALTIME, &deadline)
        let nanos = Int(deadline.tv_nsec) + Int((seconds - seconds.rounded(.down)) * 1e9)
        deadline.tv_sec += Int(seconds) + nanos / 1_000_000_000
        deadline.tv_nsec = nanos % 1_000_000_000
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while count == 0 {
            if pthread_cond_timedwait(&condition, &mutex, &deadline) == ETIMEDOUT { return false }
        }
        count -= 1
        return true
    }
}

/// A one-way gate: threads wait until it is opened, once.
public final class Latch: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var condition = pthread_cond_t()
    private var isOpen = false

    public init() {
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&condition, nil)
    }

    deinit {
        pthread_cond_destroy(&condition)
        pthread_mutex_destroy(&mutex)
    }

    public func open() {
        pthread_mutex_lock(&mutex)
        isOpen = true
        pthread_cond_broadcast(&condition)
        pthread_mutex_unlock(&mutex)
    }

    public func wait() {
        pthread_mutex_lock(&mutex)
        while !isOpen { pthread_cond_wait(&condition, &mutex) }
        pthread_mutex_unlock(&mutex)
    }
}
