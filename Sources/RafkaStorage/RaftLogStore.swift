import KafkaProtocol
import NIOCore
import RafkaCore
import RaftCore

/// The durable state of one Raft server, in `directory`:
///
/// ```
/// hardstate            term, vote, commit index; CRC-32C; replaced atomically
/// raft.log             entries back to back: u32 length, u32 CRC-32C of the rest, u64 term,
///                      u64 index, u8 kind, payload
/// snapshot.bin         the latest snapshot: index, term, voters, data (a SQLite database of the
///                      metadata image); CRC-32C; replaced atomically
/// ```
///
/// Writes go to the page cache; `sync()` makes them durable, and the Raft shell calls it before
/// it sends any vote or acknowledgement. On load, damage inside the committed part of the log is
/// refused with the file and byte offset; only a torn tail — a bad last entry, past the commit
/// index, which therefore was never acknowledged — is truncated.
///
/// Not thread-safe: owned by the Raft shell, which runs each write on its thread pool and awaits
/// it before the next, so one thread at a time uses it (hence `@unchecked Sendable`).
public final class RaftLogStore: @unchecked Sendable {
    public let directory: String
    private var log: FileHandle
    private var logSize = 0
    /// File position of each entry in `raft.log`, by index.
    private var positions: [LogIndex: Int] = [:]
    private var firstIndex: LogIndex = .zero
    private var lastIndex: LogIndex = .zero
    private let allocator = ByteBufferAllocator()

    private var logPath: String { self.directory + "/raft.log" }
    private var hardStatePath: String { self.directory + "/hardstate" }
    private var snapshotPath: String { self.directory + "/snapshot.bin" }

    /// What `load` found, for the startup log.
    public struct Loaded: Sendable {
        public var hardState: HardState
        public var snapshot: RaftSnapshot?
        public var entries: [RaftEntry]
        public var truncatedBytes: Int
    }

    public init(directory: String) throws(StorageError) {
        self.directory = directory
        try FileSystem.createDirectory(directory)
        self.log = try FileHandle.open(directory + "/raft.log", create: true)
    }

    // MARK: Loading

    public func load() throws(StorageError) -> Loaded {
        let hardState = try self.loadHardState() ?? HardState()
        let snapshot = try self.loadSnapshot()
        let snapshotIndex = snapshot?.index ?? .zero
        let bytes = try self.log.read(at: 0, length: try self.log.size(), allocator: self.allocator)
        var reader = bytes
        var entries: [RaftEntry] = []
        var truncated = 0
        while reader.readableBytes > 0 {
            let position = reader.readerIndex
            let parsed = Self.parseEntry(&reader)
            guard case .success(let entry) = parsed else {
                guard case .failure(let problem) = parsed else { break }
                let atTail = Self.isTail(bytes, from: position)
                let committedEnd = max(hardState.commit, snapshotIndex)
                let expected = (entries.last?.index ?? snapshotIndex) + 1
                guard atTail && expected > committedEnd else {
                    throw StorageError(
                        .corruptSegment,
                        "\(self.logPath) at byte \(position): \(problem); the entry is committed or followed by others, refusing to start")
                }
                truncated = bytes.writerIndex - position
                break
            }
            if let previous = entries.last, entry.index != previous.index + 1 {
                throw StorageError(.corruptSegment, "\(self.logPath) at byte \(position): index \(entry.index) follows \(previous.index)")
            }
            self.positions[entry.index] = position
            entries.append(entry)
        }
        // Entries the snapshot already covers (left by a crash during compaction) are dropped.
        entries.removeAll { $0.index <= snapshotIndex }
        if let first = entries.first, first.index != snapshotIndex + 1 {
            throw StorageError(.corruptSegment, "\(self.logPath): first entry \(first.index) does not follow snapshot \(snapshotIndex)")
        }
        self.logSize = bytes.writerIndex - truncated
        if truncated > 0 { try self.log.truncate(to: self.logSize) }
        self.firstIndex = entries.first?.index ?? snapshotIndex + 1
        self.lastIndex = entries.last?.index ?? snapshotIndex
        self.positions = self.positions.filter { $0.key >= self.firstIndex && $0.key <= self.lastIndex }
        return Loaded(hardState: hardState, snapshot: snapshot, entries: entries, truncatedBytes: truncated)
    }

    /// Whether the entry at `position` is the last thing in the file (its declared length
    /// reaches the end, or it is shorter than its header).
    private static func isTail(_ bytes: ByteBuffer, from position: Int) -> Bool {
        let remaining = bytes.writerIndex - position
        guard remaining >= 8, let length = bytes.getInteger(at: position, as: UInt32.self) else { return true }
        return Int(length) + 8 >= remaining
    }

    enum Parsed {
        case success(RaftEntry)
        case failure(String)
    }

    private static func parseEntry(_ reader: inout ByteBuffer) -> Parsed {
        guard let length = reader.readInteger(as: UInt32.self), let crc = reader.readInteger(as: UInt32.self) else {
            return .failure("truncated entry header")
        }
        guard length >= 17, Int(length) <= reader.readableBytes, var body = reader.readSlice(length: Int(length)) else {
            return .failure("entry length \(length) exceeds the file")
        }
        guard CRC32C.checksum(body) == crc else { return .failure("entry CRC mismatch") }
        do {
            return .success(try RaftCodec.readEntry(&body))
        } catch {
            return .failure("\(error)")
        }
    }

