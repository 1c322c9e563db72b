/// Layered contents: a file's bytes as an ordered list of slices of stored contents (see docs/design.md, "Files that
/// change in place"). Pure functions only; the mount decides what to write, the node commits it.

/// The bytes `[sourceOffset, sourceOffset + lengthBytes)` of a plain stored content, placed at `fileOffset`.
public struct ContentSlice: Codable, Equatable, Sendable {
    public var fileOffset: UInt64
    public var lengthBytes: UInt64
    /// A plain content: chunked or inline, never layered or segmented.
    public var source: FileContent
    public var sourceOffset: UInt64

    public init(fileOffset: UInt64, lengthBytes: UInt64, source: FileContent, sourceOffset: UInt64 = 0) {
        self.fileOffset = fileOffset
        self.lengthBytes = lengthBytes
        self.source = source
        self.sourceOffset = sourceOffset
    }

    public var fileEnd: UInt64 { fileOffset + lengthBytes }

    /// The part of this slice inside `[from, to)`, if any.
    public func clipped(from: UInt64, to: UInt64) -> ContentSlice? {
        let start = max(fileOffset, from)
        let end = min(fileEnd, to)
        guard start < end else { return nil }
        return ContentSlice(fileOffset: start, lengthBytes: end - start, source: source, sourceOffset: sourceOffset + (start - fileOffset))
    }

    /// Same bytes from the same place (holders may differ: re-replication moves copies, not bytes).
    public func isSame(as other: ContentSlice) -> Bool {
        fileOffset == other.fileOffset && lengthBytes == other.lengthBytes && sourceOffset == other.sourceOffset
            && source.id == other.source.id
    }

    /// A well-formed slice: inside its source, which is plain.
    public var isWellFormed: Bool {
        guard source.slices == nil, source.segments == nil, lengthBytes > 0 else { return false }
        let (end, overflow) = sourceOffset.addingReportingOverflow(lengthBytes)
        let (_, fileOverflow) = fileOffset.addingReportingOverflow(lengthBytes)
        guard !overflow, !fileOverflow, end <= source.sizeBytes else { return false }
        if source.isInline { return true }
        return !source.chunks.isEmpty && source.chunks.count <= 999 && source.chunks.allSatisfy { !$0.holders.isEmpty }
            && source.chunks.indices.allSatisfy { source.chunks[$0].lengthBytes == source.layout.lengthBytes(ofChunk: $0) }
    }
}

/// A run of a file's bytes that comes from one source, or is a hole (`source == nil`: zeros).
public struct ContentExtent: Equatable, Sendable {
    public var fileOffset: UInt64
    public var lengthBytes: UInt64
    public var source: FileContent?
    public var sourceOffset: UInt64

    public var fileEnd: UInt64 { fileOffset + lengthBytes }
}

extension FileContent {
    /// A layered content of `sizeBytes` made of `slices` (later ones win; uncovered bytes are zeros).
    public init(id: ContentID, sizeBytes: UInt64, slices: [ContentSlice], start: NodeAddress) {
        self.init(id: id, sizeBytes: sizeBytes, start: start, copies: slices.map(\.source.copies).min() ?? 0, chunks: [])
        self.slices = slices
    }

    public var isLayered: Bool { slices != nil }

    /// Every form read as slices: a plain content is one slice over its bytes, segments one slice each.
    public var asSlices: [ContentSlice] {
        if let slices { return slices }
        if let segments {
            var offset: UInt64 = 0
            return segments.compactMap { segment in
                defer { offset += segment.sizeBytes }
                return segment.sizeBytes > 0 ? ContentSlice(fileOffset: offset, lengthBytes: segment.sizeBytes, source: segment) : nil
            }
        }
        return sizeBytes > 0 ? [ContentSlice(fileOffset: 0, lengthBytes: sizeBytes, source: self)] : []
    }

