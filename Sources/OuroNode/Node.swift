import COuroSupport
import Glibc
import Logging
import OuroClient
import OuroCore
import SystemPackage

/// Settings of one node (`ouro node …`).
public struct NodeConfiguration: Sendable {
    public var listen: NodeAddress
    public var dataDirectory: FilePath
    public var next: NodeAddress?
    public var join: NodeAddress?
    public var gossipIntervalMilliseconds = 1000
    public var maxFileSizeBytes = Limits.defaultMaxFileSizeBytes
    public var copies = 2
    /// Missed pings before the successor is declared dead.
    public var missesBeforeDead = 3
    /// Unreferenced chunk files younger than this are kept (a push may be about to reference them).
    public var garbageGraceSeconds = 300
    /// A node dead this long has its chunks' copies recreated on other nodes.
    public var gracePeriodSeconds = 60
    /// Seconds between two scrub passes over every local chunk copy.
    public var scrubIntervalSeconds = 600
    /// The cluster secret a TCP client must prove first (`ClusterSecret`); nil: none.
    public var secret: String?
    /// With a secret: TCP connections must be TLS keyed by it (`TLSContext`), except for `NODE PING` and `NODE
    /// LOCAL`. Off (`--insecure`): the challenge alone is enough, and bytes may cross in the clear.
    public var requiresEncryption = true

    public init(listen: NodeAddress, dataDirectory: FilePath) {
        self.listen = listen
        self.dataDirectory = dataDirectory
    }
}

/// What a node persists about the ring (`<data>/ring.json`).
struct RingRecord: Codable {
    var address: NodeAddress
    var next: NodeAddress?
    var netmap: Netmap
}

/// One OuroborosFS node: listens on one TCP port, stores chunks, keeps the whole catalog, knows the ring.
public final class Node: @unchecked Sendable {
    public let configuration: NodeConfiguration
    public let address: NodeAddress
    let logger: Logger
    let chunks: ChunkStore
    /// Makes small piece copies durable with one fdatasync (see `PieceJournal`).
    let pieceJournal: PieceJournal
    let catalog: CatalogStore
    /// Records received from peers by `CATALOG SYNC` since start, new or not (`NODE INFO catalogPulledRecords`).
    let pulledRecords = Counter()
    /// Rows a sweep replaced by tombstones since start (`NODE INFO catalogSweptRecords`; see `runSweeps`).
    let sweptRecords = Counter()
    let pool = ConnectionPool()
    /// Namespace changes on their way to the peers, off the request's path (see `NamespaceBroadcast`).
    let namespaceBroadcast = NamespaceBroadcast()
    /// Requests by command, for `/metrics`.
    let requestMetrics = RequestMetrics()
    private let listener: ListeningSocket
    /// `<data>/node.sock`, where clients on this machine get chunk files (see `LocalChunkFiles`); -1 if unavailable.
    private var localListener: Int32 = -1
    var localListenerDescriptor: Int32 { localListener }
    var localSocketPath: String? { localListener >= 0 ? configuration.dataDirectory.appending("node.sock").string : nil }
    let ringLock = Lock()
    /// Held by each change of membership from start to end (read the netmap, decide, publish the next epoch): two
    /// joins at once would otherwise each build on the same netmap, and the second would drop the first joiner.
    let membershipLock = Lock()
    private var ring: RingRecord
    private let connectionsLock = Lock()
    private var connections = ConnectionBudget()
    /// Connections still to prove the secret, with their sockets: the reaper cuts those past their deadline, even in
    /// the middle of a line sent a byte at a time.
    private var unprovedSockets: [ObjectIdentifier: (ConnectionAdmission, Socket)] = [:]
    private var stopping = false
    let verifier = ChunkVerifier()
    /// The disk this node's data is on, and those of the other members (see `DiskIdentity`).
    let ownDisk: String?
    let peerDisks = PeerDisks()
    /// At most one "wrong cluster secret" line a minute: someone guessing must not flood the log.
    let wrongSecretLog = LogThrottle(intervalSeconds: 60)
    let refusalLog = LogThrottle(intervalSeconds: 10)
    let repair = RepairState()
    let scrub = ScrubState()
    private let caughtUp = CaughtUpFlag()

    var hasCaughtUp: Bool { caughtUp.isSet }
    func markCaughtUp() { caughtUp.set() }

