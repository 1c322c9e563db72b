import OuroClient
import OuroCore
import Testing

/// The dashboard's views, from given netmaps and answers (no I/O): member states, verification summaries.
@Suite struct RingViewsTests {
    static let a = NodeAddress(host: "10.0.0.1", port: 7000)
    static let b = NodeAddress(host: "10.0.0.2", port: 7000)
    static let c = NodeAddress(host: "10.0.0.3", port: 7000)

    static func info(_ address: NodeAddress, next: NodeAddress, epoch: UInt64) -> NodeInfo {
        NodeInfo(address: address, next: next, usage: RingUsage(totalBytes: 100, freeBytes: 40, availableBytes: 30, files: 7),
                 chunkFiles: 5, chunkBytes: 500, catalogRecords: 9, underReplicatedChunks: 1, repair: "idle",
                 netmap: Netmap(epoch: epoch, members: []))
    }

    @Test func membersAreAliveDeadOrSilent() {
        let netmap = Netmap(members: [.init(address: Self.a, alive: true), .init(address: Self.b, alive: true),
                                      .init(address: Self.c, alive: false)])
        let picture = RingPicture(netmap: netmap, infos: [Self.info(Self.a, next: Self.b, epoch: 4), nil, nil], sampledAt: 12)
        #expect(picture.members.map(\.state) == ["alive", "noreply", "dead"])
        #expect(picture.members[0].next == Self.b.description && picture.members[0].diskAvailableBytes == 30)
        #expect(picture.members[0].shortChunks == 1 && picture.members[1].chunks == nil)
        // The epoch comes from the members' own netmaps (NETMAP GET's text has none); the file count from any.
        #expect(picture.epoch == 4 && picture.files == 7 && picture.sampledAt == 12)
    }

    @Test func verificationSaysTheOldestAndWhatIsMissing() {
        #expect(CopyVerification(times: []).text.hasPrefix("inline"))
        #expect(CopyVerification(times: [nil, nil]).text.hasPrefix("never"))
        // 2026-12-07T23:17:24Z
        #expect(CopyVerification(times: [1_796_685_444, 1_796_685_500]).text == "2026-12-07T23:17:24Z")
        let partly = CopyVerification(times: [1_796_685_500, nil, 1_796_685_444])
        #expect(partly.text == "partly: 2 of 3 copies, oldest 2026-12-07T23:17:24Z")
        #expect(partly.copies == 3 && partly.unverified == 1 && partly.oldest == 1_796_685_444)
    }
}