    /// `[offset, offset + length)` (cut at the file's size) as runs in file order, each from the last slice that
    /// covers it, or zeros.
    public func extents(offset: UInt64, length: UInt64) -> [ContentExtent] {
        let end = min(sizeBytes, offset.addingReportingOverflow(length).overflow ? UInt64.max : offset + length)
        guard offset < end else { return [] }
        guard slices != nil || segments != nil else {
            return [ContentExtent(fileOffset: offset, lengthBytes: end - offset, source: self, sourceOffset: offset)]
        }
        var uncovered = [(offset, end)]
        var found: [ContentExtent] = []
        for slice in asSlices.reversed() where !uncovered.isEmpty {
            var rest: [(UInt64, UInt64)] = []
            for (from, to) in uncovered {
                let start = max(from, slice.fileOffset)
                let stop = min(to, slice.fileEnd)
                guard start < stop else {
                    rest.append((from, to))
                    continue
                }
                found.append(ContentExtent(fileOffset: start, lengthBytes: stop - start, source: slice.source,
                                           sourceOffset: slice.sourceOffset + (start - slice.fileOffset)))
                if from < start { rest.append((from, start)) }
                if stop < to { rest.append((stop, to)) }
            }
            uncovered = rest
        }
        for (from, to) in uncovered { found.append(ContentExtent(fileOffset: from, lengthBytes: to - from, source: nil, sourceOffset: 0)) }
        return found.sorted { $0.fileOffset < $1.fileOffset }
    }

    /// Bytes the file's slices hold (what `du` shows): holes and hidden bytes do not count.
    public var storedBytes: UInt64 {
        guard let slices else { return sizeBytes }
        // The union of what the slices cover (which slice wins a byte does not matter here): one sort, no
        // extents (asked on every fsync and stat of a file that may have thousands of slices).
        var total: UInt64 = 0
        var reach: UInt64 = 0
        for slice in slices.sorted(by: { $0.fileOffset < $1.fileOffset }) {
            let end = min(slice.fileEnd, sizeBytes)
            guard end > max(reach, slice.fileOffset) else { continue }
            total += end - max(reach, slice.fileOffset)
            reach = end
        }
        return total
    }

    /// The first offset at or after `offset` that holds data (`SEEK_DATA`), or nil past the last data.
    public func nextData(from offset: UInt64) -> UInt64? {
        extents(offset: offset, length: sizeBytes &- offset).first(where: { $0.source != nil })?.fileOffset
    }

    /// The first offset at or after `offset` in a hole (`SEEK_HOLE`); the end of the file counts as a hole.
    public func nextHole(from offset: UInt64) -> UInt64 {
        extents(offset: offset, length: sizeBytes &- offset).first(where: { $0.source == nil })?.fileOffset ?? sizeBytes
    }
}

public enum ContentSlices {
    /// The file after a write through the mount: `base` (any form, nil for none) cut at `truncatedTo` (bytes cut off
    /// stay gone when the file grows again), then `written` on top, all cut at `sizeBytes`; slices that later ones
    /// hide completely are dropped.
    public static func writing(_ written: [ContentSlice], onto base: FileContent?, truncatedTo: UInt64?, sizeBytes: UInt64,
                               id: ContentID, start: NodeAddress) -> FileContent {
        var slices = base?.asSlices ?? []
        if let truncatedTo { slices = slices.compactMap { $0.clipped(from: 0, to: truncatedTo) } }
        slices += written
        slices = slices.compactMap { $0.clipped(from: 0, to: sizeBytes) }
        return layered(id: id, sizeBytes: sizeBytes, slices: withoutHidden(slices), start: base?.start ?? start)
    }

    /// A compaction: `seen` (the first slices of the file when the compactor read it) merged over `region` into the
    /// plain content `merged` (its bytes are the file's `region` as `seen` showed it). Nil when the file's slices no
    /// longer begin with `seen` (a truncation or another compaction came first): the compaction is then dropped.
    /// Slices written after `seen` stay above the merged bytes, in order.
    public static func compacting(_ current: FileContent, seen: [ContentSlice], region: (from: UInt64, to: UInt64),
                                  into merged: FileContent, id: ContentID) -> FileContent? {
        let slices = current.asSlices
        guard !seen.isEmpty, slices.count >= seen.count, zip(slices, seen).allSatisfy({ $0.isSame(as: $1) }),
              region.from < region.to, merged.sizeBytes == region.to - region.from else { return nil }
        var result: [ContentSlice] = []
        for slice in slices.prefix(seen.count) {
            if let before = slice.clipped(from: 0, to: region.from) { result.append(before) }
            if let after = slice.clipped(from: region.to, to: .max) { result.append(after) }
        }
        result.append(ContentSlice(fileOffset: region.from, lengthBytes: merged.sizeBytes, source: merged))
        result += slices.dropFirst(seen.count)
        result = result.compactMap { $0.clipped(from: 0, to: current.sizeBytes) }
        return layered(id: id, sizeBytes: current.sizeBytes, slices: withoutHidden(result), start: current.start)
    }