    public init(configuration: NodeConfiguration, logger: Logger) throws {
        self.configuration = configuration
        self.logger = logger
        try FileManagerLite.createDirectory(configuration.dataDirectory)
        ownDisk = DiskIdentity.of(configuration.dataDirectory)
        listener = try ListeningSocket(address: configuration.listen)
        address = listener.address
        chunks = try ChunkStore(directory: configuration.dataDirectory.appending("chunks"))
        pieceJournal = try PieceJournal(directory: configuration.dataDirectory, store: chunks, logger: logger)
        chunks.journal = pieceJournal
        catalog = try CatalogStore(directory: configuration.dataDirectory, origin: address.description, logger: logger)
        // Commits whose only durable copy was the piece journal (a crash before their records reached the log).
        if !pieceJournal.recoveredRecords.isEmpty { try catalog.merge(pieceJournal.recoveredRecords) }
        try pieceJournal.finishRecovery()
        pieceJournal.syncCatalog = { [catalog] in try catalog.syncLog() }
        let ringPath = configuration.dataDirectory.appending("ring.json")
        if let bytes = FileManagerLite.read(ringPath), let saved = try? WireJSON.decode(RingRecord.self, from: bytes),
           saved.address == address {
            ring = saved
        } else {
            ring = RingRecord(address: address, next: nil, netmap: Netmap())
        }
        if let next = configuration.next { ring.next = next }
        repair.observe(ring.netmap)
        try saveRing()
        namespaceBroadcast.deliver = { [unowned self] body in
            awaitPeers(sendApply(body, to: peersInRingOrder(), syncNow: []))
        }
    }

    /// Starts serving and the background loops; returns at once.
    public func start() {
        logger.info("node listening", metadata: ["address": "\(address)", "data": "\(configuration.dataDirectory)"])
        startThread(name: "accept") { [self] in acceptLoop() }
        let localPath = configuration.dataDirectory.appending("node.sock").string
        localListener = ouro_unix_listen(localPath, 64)
        if localListener >= 0 {
            chmod(localPath, 0o600)  // only the node's own user (root, for a mount) may take chunk files
            startThread(name: "local") { [self] in localAcceptLoop() }
        } else {
            logger.notice("no local socket: readers on this machine use TCP", metadata: ["path": "\(localPath)",
                          "error": "\(String(cString: strerror(errno)))"])
        }
        if let join = configuration.join {
            startThread(name: "join") { [self] in joinRing(via: join) }
        }
        startBackgroundLoops()
    }

    /// Stops accepting; background loops end at their next tick.
    public func stop() {
        connectionsLock.withLock { stopping = true }
        listener.shutdown()
        if localListener >= 0 {
            Glibc.shutdown(localListener, Int32(SHUT_RDWR))
            if let path = localSocketPath { unlink(path) }
        }
        try? catalog.syncLog()  // what peers sent with DEFER, not fsynced yet
        try? catalog.checkpoint()  // so that the next start replays nothing
    }

    var isStopping: Bool { connectionsLock.withLock { stopping } }

    // MARK: Ring state

    var next: NodeAddress? { ringLock.withLock { ring.next } }
    var netmap: Netmap { ringLock.withLock { ring.netmap } }

    func setNext(_ next: NodeAddress?) throws {
        try ringLock.withLock {
            ring.next = next
            try saveRingLocked()
        }
    }

    /// Adopts a netmap if it is newer; then the successor becomes the next live member after this node.
    @discardableResult
    func adopt(_ netmap: Netmap) -> Bool {
        ringLock.withLock {
            let current = ring.netmap
            guard netmap.epoch > current.epoch || (netmap.epoch == current.epoch && netmap.wire > current.wire) else { return false }
            ring.netmap = netmap
            repair.observe(netmap)
            if netmap.contains(address), let successor = netmap.liveSuccessor(of: address) {
                ring.next = successor
            }
            try? saveRingLocked()
            return true
        }
    }

    /// The live ring in order, starting with this node (just this node if it is not in the netmap yet).
    var liveRing: [NodeAddress] {
        let map = netmap
        return map.contains(address) ? map.liveRing(from: address) : [address]
    }

    private func saveRing() throws { try ringLock.withLock { try saveRingLocked() } }

    private func saveRingLocked() throws {
        try FileManagerLite.writeAtomically(configuration.dataDirectory.appending("ring.json"), WireJSON.encode(ring))
    }

    // MARK: Connections

    private func acceptLoop() {
        while let socket = listener.accept() {
            let admission = ConnectionAdmission(peer: ConnectionBudget.host(of: socket.peer), needsProof: configuration.secret != nil)
            guard admit(socket, admission) else { continue }
            startThread(name: "conn") { [self] in
                serve(socket, admission: admission)
                release(admission)
            }
        }
    }

    /// Counts a new connection in, or refuses it (`ConnectionBudget`): too many open, or too many that have not
    /// proved the secret, in all or from its peer.
    private func admit(_ socket: Socket, _ admission: ConnectionAdmission) -> Bool {
        let refusal: String? = connectionsLock.withLock {
            guard !stopping else { return "stopping" }
            let refusal = connections.admit(peer: admission.peer, needsProof: admission.needsProof)
            if refusal == nil, admission.needsProof { unprovedSockets[ObjectIdentifier(admission)] = (admission, socket) }
            return refusal
        }
        if let refusal {
            if refusalLog.shouldLog() { logger.warning("connection refused", metadata: ["peer": "\(socket.peer)", "why": "\(refusal)"]) }
            try? socket.write("ERR UNAVAILABLE \(refusal)\n")
        }
        return refusal == nil
    }

