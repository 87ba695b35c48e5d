import DequeModule
import NIOCore
import RafkaCore
import Synchronization

/// The node's in-memory cache of the newest batches of every partition it serves, so that
/// consumers at the tail (and nodes copying a partition) read without touching the disk.
///
/// Appends put the batches they wrote here (with their final offsets and leader epochs); a
/// read whose offset falls in the cached range of its partition is answered from memory, else
/// from the segment files. Each partition's cached batches are one contiguous run of offsets
/// ending at its log end: an append that does not continue the run starts a new one.
///
/// Bounded by bytes and by age: entries leave oldest first, across all partitions, once the
/// cache holds more than `bytesMax` or an entry is older than `maxAgeMilliseconds`. The bytes
/// counted are the memory the entries keep: the whole of the buffers their batches are in
/// (ByteBufferAllocator sizes buffers in powers of two, so a 430 KB batch keeps 512 KB). Shared by
/// every partition of the node (each on its own event loop), so its index sits behind one
/// `Mutex`, held for deque operations only — never across I/O (docs/lock-ordering.md).
public final class HotCache: Sendable {
    /// What `describe` reports (rafka-admin cache describe, the metrics).
    public struct Statistics: Sendable, Equatable {
        public var bytesMax: Int
        public var maxAgeMilliseconds: Int64
        /// The memory the cached batches keep (the buffers they are in), against `bytesMax`.
        public var bytes: Int
        public var batches: Int
        public var partitions: Int
        /// Reads answered from memory, and the bytes they returned.
        public var hits: Int64
        public var hitBytes: Int64
        /// Reads of offsets the cache did not hold (they went to the segment files).
        public var misses: Int64
        public var missBytes: Int64
        public var evictedForBytes: Int64
        public var evictedForAge: Int64

        /// Hits over reads that returned data (1 with no reads yet).
        public var hitRatio: Double {
            let reads = self.hits + self.misses
            return reads == 0 ? 1 : Double(self.hits) / Double(reads)
        }
    }

    /// A partition log's key: unique per opened log, so that a topic deleted and created again
    /// under the same name never sees the old log's batches.
    public struct LogKey: Hashable, Sendable {
        let rawValue: UInt64
    }

    private struct Entry {
        var baseOffset: Int64
        var nextOffset: Int64
        var bytes: ByteBuffer
        /// The memory it is counted for: its bytes, and for the first batch of a buffer the
        /// rest of that buffer.
        var heldBytes: Int
        var serial: UInt64
    }

    /// Insertion order across partitions; an item whose serial no longer heads its partition
    /// was dropped with its run (its bytes were already returned).
    private struct Order {
        var key: LogKey
        var serial: UInt64
        var insertedMilliseconds: Int64
    }

    private struct State {
        var runs: [LogKey: Deque<Entry>] = [:]
        var order = Deque<Order>()
        var bytes = 0
        var batches = 0
        var nextSerial: UInt64 = 0
        var nextKey: UInt64 = 0
        var hits: Int64 = 0
        var hitBytes: Int64 = 0
        var misses: Int64 = 0
        var missBytes: Int64 = 0
        var evictedForBytes: Int64 = 0
        var evictedForAge: Int64 = 0
        /// Buffers removed under the lock, released after it (see `locked`).
        var released: [ByteBuffer] = []
    }

    public let bytesMax: Int
    public let maxAgeMilliseconds: Int64
    private let state = Mutex(State())

    /// A cache of at most `bytesMax` bytes (0 turns it off) whose entries live at most
    /// `maxAgeMilliseconds`.
    public init(bytesMax: Int, maxAgeMilliseconds: Int64) {
        precondition(bytesMax >= 0 && maxAgeMilliseconds > 0)
        self.bytesMax = bytesMax
        self.maxAgeMilliseconds = maxAgeMilliseconds
    }

    /// A cache that holds nothing (tools and tests that open logs outside a broker).
    public static let disabled = HotCache(bytesMax: 0, maxAgeMilliseconds: 1)

    public var isEnabled: Bool { self.bytesMax > 0 }

    /// Batches larger than this are not kept: one would push out every partition's tail.
    public var batchBytesMax: Int { self.bytesMax / 10 }