    static func encode(_ entry: RaftEntry, into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(0))
        let body = buffer.writerIndex
        RaftCodec.writeEntry(entry, into: &buffer)
        let length = buffer.writerIndex - body
        let crc = CRC32C.checksum(buffer.getSlice(at: body, length: length)!)
        buffer.setInteger(UInt32(length), at: start)
        buffer.setInteger(crc, at: start + 4)
    }

    // MARK: Writing

    /// Writes `entries`, first cutting the stored log back if they replace stored ones (a new
    /// leader overwriting an uncommitted suffix, Raft §5.3).
    public func append(_ entries: [RaftEntry]) throws(StorageError) {
        guard let first = entries.first else { return }
        if first.index <= self.lastIndex {
            let position = self.positions[first.index] ?? self.logSize
            try self.log.truncate(to: position)
            self.logSize = position
            self.positions = self.positions.filter { $0.key < first.index }
            self.lastIndex = first.index - 1
        }
        precondition(first.index == self.lastIndex + 1, "raft log gap: \(first.index) after \(self.lastIndex)")
        var buffer = self.allocator.buffer(capacity: 64 * entries.count)
        for entry in entries {
            self.positions[entry.index] = self.logSize + buffer.writerIndex
            Self.encode(entry, into: &buffer)
        }
        try self.log.write(buffer, at: self.logSize)
        self.logSize += buffer.readableBytes
        self.lastIndex = entries.last!.index
    }

    public func save(hardState: HardState) throws(StorageError) {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(0x5248_5331))  // "RHS1"
        buffer.writeInteger(hardState.term.rawValue)
        buffer.writeInteger(hardState.vote?.rawValue ?? -1)
        buffer.writeInteger(hardState.commit.rawValue)
        buffer.writeInteger(CRC32C.checksum(buffer))
        try FileSystem.writeAtomically(self.hardStatePath, contents: buffer)
    }

    private func loadHardState() throws(StorageError) -> HardState? {
        guard FileSystem.exists(self.hardStatePath) else { return nil }
        var bytes = try FileSystem.readAll(self.hardStatePath)
        guard bytes.readableBytes == 28,
            CRC32C.checksum(bytes.getSlice(at: 0, length: 24)!) == bytes.getInteger(at: 24, as: UInt32.self),
            bytes.readInteger(as: UInt32.self) == 0x5248_5331
        else { throw StorageError(.corruptSegment, "\(self.hardStatePath): damaged hard state, refusing to start") }
        let term = Term(bytes.readInteger(as: UInt64.self)!)
        let vote = bytes.readInteger(as: Int32.self)!
        let commit = LogIndex(bytes.readInteger(as: UInt64.self)!)
        return HardState(term: term, vote: vote < 0 ? nil : NodeID(vote), commit: commit)
    }

    /// Makes a snapshot durable and drops the log entries it covers (rewriting the log file
    /// with the entries after it). A crash in between leaves covered entries, which `load` drops.
    public func save(snapshot: RaftSnapshot) throws(StorageError) {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(0x5253_4e31))  // "RSN1"
        buffer.writeInteger(snapshot.index.rawValue)
        buffer.writeInteger(snapshot.term.rawValue)
        RaftCodec.writeConfiguration(snapshot.configuration, into: &buffer)
        buffer.writeInteger(UInt64(snapshot.data.count))
        buffer.writeBytes(snapshot.data)
        buffer.writeInteger(CRC32C.checksum(buffer))
        try FileSystem.writeAtomically(self.snapshotPath, contents: buffer)
        try self.compactLog(through: snapshot.index)
    }

    private func loadSnapshot() throws(StorageError) -> RaftSnapshot? {
        guard FileSystem.exists(self.snapshotPath) else { return nil }
        var bytes = try FileSystem.readAll(self.snapshotPath)
        let damaged = StorageError(.corruptSegment, "\(self.snapshotPath): damaged snapshot, refusing to start")
        guard bytes.readableBytes >= 32,
            CRC32C.checksum(bytes.getSlice(at: 0, length: bytes.readableBytes - 4)!)
                == bytes.getInteger(at: bytes.writerIndex - 4, as: UInt32.self),
            bytes.readInteger(as: UInt32.self) == 0x5253_4e31,
            let index = bytes.readInteger(as: UInt64.self), let term = bytes.readInteger(as: UInt64.self),
            let configuration = try? RaftCodec.readConfiguration(&bytes),
            let size = bytes.readInteger(as: UInt64.self), Int(size) == bytes.readableBytes - 4,
            let data = bytes.readBytes(length: Int(size))
        else { throw damaged }
        return RaftSnapshot(index: LogIndex(index), term: Term(term), configuration: configuration, data: data)
    }

    private func compactLog(through index: LogIndex) throws(StorageError) {
        let keepFrom = self.positions[index + 1] ?? self.logSize
        let kept = try self.log.read(at: keepFrom, length: self.logSize - keepFrom, allocator: self.allocator)
        let temporary = self.logPath + ".compacting"
        let handle = try FileHandle.open(temporary, create: true)
        try handle.truncate(to: 0)
        try handle.write(kept, at: 0)
        try handle.sync()
        try FileSystem.rename(temporary, to: self.logPath)
        try FileSystem.syncDirectory(self.directory)
        self.log = handle
        self.positions = Dictionary(uniqueKeysWithValues: self.positions.compactMap { key, value in
            key > index ? (key, value - keepFrom) : nil
        })
        self.logSize = kept.readableBytes
        self.firstIndex = index + 1
        self.lastIndex = max(self.lastIndex, index)
    }

    /// fsyncs the log (hard state and snapshots are synced when written).
    public func sync() throws(StorageError) {
        try self.log.sync()
    }
}