    /// A layered content, or the plain one when a single slice is the whole file (a compacted file reads as any).
    static func layered(id: ContentID, sizeBytes: UInt64, slices: [ContentSlice], start: NodeAddress) -> FileContent {
        if slices.count == 1, let only = slices.first, only.fileOffset == 0, only.sourceOffset == 0,
           only.lengthBytes == sizeBytes, only.source.sizeBytes == sizeBytes {
            return only.source
        }
        return FileContent(id: id, sizeBytes: sizeBytes, slices: slices, start: start)
    }

    /// `slices` without those that later ones cover completely.
    public static func withoutHidden(_ slices: [ContentSlice]) -> [ContentSlice] {
        var covered = IntervalSet()
        var kept: [ContentSlice] = []
        for slice in slices.reversed() {
            guard !covered.contains(slice.fileOffset, slice.fileEnd) else { continue }
            covered.insert(slice.fileOffset, slice.fileEnd)
            kept.append(slice)
        }
        return kept.reversed()
    }

    /// How many slices lie (at least partly) in each `windowBytes`-aligned window; the busiest window first.
    public static func busiestWindow(_ slices: [ContentSlice], windowBytes: UInt64, sizeBytes: UInt64) -> (from: UInt64, to: UInt64) {
        var counts: [UInt64: Int] = [:]
        for slice in slices {
            var window = slice.fileOffset / windowBytes
            while window * windowBytes < slice.fileEnd {
                counts[window, default: 0] += 1
                window += 1
            }
        }
        let busiest = counts.max { $0.value != $1.value ? $0.value < $1.value : $0.key > $1.key }?.key ?? 0
        return (busiest * windowBytes, min(sizeBytes, (busiest + 1) * windowBytes))
    }
}

/// Disjoint half-open ranges of offsets, kept sorted and merged.
public struct IntervalSet: Equatable, Sendable {
    public private(set) var ranges: [(from: UInt64, to: UInt64)] = []
    /// The bytes the ranges cover, kept as they change (asked on every write through the mount).
    public private(set) var totalBytes: UInt64 = 0

    public init() {}

    public static func == (a: IntervalSet, b: IntervalSet) -> Bool {
        a.ranges.count == b.ranges.count && zip(a.ranges, b.ranges).allSatisfy { $0.from == $1.from && $0.to == $1.to }
    }

    public var isEmpty: Bool { ranges.isEmpty }

    /// Index of the first range that ends at or after `offset`.
    private func firstEnding(atOrAfter offset: UInt64) -> Int {
        var low = 0, high = ranges.count
        while low < high {
            let mid = (low + high) / 2
            if ranges[mid].to < offset { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public mutating func insert(_ from: UInt64, _ to: UInt64) {
        guard from < to else { return }
        let first = firstEnding(atOrAfter: from)
        var last = first
        var start = from, end = to
        var merged: UInt64 = 0
        while last < ranges.count, ranges[last].from <= to {
            start = min(start, ranges[last].from)
            end = max(end, ranges[last].to)
            merged += ranges[last].to - ranges[last].from
            last += 1
        }
        ranges.replaceSubrange(first..<last, with: [(start, end)])
        totalBytes = totalBytes - merged + (end - start)
    }

    public mutating func remove(_ from: UInt64, _ to: UInt64) {
        guard from < to else { return }
        var result: [(from: UInt64, to: UInt64)] = []
        for range in ranges {
            if range.to <= from || range.from >= to {
                result.append(range)
                continue
            }
            totalBytes -= min(range.to, to) - max(range.from, from)
            if range.from < from { result.append((range.from, from)) }
            if range.to > to { result.append((to, range.to)) }
        }
        ranges = result
    }

    /// Whether `[from, to)` lies inside one range.
    public func contains(_ from: UInt64, _ to: UInt64) -> Bool {
        guard from < to else { return true }
        let index = firstEnding(atOrAfter: from + 1)
        return index < ranges.count && ranges[index].from <= from && ranges[index].to >= to
    }

    /// `[from, to)` cut into runs that are inside the set (`true`) or outside it, in order.
    public func partition(_ from: UInt64, _ to: UInt64) -> [(from: UInt64, to: UInt64, inside: Bool)] {
        var result: [(UInt64, UInt64, Bool)] = []
        var position = from
        var index = firstEnding(atOrAfter: from + 1)
        while position < to {
            guard index < ranges.count, ranges[index].from < to else {
                result.append((position, to, false))
                break
            }
            let range = ranges[index]
            if range.from > position {
                result.append((position, range.from, false))
                position = range.from
            }
            let stop = min(range.to, to)
            if stop > position { result.append((position, stop, true)) }
            position = max(position, stop)
            index += 1
        }
        return result
    }
}