    /// A key for a newly opened log.
    public func makeKey() -> LogKey {
        self.state.withLock { state in
            state.nextKey += 1
            return LogKey(rawValue: state.nextKey)
        }
    }

    // MARK: Filling

    /// Records batches just appended to a log: `batches` are whole batches, in offset order,
    /// as written (final offsets and epochs), all in one buffer of `bufferBytes` (its
    /// `storageCapacity`), which they keep in memory. Batches larger than a tenth of the cache
    /// are not kept: one would push out every partition's tail.
    public func put(
        _ key: LogKey,
        batches: [(baseOffset: Int64, nextOffset: Int64, bytes: ByteBuffer)],
        bufferBytes: Int,
        nowMilliseconds: Int64
    ) {
        guard self.isEnabled, let first = batches.first else { return }
        self.locked { state in
            if let last = state.runs[key]?.last, last.nextOffset != first.baseOffset {
                Self.drop(key, from: &state)
            }
            var unheld = max(0, bufferBytes - batches.reduce(0) { $0 + $1.bytes.readableBytes })
            for batch in batches {
                guard batch.bytes.readableBytes <= self.batchBytesMax else {
                    Self.drop(key, from: &state)
                    continue
                }
                let serial = state.nextSerial
                state.nextSerial += 1
                let held = batch.bytes.readableBytes + unheld
                unheld = 0
                state.runs[key, default: Deque()].append(
                    Entry(
                        baseOffset: batch.baseOffset, nextOffset: batch.nextOffset, bytes: batch.bytes, heldBytes: held,
                        serial: serial))
                state.order.append(Order(key: key, serial: serial, insertedMilliseconds: nowMilliseconds))
                state.bytes += held
                state.batches += 1
            }
            self.evict(&state, nowMilliseconds: nowMilliseconds)
        }
    }

    /// Forgets a log's batches (it was truncated, handed over, closed or deleted).
    public func drop(_ key: LogKey) {
        self.locked { state in Self.drop(key, from: &state) }
    }

    /// Forgets a log's batches below `offset` (retention moved its start).
    public func drop(_ key: LogKey, below offset: Int64) {
        self.locked { state in
            while let first = state.runs[key]?.first, first.nextOffset <= offset {
                Self.removeHead(of: key, from: &state)
            }
            Self.compactOrderIfStale(&state)
        }
    }

    /// Evicts entries past their age (the maintenance timer calls this; appends do too).
    public func evictExpired(nowMilliseconds: Int64) {
        guard self.isEnabled else { return }
        self.locked { state in self.evict(&state, nowMilliseconds: nowMilliseconds) }
    }

    // MARK: Reading

    /// Whole cached batches of `key` starting with the one that holds `offset`, up to
    /// `maxBytes` (at least one batch when `minOneBatch`) and ending at or before `end`, or nil
    /// when the cache does not hold `offset` or `admit` refuses their size (the caller reads the
    /// segments and reports it with `recordMiss`). `admit` runs inside the cache's lock; only
    /// admitted reads count as hits. One batch is returned as the cached slice itself; several
    /// are copied into one buffer.
    public func read(
        _ key: LogKey, from offset: Int64, maxBytes: Int, minOneBatch: Bool, end: Int64 = .max,
        admit: (_ bytes: Int) -> Bool = { _ in true }
    ) -> ByteBuffer? {
        guard self.isEnabled else { return nil }
        let found = self.state.withLock { state -> [ByteBuffer]? in
            guard let run = state.runs[key], let first = run.first, first.baseOffset <= offset,
                offset < run.last!.nextOffset
            else { return nil }
            // Binary search for the last entry whose base offset is ≤ offset.
            var low = 0
            var high = run.count
            while low < high {
                let mid = (low + high) / 2
                if run[mid].baseOffset <= offset { low = mid + 1 } else { high = mid }
            }
            var slices: [ByteBuffer] = []
            var total = 0
            // The batch holding `offset` is past `end`: not the caller's to see yet.
            guard run[low - 1].nextOffset <= end else { return nil }
            for entry in run[(low - 1)...] {
                guard entry.nextOffset <= end else { break }
                let size = entry.bytes.readableBytes
                if total + size > maxBytes && !(minOneBatch && slices.isEmpty) { break }
                total += size
                slices.append(entry.bytes)
            }
            guard admit(total) else { return nil }
            state.hits += 1
            state.hitBytes += Int64(total)
            return slices
        }
        guard let found else { return nil }
        // Copied outside the lock: the slices keep their storage alive.
        if found.count == 1 { return found[0] }
        var out = ByteBufferAllocator().buffer(capacity: found.reduce(0) { $0 + $1.readableBytes })
        for slice in found { out.writeImmutableBuffer(slice) }
        return out
    }

