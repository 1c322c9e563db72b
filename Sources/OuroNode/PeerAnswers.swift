import Glibc
import OuroClient

/// The peers' answers to namespace changes, collected off the request's path.
///
/// A namespace change (a `.lazy` commit) is answered once it is in this node's log and its `CATALOG APPLY` is
/// written to every peer's connection; one thread then reads the peers' answers, in the order the changes were sent
/// (a peer that did not answer is retried, then catches up by sync, as on the synchronous path). Two rules keep the
/// guarantees of the synchronous path where they matter:
/// - `awaitEarlier()`: a synchronous commit or `FS SYNC` first waits until every change sent before it is applied
///   by the peers (or given up on), so the peers' fsync for it covers them, and a name created by a client is on
///   every live peer before that client's data is acknowledged;
/// - at most `limit` changes wait for answers: a slow or hung peer makes senders wait instead of piling up
///   connections.
final class PeerAnswers: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var changed = pthread_cond_t()
    private var queue: [(ticket: UInt64, collect: () -> Void)] = []
    private var issued: UInt64 = 0
    /// Every ticket up to this one is answered (one collector, in order).
    private var answered: UInt64 = 0
    private var started = false
    private let limit: Int

    init(limit: Int = 16) {
        self.limit = limit
        pthread_mutex_init(&mutex, nil)
        pthread_cond_init(&changed, nil)
    }

    deinit {
        pthread_cond_destroy(&changed)
        pthread_mutex_destroy(&mutex)
    }

    /// Hands over the reading of answers (`collect`, run on the collector's thread); blocks only while `limit`
    /// others wait.
    func submit(_ collect: @escaping () -> Void) {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        while queue.count >= limit { pthread_cond_wait(&changed, &mutex) }
        issued += 1
        queue.append((issued, collect))
        if !started {
            started = true
            startThread(name: "peer-answers") { [self] in run() }
        }
        pthread_cond_broadcast(&changed)
    }

    /// Waits until every item submitted before this call is collected.
    func awaitEarlier() {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        let target = issued
        while answered < target { pthread_cond_wait(&changed, &mutex) }
    }

    /// Items submitted and not collected yet.
    var waiting: Int {
        pthread_mutex_lock(&mutex)
        defer { pthread_mutex_unlock(&mutex) }
        return queue.count
    }

    private func run() {
        while true {
            pthread_mutex_lock(&mutex)
            while queue.isEmpty { pthread_cond_wait(&changed, &mutex) }
            let next = queue[0]
            pthread_mutex_unlock(&mutex)
            next.collect()
            pthread_mutex_lock(&mutex)
            queue.removeFirst()
            answered = next.ticket
            pthread_cond_broadcast(&changed)
            pthread_mutex_unlock(&mutex)
        }
    }
}