    /// The connection proved the cluster secret: it leaves the unproved budget.
    func noteProved(_ admission: ConnectionAdmission) {
        connectionsLock.withLock {
            guard admission.needsProof, !admission.proved else { return }
            admission.proved = true
            connections.proved(peer: admission.peer)
            unprovedSockets[ObjectIdentifier(admission)] = nil
        }
    }

    private func release(_ admission: ConnectionAdmission) {
        connectionsLock.withLock {
            connections.closed(peer: admission.peer, unproved: admission.needsProof && !admission.proved)
            unprovedSockets[ObjectIdentifier(admission)] = nil
        }
    }

    /// Every half second: cuts connections that have not proved the secret within `authenticateWithinSeconds` of
    /// being accepted (their thread then sees the end of the stream and lets the slot go).
    func reapUnprovedConnections() {
        while pause(seconds: 0.5) {
            let now = monotonicSeconds()
            let late = connectionsLock.withLock {
                unprovedSockets.values.filter { $0.0.acceptedAt + Limits.authenticateWithinSeconds + 1 < now }.map(\.1)
            }
            for socket in late { socket.abort() }
        }
    }

    /// Serves one connection of the local socket on the calling thread, unless too many are open.
    func serveAdmitted(_ socket: Socket, trusted: Bool = false) {
        let admission = ConnectionAdmission(peer: "local", needsProof: false)
        guard admit(socket, admission) else { return }
        serve(socket, trusted: trusted, admission: admission)
        release(admission)
    }
}

/// One accepted connection's place in the node's `ConnectionBudget` (changed under the node's connections lock).
final class ConnectionAdmission: @unchecked Sendable {
    let peer: String
    let needsProof: Bool
    var proved = false
    let acceptedAt = monotonicSeconds()

    init(peer: String, needsProof: Bool) {
        self.peer = peer
        self.needsProof = needsProof
    }
}

/// Remembers which stored chunk copies were checked against their catalog checksum, so a copy is read in full
/// once before its first use rather than on every range read. The check is tied to the file's size and change
/// time: a copy modified on disk since is checked again. (Rot that leaves both alone is the scrubber's.)
final class ChunkVerifier: @unchecked Sendable {
    private let lock = Lock()
    private var verified: [ChunkID: FileIdentity] = [:]
    /// When each copy was last read back from disk and found good (wall-clock seconds): what `CHUNK VERIFIED`,
    /// the mount's `user.ouro.verified` and the dashboard show. Kept in memory: a restarted node knows none until
    /// its copies are read again (by a reader's first use, `ouro verify` or the scrubber).
    private var readBack: [ChunkID: Double] = [:]

    struct FileIdentity: Equatable {
        var sizeBytes: Int
        var changedSeconds: Int
        var changedNanoseconds: Int
    }

    private func identity(_ chunk: ChunkID, _ store: ChunkStore) -> FileIdentity? {
        var info = stat()
        guard stat(store.path(of: chunk).string, &info) == 0 else { return nil }
        return FileIdentity(sizeBytes: Int(info.st_size), changedSeconds: info.st_ctim.tv_sec, changedNanoseconds: info.st_ctim.tv_nsec)
    }

    func isVerified(_ chunk: ChunkID, _ store: ChunkStore) -> Bool {
        guard let known = lock.withLock({ verified[chunk] }) else { return false }
        return identity(chunk, store) == known
    }

    func markVerified(_ chunk: ChunkID, _ store: ChunkStore) {
        guard let current = identity(chunk, store) else { return }
        lock.withLock { verified[chunk] = current }
    }

    func forget(_ chunk: ChunkID) { lock.withLock { _ = verified.removeValue(forKey: chunk) } }

    func noteReadBack(_ chunk: ChunkID) { lock.withLock { readBack[chunk] = wallClockSeconds() } }
    func lastReadBack(_ chunk: ChunkID) -> Double? { lock.withLock { readBack[chunk] } }
    /// The copy is gone (moved aside as corrupt, or removed): it was not verified.
    func dropReadBack(_ chunk: ChunkID) { lock.withLock { _ = readBack.removeValue(forKey: chunk) } }
}

/// Set once the node has pulled the catalog from its neighbours after starting (garbage collection waits for it).
final class CaughtUpFlag: @unchecked Sendable {
    private let lock = Lock()
    private var value = false
    var isSet: Bool { lock.withLock { value } }
    func set() { lock.withLock { value = true } }
}

/// Lets a repeated log line through at most once per interval.
final class LogThrottle: @unchecked Sendable {
    private let lock = Lock()
    private let intervalSeconds: Double
    private var last = -Double.infinity

    init(intervalSeconds: Double) { self.intervalSeconds = intervalSeconds }

    func shouldLog() -> Bool {
        let now = monotonicSeconds()
        return lock.withLock {
            guard now - last >= intervalSeconds else { return false }
            last = now
            return true
        }
    }
}

/// A count shared by threads.
final class Counter: @unchecked Sendable {
    private let lock = Lock()
    private var count = 0

    func add(_ amount: Int) { lock.withLock { count += amount } }
    var value: Int { lock.withLock { count } }
}
