import Foundation

/// A reproducible stream of pseudo-random bytes (SplitMix64). The stream does not depend on how it is cut into
/// buffers, so the same seed can generate a file piece by piece for a push and again for checking a pull.
struct PseudoRandomBytes {
    private var state: UInt64
    private var pending: UInt64 = 0
    private var pendingCount = 0

    init(seed: UInt64) { state = seed }

    private mutating func nextWord() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    mutating func fill(_ buffer: UnsafeMutableRawBufferPointer) {
        var index = 0
        let count = buffer.count
        while index < count && pendingCount > 0 {
            buffer[index] = UInt8(truncatingIfNeeded: pending)
            pending >>= 8
            pendingCount -= 1
            index += 1
        }
        guard let base = buffer.baseAddress else { return }
        while count - index >= 8 {
            (base + index).storeBytes(of: nextWord().littleEndian, as: UInt64.self)
            index += 8
        }
        if index < count {
            pending = nextWord()
            pendingCount = 8
            while index < count {
                buffer[index] = UInt8(truncatingIfNeeded: pending)
                pending >>= 8
                pendingCount -= 1
                index += 1
            }
        }
    }

    mutating func bytes(_ count: Int) -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        result.withUnsafeMutableBytes { fill($0) }
        return result
    }
}

/// The seed of randomized tests: `OURO_TEST_SEED` replays a run; otherwise a fresh one, printed so it can be.
enum TestSeed {
    static let value: UInt64 = {
        if let text = ProcessInfo.processInfo.environment["OURO_TEST_SEED"], let seed = UInt64(text) {
            print("OuroTests: seed \(seed) (from OURO_TEST_SEED)")
            return seed
        }
        let seed = UInt64.random(in: 1...UInt64.max)
        print("OuroTests: seed \(seed) (replay with OURO_TEST_SEED=\(seed))")
        return seed
    }()

    /// A seed for one named use, derived from the run's seed.
    static func derived(_ label: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in label.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return value ^ hash
    }
}
