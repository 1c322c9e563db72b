import Foundation
import Glibc
import OuroClient
import OuroCore
@testable import OuroNode
import Testing

/// The queue of namespace changes on their way to the peers: order, batching, waiting, and that a change's bytes
/// are let go once sent. (The leak stop 24 found, a slice of the queue and `removeFirst`, showed only in release
/// builds: this debug-built check passes with it too; `bench/readdir-bench.sh` and the scale bench show node RSS.)
@Suite struct NamespaceBroadcastTests {
    /// What `deliver` was handed: the record count at the front of each message, and the bytes after it.
    final class Deliveries: @unchecked Sendable {
        let lock = Lock()
        var messages: [(count: Int, body: [UInt8])] = []
        let gate = Semaphore(0)
        /// Signalled when the first message reaches `deliver` (and waits at the gate).
        let entered = Semaphore(0)
        var blockFirst = true
    }

    static func broadcast(_ deliveries: Deliveries) -> NamespaceBroadcast {
        let broadcast = NamespaceBroadcast()
        broadcast.deliver = { message in
            if deliveries.lock.withLock({ deliveries.blockFirst }) {
                deliveries.entered.signal()
                deliveries.gate.wait()
            }
            let count = message.prefix(4).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
            deliveries.lock.withLock { deliveries.messages.append((count, Array(message.dropFirst(4)))) }
        }
        return broadcast
    }

    /// Whether `bytes` is the only reference to its buffer: writing to it then does not copy.
    static func isUnshared(_ bytes: inout [UInt8]) -> Bool {
        let before = bytes.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
        bytes[0] ^= 1
        return before == bytes.withUnsafeBufferPointer { UInt(bitPattern: $0.baseAddress) }
    }

    @Test func changesGoInOrderManyToAMessageAndAreLetGo() throws {
        let deliveries = Deliveries()
        let broadcast = Self.broadcast(deliveries)
        // The first message waits at the gate while ten more changes of 300 records each queue up behind it:
        // more than one message holds (2,000 records), so they go as two, in order.
        var changes: [[[UInt8]]] = (0..<11).map { change in
            (0..<(change == 0 ? 1 : 300)).map { record in [UInt8(change), UInt8(record & 0xFF), UInt8(record >> 8)] }
        }
        var tickets = [broadcast.submit(changes[0])]
        deliveries.entered.wait()
        for change in changes.dropFirst() { tickets.append(broadcast.submit(change)) }
        #expect(tickets == Array(1...11))
        deliveries.lock.withLock { deliveries.blockFirst = false }
        deliveries.gate.signal()
        broadcast.wait(for: 11)

        let messages = deliveries.lock.withLock { deliveries.messages }
        #expect(messages.map(\.count) == [1, 1800, 1200], "\(messages.map(\.count))")
        #expect(messages.flatMap(\.body) == changes.flatMap { $0.flatMap { $0 } })
        #expect(broadcast.counts == (changes: 11, messages: 3))
        // One more round of the sender: whatever it held of the last batch is surely gone.
        broadcast.wait(for: broadcast.submit([[0xFF]]))
        // Nothing of a sent change is kept: each record's bytes are ours alone again.
        for change in changes.indices {
            for record in changes[change].indices {
                #expect(Self.isUnshared(&changes[change][record]), "change \(change), record \(record) still held")
            }
        }
    }

    @Test func waitingCoversEverythingQueuedBefore() throws {
        let deliveries = Deliveries()
        let broadcast = Self.broadcast(deliveries)
        broadcast.submit([[1]])
        broadcast.submit([[2]])
        deliveries.entered.wait()
        let waited = Semaphore(0)
        startThread(name: "waiter") {
            broadcast.awaitEarlier()
            waited.signal()
        }
        #expect(!waited.wait(seconds: 0.05), "awaitEarlier returned before the changes before it were delivered")
        deliveries.lock.withLock { deliveries.blockFirst = false }
        deliveries.gate.signal()
        waited.wait()
        #expect(deliveries.lock.withLock { deliveries.messages.flatMap(\.body) } == [1, 2])
    }
}
