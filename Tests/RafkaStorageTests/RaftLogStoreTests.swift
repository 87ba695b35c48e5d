import Foundation
import KafkaProtocol
import NIOCore
import RafkaCore
import RafkaStorage
import RaftCore
import Testing

@Suite struct RaftLogStoreTests {
    let directory = TemporaryDirectory()

    static func entries(_ range: ClosedRange<UInt64>, term: UInt64) -> [RaftEntry] {
        range.map { RaftEntry(term: Term(term), index: LogIndex($0), payload: .command(Array("cmd-\($0)".utf8))) }
    }

    @Test func roundTripsEntriesHardStateAndSnapshot() throws {
        defer { self.directory.remove() }
        do {
            let store = try RaftLogStore(directory: self.directory.path)
            _ = try store.load()
            var entries = Self.entries(1...5, term: 1)
            entries.append(RaftEntry(term: Term(2), index: LogIndex(6), payload: .configuration(RaftConfiguration(voters: [NodeID(1), NodeID(2)]))))
            entries.append(RaftEntry(term: Term(2), index: LogIndex(7), payload: .noop))
            try store.append(entries)
            try store.save(hardState: HardState(term: Term(2), vote: NodeID(1), commit: LogIndex(6)))
            try store.sync()
        }
        let loaded = try RaftLogStore(directory: self.directory.path).load()
        #expect(loaded.hardState == HardState(term: Term(2), vote: NodeID(1), commit: LogIndex(6)))
        #expect(loaded.entries.count == 7)
        #expect(loaded.entries[5].payload == .configuration(RaftConfiguration(voters: [NodeID(1), NodeID(2)])))
        #expect(loaded.snapshot == nil)
    }

    /// A new leader overwrites an uncommitted suffix (Raft §5.3): storage cuts back first.
    @Test func appendingOverAStoredSuffixReplacesIt() throws {
        defer { self.directory.remove() }
        do {
            let store = try RaftLogStore(directory: self.directory.path)
            _ = try store.load()
            try store.append(Self.entries(1...6, term: 1))
            try store.append(Self.entries(4...5, term: 2))
            try store.append(Self.entries(6...6, term: 2))
        }
        let loaded = try RaftLogStore(directory: self.directory.path).load()
        #expect(loaded.entries.map(\.index.rawValue) == [1, 2, 3, 4, 5, 6])
        #expect(loaded.entries.map(\.term.rawValue) == [1, 1, 1, 2, 2, 2])
    }

    @Test func snapshotCompactsTheLog() throws {
        defer { self.directory.remove() }
        do {
            let store = try RaftLogStore(directory: self.directory.path)
            _ = try store.load()
            try store.append(Self.entries(1...10, term: 1))
            try store.save(snapshot: RaftSnapshot(
                index: LogIndex(6), term: Term(1), configuration: RaftConfiguration(voters: [NodeID(1)]), data: [1, 2, 3]))
            try store.append(Self.entries(11...12, term: 1))
        }
        let loaded = try RaftLogStore(directory: self.directory.path).load()
        #expect(loaded.snapshot?.index == LogIndex(6))
        #expect(loaded.snapshot?.data == [1, 2, 3])
        #expect(loaded.entries.map(\.index.rawValue) == [7, 8, 9, 10, 11, 12])
    }

    /// A torn last entry past the commit index (never acknowledged) is cut.
    @Test func tornUncommittedTailIsTruncated() throws {
        defer { self.directory.remove() }
        do {
            let store = try RaftLogStore(directory: self.directory.path)
            _ = try store.load()
            try store.append(Self.entries(1...5, term: 1))
            try store.save(hardState: HardState(term: Term(1), commit: LogIndex(3)))
        }
        let path = self.directory.path + "/raft.log"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count - 5).write(to: URL(fileURLWithPath: path))
        let loaded = try RaftLogStore(directory: self.directory.path).load()
        #expect(loaded.entries.map(\.index.rawValue) == [1, 2, 3, 4])
        #expect(loaded.truncatedBytes > 0)
    }

    /// Damage inside the committed part is refused with the file and offset named.
    @Test func damagedCommittedEntryIsRefused() throws {
        defer { self.directory.remove() }
        do {
            let store = try RaftLogStore(directory: self.directory.path)
            _ = try store.load()
            try store.append(Self.entries(1...5, term: 1))
            try store.save(hardState: HardState(term: Term(1), commit: LogIndex(5)))
        }
        let path = self.directory.path + "/raft.log"
        var data = try Data(contentsOf: URL(fileURLWithPath: path))
        data[30] ^= 0xFF
        try data.write(to: URL(fileURLWithPath: path))
        #expect {
            _ = try RaftLogStore(directory: self.directory.path).load()
        } throws: { error in
            "\(error)".contains("raft.log at byte") && (error as? StorageError)?.code == .corruptSegment
        }
    }

    /// A damaged last entry that is committed is refused too: it was acknowledged.
    @Test func damagedCommittedTailIsRefused() throws {
        defer { self.directory.remove() }
        do {
            let store = try RaftLogStore(directory: self.directory.path)
            _ = try store.load()
            try store.append(Self.entries(1...5, term: 1))
            try store.save(hardState: HardState(term: Term(1), commit: LogIndex(5)))
        }
        let path = self.directory.path + "/raft.log"
        let data = try Data(contentsOf: URL(fileURLWithPath: path))
        try data.prefix(data.count - 3).write(to: URL(fileURLWithPath: path))
        #expect(throws: StorageError.self) { try RaftLogStore(directory: self.directory.path).load() }
    }
}

@Suite struct RaftCodecTests {
    static let messages: [RaftMessage.Kind] = [
        .voteRequest(lastIndex: LogIndex(9), lastTerm: Term(3), preVote: true, transfer: false),
        .voteResponse(granted: true, preVote: false),
        .append(prevIndex: LogIndex(4), prevTerm: Term(2), entries: [
            RaftEntry(term: Term(2), index: LogIndex(5), payload: .noop),
            RaftEntry(term: Term(2), index: LogIndex(6), payload: .command([1, 2, 3])),
            RaftEntry(term: Term(3), index: LogIndex(7), payload: .configuration(RaftConfiguration(voters: [NodeID(1), NodeID(3)]))),
        ], commit: LogIndex(5)),
        .appendResponse(success: false, index: LogIndex(3), hintTerm: Term(2)),
        .appendResponse(success: true, index: LogIndex(7), hintTerm: nil),
        .heartbeat(commit: LogIndex(7), readRound: 42),
        .heartbeatResponse(readRound: 42),
        .installSnapshot(RaftSnapshot(index: LogIndex(100), term: Term(4), configuration: RaftConfiguration(voters: [NodeID(2)]), data: [9, 8, 7])),
        .timeoutNow,
    ]

    @Test func everyMessageKindRoundTrips() throws {
        for kind in Self.messages {
            let message = RaftMessage(from: NodeID(1), to: NodeID(2), term: Term(5), kind: kind)
            var buffer = ByteBuffer()
            RaftCodec.writeMessage(message, into: &buffer)
            #expect(try RaftCodec.readMessage(&buffer) == message)
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test func truncatedMessagesFailCleanly() {
        var whole = ByteBuffer()
        RaftCodec.writeMessage(RaftMessage(from: NodeID(1), to: NodeID(2), term: Term(5), kind: Self.messages[2]), into: &whole)
        for length in 0..<whole.readableBytes {
            var cut = whole.getSlice(at: 0, length: length)!
            #expect(throws: KafkaDecodingError.self) { try RaftCodec.readMessage(&cut) }
        }
    }
}
