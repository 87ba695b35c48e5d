import KafkaProtocol
import NIOCore

/// `<offset>.snapshot` files: the producer-state table as of a log offset, so that recovery
/// replays only the batches after it instead of the whole log (Kafka's producer snapshots).
///
/// Layout (big-endian): magic "RPS1", offset int64, entry count int32, entries, CRC-32C of all
/// preceding bytes. Entry: producer id int64, epoch int16, last offset int64, batch count int8,
/// batches (first seq int32, last seq int32, first offset int64, last offset int64, timestamp int64).
enum ProducerStateSnapshot {
    static let magic: UInt32 = 0x5250_5331  // "RPS1"

    static func fileName(_ offset: Int64) -> String { LogSegment.fileName(offset, extension: "snapshot") }

    /// The offsets of the snapshots in `directory`, newest first.
    static func offsets(in directory: String) throws(StorageError) -> [Int64] {
        let names = try FileSystem.list(directory)
        return names.compactMap { $0.hasSuffix(".snapshot") ? Int64($0.dropLast(9)) : nil }.sorted(by: >)
    }

    /// Removes the snapshots in `directory` past `offset`, and all but the newest `keepNewest`.
    static func prune(directory: String, after offset: Int64, keepNewest: Int = Int.max) throws(StorageError) {
        for (rank, snapshot) in try Self.offsets(in: directory).enumerated() where snapshot > offset || rank >= keepNewest {
            try FileSystem.remove(directory + "/" + Self.fileName(snapshot))
        }
    }

    static func encode(_ table: ProducerStateTable, offset: Int64) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(offset)
        buffer.writeInteger(Int32(table.entries.count))
        for (id, entry) in table.entries.sorted(by: { $0.key < $1.key }) {
            buffer.writeInteger(id)
            buffer.writeInteger(entry.epoch)
            buffer.writeInteger(entry.lastOffset)
            buffer.writeInteger(Int8(entry.batches.count))
            for batch in entry.batches {
                buffer.writeInteger(batch.firstSequence)
                buffer.writeInteger(batch.lastSequence)
                buffer.writeInteger(batch.firstOffset)
                buffer.writeInteger(batch.lastOffset)
                buffer.writeInteger(batch.timestamp)
            }
        }
        buffer.writeInteger(CRC32C.checksum(buffer))
        return buffer
    }

    /// The table and offset, or nil if the file is damaged (recovery then replays from further back).
    static func decode(_ bytes: ByteBuffer, into table: inout ProducerStateTable) -> Int64? {
        guard bytes.readableBytes >= 20 else { return nil }
        let body = bytes.getSlice(at: bytes.readerIndex, length: bytes.readableBytes - 4)!
        let stored = bytes.getInteger(at: bytes.writerIndex - 4, as: UInt32.self)
        guard CRC32C.checksum(body) == stored else { return nil }
        var reader = body
        guard reader.readInteger(as: UInt32.self) == Self.magic,
            let offset = reader.readInteger(as: Int64.self),
            let count = reader.readInteger(as: Int32.self), count >= 0
        else { return nil }
        var fresh = ProducerStateTable(batchesRemembered: table.batchesRemembered, producersMax: table.producersMax)
        for _ in 0..<count {
            guard let id = reader.readInteger(as: Int64.self), let epoch = reader.readInteger(as: Int16.self),
                reader.readInteger(as: Int64.self) != nil, let batchCount = reader.readInteger(as: Int8.self)
            else { return nil }
            for _ in 0..<max(0, Int(batchCount)) {
                guard let first = reader.readInteger(as: Int32.self), let last = reader.readInteger(as: Int32.self),
                    let firstOffset = reader.readInteger(as: Int64.self),
                    let lastOffset = reader.readInteger(as: Int64.self),
                    let timestamp = reader.readInteger(as: Int64.self)
                else { return nil }
                // Replaying through `record` rebuilds exactly the entry that was saved.
                fresh.record(
                    RecordBatchHeader(
                        baseOffset: firstOffset,
                        maxTimestamp: timestamp,
                        producerID: id,
                        producerEpoch: epoch,
                        baseSequence: first
                    ).withLastOffset(lastOffset, lastSequence: last)
                )
            }
        }
        table = fresh
        return offset
    }
}

extension RecordBatchHeader {
    /// A header whose last offset and last sequence are the given ones (for replaying snapshots).
    fileprivate func withLastOffset(_ lastOffset: Int64, lastSequence: Int32) -> RecordBatchHeader {
        var header = self
        header.lastOffsetDelta = Int32(lastOffset - self.baseOffset)
        // lastSequence is derived from baseSequence + lastOffsetDelta; they agree for every
        // batch a producer sends (its sequence range equals its record count).
        assert(header.lastSequence == lastSequence || lastSequence < self.baseSequence)
        return header
    }
}
