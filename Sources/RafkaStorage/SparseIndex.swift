import KafkaProtocol
import NIOCore

/// A segment's sparse offset index: (offset relative to the segment base, byte position)
/// entries at least `index.interval.bytes` apart, ascending in both fields.
///
/// Held in memory while the segment is used; written as `<base>.index` (8-byte big-endian
/// entries, Kafka's layout) when the segment closes, and read back lazily. The active segment's
/// goes into the recovery-point checkpoint when the log closes cleanly and is taken up at the
/// next open if the segment is still as the close left it; otherwise it is rebuilt from the log.
struct OffsetIndex {
    private(set) var relativeOffsets: [UInt32] = []
    private(set) var positions: [UInt32] = []
    /// Bytes of the batches noted since the last entry.
    private var bytesSinceEntry = 0

    var count: Int { self.relativeOffsets.count }

    /// Notes the batch of `bytes` at `position`: it gets an entry when it is the first or
    /// `intervalBytes` (`index.interval.bytes`) passed since the last one, so that entries point
    /// at batch starts. Returns whether it got one.
    mutating func note(relativeOffset: UInt32, position: Int, bytes: Int, intervalBytes: Int) -> Bool {
        let due = self.count == 0 || self.bytesSinceEntry >= intervalBytes
        if due {
            self.append(relativeOffset: relativeOffset, position: UInt32(position))
            self.bytesSinceEntry = 0
        }
        self.bytesSinceEntry += bytes
        return due
    }

    mutating func append(relativeOffset: UInt32, position: UInt32) {
        assert(self.relativeOffsets.last.map { $0 < relativeOffset } ?? true, "offset index must ascend")
        assert(self.positions.last.map { $0 < position } ?? true, "positions must ascend")
        self.relativeOffsets.append(relativeOffset)
        self.positions.append(position)
    }

