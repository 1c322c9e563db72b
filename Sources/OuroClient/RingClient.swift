import Glibc
import Logging
import OuroCore

/// A client of the whole ring rather than one node: it learns the members from any node it is given, sends each
/// call to a live member, and moves on to another member when one stops answering. Shared by the mount and tools.
public final class RingClient: @unchecked Sendable {
    public let pool = ConnectionPool()
    private let lock = Lock()
    private var members: [NodeAddress]
    private var current: Int = 0
    private var lastRefresh = 0.0
    private let logger: Logger

    public init(seed: NodeAddress, logger: Logger) {
        members = [seed]
        self.logger = logger
        refreshMembers()
    }

    /// The node calls go to now.
    public var currentNode: NodeAddress { lock.withLock { members[current % members.count] } }

    /// Asks the members we know for the netmap; keeps the live ones (in ring order).
    public func refreshMembers() {
        let known = lock.withLock { members }
        for node in known {
            guard let map = try? NodeClient(node, pool: pool).netmap() else { continue }
            let live = map.liveAddresses
            guard !live.isEmpty else { continue }
            lock.withLock {
                let using = members[current % members.count]
                members = live + known.filter { !live.contains($0) }
                current = members.firstIndex(of: using) ?? 0
                lastRefresh = monotonicSeconds()
            }
            return
        }
    }

    /// Runs `body` against a live node. If the node cannot be reached at all (the request was never sent) the
    /// next member is tried; if it failed mid-request, only `idempotent` calls are retried elsewhere.
    /// A call moves on to another member only within this long: nodes that hang (stopped, not dead) each take a
    /// whole I/O timeout, and a mount's request must fail in bounded time rather than wait for every member in turn.
    static let failoverSeconds = Double(Limits.ioTimeoutSeconds) * 1.5

    public func call<T>(idempotent: Bool, _ body: (NodeClient) throws -> T) throws -> T {
        let count = lock.withLock { members.count }
        let deadline = monotonicSeconds() + Self.failoverSeconds
        var lastError: Error = OuroError.unavailable("no node of the ring is reachable")
        for attempt in 0..<(count + 1) where attempt == 0 || monotonicSeconds() < deadline {
            let node = currentNode
            do {
                return try body(NodeClient(node, pool: pool))
            } catch let error as OuroError where error.code == .unavailable {
                lastError = error
                let neverSent = error.message.hasPrefix("cannot connect") || error.message.hasPrefix("cannot resolve")
                guard neverSent || idempotent else { throw error }
                logger.warning("node unreachable, trying another", metadata: ["node": "\(node)", "error": "\(error)"])
                pool.forget(node)
                lock.withLock { if members[current % members.count] == node { current += 1 } }
                // A refused connection means a dead node: ask the others who is alive. (After a timeout they may
                // hang too, and asking would take a timeout each.)
                if attempt == 0 && neverSent { refreshMembers() }
            }
        }
        throw lastError
    }

    /// Repeats `body` while it fails with UNAVAILABLE, for up to `seconds`: long enough for the ring to declare a
    /// node that just died dead and route around it (a push through it fails until then).
    public func retrying<T>(seconds: Double = 15, _ body: (RingClient) throws -> T) throws -> T {
        let deadline = monotonicSeconds() + seconds
        while true {
            do {
                return try body(self)
            } catch let error as OuroError where error.code == .unavailable && monotonicSeconds() < deadline {
                logger.warning("ring unavailable, retrying", metadata: ["error": "\(error)"])
                usleep(500_000)
                refreshMembers()
            }
        }
    }

    /// One metadata call with failover.
    public func fs(_ operation: FSOperation, _ request: FSRequest, idempotent: Bool) throws -> FSReply {
        try call(idempotent: idempotent) { try $0.fs(operation, request, idempotent: idempotent) }
    }
}
