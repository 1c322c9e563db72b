import ArgumentParser
import Glibc
import OuroClient
import OuroCore

/// `ouro plan leave ADDR` / `ouro plan join ADDR`: what the change would move (pieces, bytes, to which nodes) and
/// how long that would take at a rate measured now, from the same pure plan (`MovePlan`) that `NODE LEAVE` follows.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan", abstract: "Show what a node's leaving or joining would move, before doing it.")
    @OptionGroup var options: NodeOption
    @Flag(help: "Print the plan as JSON (every chunk: content, index, parts, bytes, from, to).") var json = false
    @Argument(help: "leave or join.") var change: String
    @Argument(help: "The node (host:port).") var address: NodeAddress

    func run() throws {
        guard let kind = MovePlan.Change(rawValue: change.lowercased()) else { throw fail("want `ouro plan leave ADDR` or `ouro plan join ADDR`") }
        let pool = ConnectionPool()
        let plan: MovePlan
        do { plan = try NodeClient(options.node, pool: pool).plan(kind, address) } catch { throw fail("\(options.node): \(error)") }
        if json {
            print(String(decoding: WireJSON.encode(plan), as: UTF8.self))
            return
        }
        print(Self.report(plan, rate: kind == .leave ? Self.measureRate(plan, pool: pool) : nil), terminator: "")
    }

    /// The plan for people.
    static func report(_ plan: MovePlan, rate: (bytesPerSecond: Double, how: String)?) -> String {
        guard plan.change == .leave else {
            return "Joining \(plan.node): nothing moves. Chunks stay where they are; files written from now on use the new node.\n"
        }
        let copies = plan.copies
        var text = "Leaving \(plan.node): it holds \(plan.moves.count) chunk cop\(plan.moves.count == 1 ? "y" : "ies"); "
            + "\(copies.count) get a new copy elsewhere (\(RingReport.bytes(plan.bytesCopied))), "
            + "\(plan.moves.count - copies.count) keep copies enough and are only dropped.\n"
        for route in plan.routes {
            text += "  \(RingReport.pad("\(route.from) -> \(route.to)", 46))\(RingReport.pad("\(route.pieces) pieces", 14))\(RingReport.bytes(route.bytes))\n"
        }
        if plan.stranded > 0 { text += "REFUSED: \(plan.stranded) chunks have no other live copy and no node to take one\n" }
        if let rate, plan.bytesCopied > 0 {
            let seconds = Double(plan.bytesCopied) / max(1, rate.bytesPerSecond)
            text += "Estimated time: \(String(format1: max(0.1, seconds))) s or more, at \(String(format1: rate.bytesPerSecond / 1_048_576)) MiB/s"
                + " (\(rate.how); each chunk also waits for its new holder's fsync and a catalog commit)\n"
        }
        text += "Run `ouro leave --node \(plan.node)` to do exactly this (interrupted, it resumes when run again).\n"
        return text
    }

    /// Times reading up to 16 MiB of the plan's largest chunk from the leaving node: the disk and network a copy crosses.
    static func measureRate(_ plan: MovePlan, pool: ConnectionPool) -> (bytesPerSecond: Double, how: String)? {
        guard let largest = plan.copies.max(by: { $0.lengthBytes < $1.lengthBytes }) else { return nil }
        let length = min(largest.lengthBytes, 16 << 20)
        let started = monotonicSeconds()
        guard let read = try? NodeClient(plan.node, pool: pool).readChunk(largest.chunk, offset: 0, lengthBytes: length, sink: { _ in }),
              read > 0 else { return nil }
        let seconds = max(0.000_1, monotonicSeconds() - started)
        return (Double(read) / seconds, "measured now: \(RingReport.bytes(read)) of one chunk read from \(plan.node)")
    }
}