    /// One log's batches, for readers on any thread (see `PartitionLog.cachedReader`).
    public struct Reader: Sendable {
        let cache: HotCache
        let key: LogKey

        /// `HotCache.read` for this log.
        public func read(
            from offset: Int64, maxBytes: Int, minOneBatch: Bool, end: Int64,
            admit: (_ bytes: Int) -> Bool = { _ in true }
        ) -> ByteBuffer? {
            self.cache.read(self.key, from: offset, maxBytes: maxBytes, minOneBatch: minOneBatch, end: end, admit: admit)
        }
    }

    /// Counts a read served from the segment files.
    public func recordMiss(bytes: Int) {
        guard self.isEnabled else { return }
        self.state.withLock { state in
            state.misses += 1
            state.missBytes += Int64(bytes)
        }
    }

    public func describe() -> Statistics {
        self.state.withLock { state in
            Statistics(
                bytesMax: self.bytesMax, maxAgeMilliseconds: self.maxAgeMilliseconds, bytes: state.bytes, batches: state.batches,
                partitions: state.runs.count, hits: state.hits, hitBytes: state.hitBytes, misses: state.misses,
                missBytes: state.missBytes, evictedForBytes: state.evictedForBytes, evictedForAge: state.evictedForAge)
        }
    }

    // MARK: Inside the lock

    /// Runs `body` under the lock and releases the buffers it removed after unlocking: the last
    /// release of a large buffer frees (often unmaps) it, which must not stall every partition's
    /// loop waiting here.
    private func locked<Result: Sendable>(_ body: (inout State) -> Result) -> Result {
        let (result, released) = self.state.withLock { state -> (Result, [ByteBuffer]) in
            let result = body(&state)
            defer { state.released = [] }
            return (result, state.released)
        }
        withExtendedLifetime(released) {}
        return result
    }

    private static func drop(_ key: LogKey, from state: inout State) {
        guard let run = state.runs.removeValue(forKey: key) else { return }
        for entry in run {
            state.bytes -= entry.heldBytes
            state.released.append(entry.bytes)
        }
        state.batches -= run.count
        Self.compactOrderIfStale(&state)
    }

    /// Dropped entries leave their order items behind until eviction reaches them; once they
    /// outnumber the live ones, the order is rebuilt without them (amortized O(1) per drop), so
    /// its length stays within twice the live entries.
    private static func compactOrderIfStale(_ state: inout State) {
        guard state.order.count > 2 * state.batches + 1024 else { return }
        let runs = state.runs
        state.order = Deque(
            state.order.filter { item in
                // A run's entries were inserted in serial order and only leave from its front.
                guard let head = runs[item.key]?.first else { return false }
                return item.serial >= head.serial
            })
        assert(state.order.count == state.batches)
    }

    /// Removes the oldest entry of a run, in place (a copy of the deque would cost O(run)).
    private static func removeHead(of key: LogKey, from state: inout State) {
        guard let head = state.runs[key]?.removeFirst() else { return }
        if state.runs[key]!.isEmpty { state.runs[key] = nil }
        state.released.append(head.bytes)
        state.bytes -= head.heldBytes
        state.batches -= 1
    }

    /// Oldest first: while over the byte budget, or while the oldest entry is too old.
    private func evict(_ state: inout State, nowMilliseconds: Int64) {
        while let oldest = state.order.first {
            let expired = nowMilliseconds - oldest.insertedMilliseconds > self.maxAgeMilliseconds
            guard expired || state.bytes > self.bytesMax else { return }
            state.order.removeFirst()
            guard let head = state.runs[oldest.key]?.first, head.serial == oldest.serial else { continue }
            Self.removeHead(of: oldest.key, from: &state)
            if expired { state.evictedForAge += 1 } else { state.evictedForBytes += 1 }
        }
        assert(state.bytes == 0 || !state.runs.isEmpty)
    }
}