    /// The position of the last entry whose offset is ≤ `relativeOffset`, or 0.
    func position(atOrBefore relativeOffset: UInt32) -> Int {
        var low = 0
        var high = self.relativeOffsets.count
        while low < high {
            let mid = (low + high) / 2
            if self.relativeOffsets[mid] <= relativeOffset { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? 0 : Int(self.positions[low - 1])
    }

    /// The greatest indexed batch position that is ≤ `position`, or 0.
    func position(atOrBeforePosition position: Int) -> Int {
        var low = 0
        var high = self.positions.count
        while low < high {
            let mid = (low + high) / 2
            if Int(self.positions[mid]) <= position { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? 0 : Int(self.positions[low - 1])
    }

    /// Drops entries at or beyond `position` (after truncation).
    mutating func truncate(toPosition position: Int) {
        while let last = self.positions.last, Int(last) >= position {
            self.positions.removeLast()
            self.relativeOffsets.removeLast()
        }
    }

    func serialized() -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(self.count * 8)
        for i in 0..<self.count {
            buffer.writeInteger(self.relativeOffsets[i], endianness: .big)
            buffer.writeInteger(self.positions[i], endianness: .big)
        }
        return buffer
    }

    /// Parses an index file, returning nil if it is not a well-formed ascending index within
    /// `segmentBytes` (the caller then rebuilds it from the log).
    static func parse(_ buffer: ByteBuffer, segmentBytes: Int) -> OffsetIndex? {
        guard buffer.readableBytes % 8 == 0 else { return nil }
        var index = OffsetIndex()
        index.relativeOffsets.reserveCapacity(buffer.readableBytes / 8)
        index.positions.reserveCapacity(buffer.readableBytes / 8)
        var reader = buffer
        while let offset = reader.readInteger(endianness: .big, as: UInt32.self),
            let position = reader.readInteger(endianness: .big, as: UInt32.self)
        {
            if let last = index.relativeOffsets.last, last >= offset { return nil }
            if let last = index.positions.last, last >= position { return nil }
            guard Int(position) < segmentBytes else { return nil }
            index.relativeOffsets.append(offset)
            index.positions.append(position)
        }
        // As `note` left it: the batches from the last entry's to the segment's end.
        if let last = index.positions.last { index.bytesSinceEntry = segmentBytes - Int(last) }
        return index
    }
}

/// A closed segment's offset index file, as a value any thread can read it from, with the
/// segment's log file to rebuild it from.
public struct OffsetIndexFile: Sendable {
    let baseOffset: Int64
    let path: String
    let segmentBytes: Int
    let log: FileHandle
    /// `index.interval.bytes`: how far apart a rebuilt index's entries are.
    let intervalBytes: Int

    /// The index, or nil if the file is missing (retention or topic deletion may remove it while
    /// this runs off the partition's loop) or does not fit the segment.
    func read() throws(StorageError) -> OffsetIndex? {
        guard FileSystem.exists(self.path) else { return nil }
        let bytes: ByteBuffer
        do {
            bytes = try FileSystem.readAll(self.path)
        } catch {
            if !FileSystem.exists(self.path) { return nil }
            throw error
        }
        return OffsetIndex.parse(bytes, segmentBytes: self.segmentBytes)
    }

    /// The index from its file, or, where that is missing or does not fit the segment (a crash
    /// before it was written), rebuilt from the segment's batch headers by the scan recovery
    /// uses (`LogSegment.scan`), an entry at least `intervalBytes` apart as appends make them.
    /// Nil where the scan finds a problem (the partition's loop then scans the segment, as at
    /// recovery). May wait for the device.
    func readOrRebuild() throws(StorageError) -> OffsetIndex? {
        if let index = try self.read() { return index }
        var index = OffsetIndex()
        let scanned = try LogSegment.scan(
            self.log, size: self.segmentBytes, baseOffset: self.baseOffset, from: 0, validate: false
        ) { position, header in
            // The scan checked that offsets ascend and fit the segment's 32 bits.
            _ = index.note(
                relativeOffset: UInt32(header.baseOffset - self.baseOffset), position: position,
                bytes: header.totalBytes, intervalBytes: self.intervalBytes)
        }
        return scanned.problem == nil ? index : nil
    }
}

/// A segment's sparse time index: (max timestamp so far, offset of that timestamp) entries,
/// ascending in timestamp. Written as `<base>.timeindex` (12-byte entries) on close.
struct TimeIndex {
    private(set) var timestamps: [Int64] = []
    private(set) var offsets: [Int64] = []

    var count: Int { self.timestamps.count }
    var last: (timestamp: Int64, offset: Int64)? {
        guard let t = self.timestamps.last else { return nil }
        return (t, self.offsets.last!)
    }

    mutating func append(timestamp: Int64, offset: Int64) {
        if let lastTimestamp = self.timestamps.last, timestamp <= lastTimestamp { return }
        self.timestamps.append(timestamp)
        self.offsets.append(offset)
    }

    /// The offset of the last entry whose timestamp is ≤ `timestamp`, or nil if none is.
    func offset(atOrBefore timestamp: Int64) -> Int64? {
        var low = 0
        var high = self.timestamps.count
        while low < high {
            let mid = (low + high) / 2
            if self.timestamps[mid] <= timestamp { low = mid + 1 } else { high = mid }
        }
        return low == 0 ? nil : self.offsets[low - 1]
    }

    mutating func truncate(fromOffset offset: Int64) {
        while let last = self.offsets.last, last >= offset {
            self.offsets.removeLast()
            self.timestamps.removeLast()
        }
    }

    func serialized(baseOffset: Int64) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(self.count * 12)
        for i in 0..<self.count {
            buffer.writeInteger(self.timestamps[i], endianness: .big)
            buffer.writeInteger(UInt32(truncatingIfNeeded: self.offsets[i] - baseOffset), endianness: .big)
        }
        return buffer
    }

    static func parse(_ buffer: ByteBuffer, baseOffset: Int64) -> TimeIndex? {
        guard buffer.readableBytes % 12 == 0 else { return nil }
        var index = TimeIndex()
        var reader = buffer
        while let timestamp = reader.readInteger(endianness: .big, as: Int64.self),
            let relative = reader.readInteger(endianness: .big, as: UInt32.self)
        {
            if let last = index.timestamps.last, last >= timestamp { return nil }
            index.timestamps.append(timestamp)
            index.offsets.append(baseOffset + Int64(relative))
        }
        return index
    }
}
