import Logging
import OuroClient
import OuroCore

extension Node {
    /// Chunks of live files with fewer live holders than their content asks for.
    func underReplicatedChunks() -> Int {
        let map = netmap
        let contents = catalog.read { $0.liveContents() }
        let ringSize = max(1, map.liveAddresses.count)
        var short = 0
        for content in contents {
            let wanted = min(content.copies, ringSize)
            for chunk in content.chunks where chunk.holders.filter({ map.isAlive($0) || $0 == address }).count < wanted {
                short += 1
            }
        }
        return short
    }

    func repairStatus() -> String { "idle" }
}
