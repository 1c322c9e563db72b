import Glibc
import OuroClient
import OuroCore

/// Namespace changes on their way to the peers, sent off the request's path and many to a message.
///
/// A namespace change (a `.lazy` commit) is answered once it is in this node's log and queued here. One thread
/// sends everything queued as one `CATALOG APPLY … DEFER` to every live peer, reads their answers, then sends what
/// queued meanwhile: when changes come faster than a round trip to the peers, they share a message, a merge and a
/// log write on every peer (a group commit of the broadcast), and the writer pays for neither the sends nor the
/// wake-ups of the peers. Two rules keep the guarantees of the synchronous path where they matter:
/// - `awaitEarlier()` (a synchronous commit, `FS SYNC`) and `wait(for:)` (a rename) wait until the changes queued
///   before are applied by the peers (or given up on: a peer that did not answer catches up by sync), so the peers'
///   fsync for a synchronous commit covers them, and a name a client made is on every live peer before that
///   client's data is acknowledged;
/// - at most `limitRecords` records wait to be sent: a slow or hung peer makes writers wait instead of letting the
///   queue grow without bound.
final class NamespaceBroadcast: @unchecked Sendable {
    /// One message's worth, at most (a peer merges it under one lock).
    static let batchRecords = Limits.syncBatchRecords
    static let batchBytes = 4 << 20

    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    /// One change waiting to be sent: its ticket and its records' encodings.
    struct Queued {
        var ticket: UInt64
        var encoded: [[UInt8]]
        var bytes: Int
    }
    private var queue: [Queued] = []
    private var queuedRecords = 0
    private var issued: UInt64 = 0
    /// Every ticket up to this one is delivered or given up on (one sender, in order).
    private var answered: UInt64 = 0
    private var started = false
    private let limitRecords: Int
    /// Sends one message (the wire form of `[CatalogRecord]`) to the live peers and reads their answers; set once,
    /// before the first `submit`.
    var deliver: ([UInt8]) -> Void = { _ in }
    private var sentChanges = 0
    private var sentMessages = 0

    init(limitRecords: Int = 8 * Limits.syncBatchRecords) {
        self.limitRecords = limitRecords
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&changed, nil)
    }

    deinit {
        pthread_cond_destroy(&changed)
        pthread_mutex_destroy(&mutex)
    }

    /// Queues a change's records; returns its ticket for `wait(for:)`. Blocks only while the queue is full.
    @discardableResult
    func submit(_ encoded: [[UInt8]]) -> UInt64 {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while queuedRecords >= limitRecords { pthread_cond_wait(&changed, &mutex) }
        issued += 1
        queue.append(Queued(ticket: issued, encoded: encoded, bytes: encoded.reduce(0) { $0 + $1.count }))
        queuedRecords += encoded.count
        if !started {
            started = true
            startThread(name: "namespace-broadcast") { [self] in run() }
        }
        // Only the sender waits for changes, and only for a first one: no wake-up for each change.
        if queue.count == 1 { pthread_cond_broadcast(&changed) }
        return issued
    }

    /// Waits until the change with this ticket (and every one before it) is delivered or given up on.
    func wait(for ticket: UInt64) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while answered < ticket { pthread_cond_wait(&changed, &mutex) }
    }

    /// Waits until every change queued before this call is delivered or given up on.
    func awaitEarlier() {
        pthread_mutex_lock(&mutex)
        let target = issued
        pthread_mutex_unlock(&mutex)
        wait(for: target)
    }

    /// Changes delivered (or given up on) so far, and the messages that carried them (each to every live peer).
    var counts: (changes: Int, messages: Int) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return (sentChanges, sentMessages)
    }

    /// Takes the oldest changes that fit in one message (at least one).
    static func batch(of queue: [Queued]) -> Int {
        var count = 0
        var records = 0
        var bytes = 0
        for item in queue {
            if count > 0 && (records + item.encoded.count > batchRecords || bytes + item.bytes > batchBytes) { break }
            count += 1
            records += item.encoded.count
            bytes += item.bytes
        }
        return count
    }

    private func run() {
        while true {
            pthread_mutex_lock(&mutex)
            while queue.isEmpty { pthread_cond_wait(&changed, &mutex) }
            let count = Self.batch(of: queue)
            // Not a slice and `removeFirst`: with those, the removed changes' bytes stayed allocated in release
            // builds of Swift 6.3 (not debug ones): ~700 B per change on every node, 1.1 GiB after 1,000,000 names.
            var taken: [Queued] = []
            if count == queue.count {
                swap(&taken, &queue)
            } else {
                taken = Array(queue[..<count])
                queue.removeSubrange(..<count)
            }
            queuedRecords -= taken.reduce(0) { $0 + $1.encoded.count }
            pthread_cond_broadcast(&changed)  // room for waiting writers
            pthread_mutex_unlock(&mutex)

            let message = EncodedRecords.arrayBytes(of: taken.flatMap(\.encoded))
            let last = taken.last!.ticket
            taken = []  // nothing of these changes is held once they are answered
            deliver(message)

            pthread_mutex_lock(&mutex)
            answered = last
            sentChanges += count
            sentMessages += 1
            pthread_cond_broadcast(&changed)
            pthread_mutex_unlock(&mutex)
        }
    }
}
