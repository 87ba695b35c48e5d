#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import NIOCore
import NIOPosix
import Synchronization

/// An open file descriptor, closed when the last reference goes away.
///
/// Immutable after creation (but for `markUnlinked`), so it may be shared with the thread pool
/// that runs `fsync` while the owning event loop keeps appending: Linux allows `fsync` and
/// `pwrite` on one file at once.
public final class FileHandle: @unchecked Sendable {
    public let descriptor: Int32
    public let path: String
    /// Set once the file's name is gone: its last close frees its blocks, which for a gigabyte
    /// segment waits on the device, so that close runs on NIO's blocking thread pool rather
    /// than on whichever thread lets go last (an event loop that just sent a span of it).
    private let unlinked = Atomic<Bool>(false)
    /// Set once `preadv2` refused `RWF_NOWAIT` for this file (EOPNOTSUPP): the kernel cannot tell
    /// whether a read would wait for the device.
    private let waitingUnknowable = Atomic<Bool>(false)

    /// Whether a read with `waiting` false can tell the page cache from the device here.
    public var canTellResidency: Bool {
        FileSystem.preadv2 != nil && !self.waitingUnknowable.load(ordering: .relaxed)
    }

    init(descriptor: Int32, path: String) {
        self.descriptor = descriptor
        self.path = path
    }

    deinit {
        guard self.unlinked.load(ordering: .acquiring) else {
            close(self.descriptor)
            return
        }
        let descriptor = self.descriptor
        NIOThreadPool.singleton.submit { _ in close(descriptor) }
    }

    /// Called once the file is unlinked (see `unlinked`).
    func markUnlinked() {
        self.unlinked.store(true, ordering: .releasing)
    }

    /// Opens (creating if asked) `path` for reading and writing.
    public static func open(_ path: String, create: Bool) throws(StorageError) -> FileHandle {
        let flags = O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0)
        let fd = Glibc.open(path, flags, 0o644)
        guard fd >= 0 else { throw FileSystem.error("open", path) }
        return FileHandle(descriptor: fd, path: path)
    }

    public func size() throws(StorageError) -> Int {
        var info = stat()
        guard fstat(self.descriptor, &info) == 0 else { throw FileSystem.error("fstat", self.path) }
        return Int(info.st_size)
    }

    /// Writes all of `buffer`'s readable bytes at `offset`.
    public func write(_ buffer: ByteBuffer, at offset: Int) throws(StorageError) {
        var failure: StorageError?
        buffer.withUnsafeReadableBytes { bytes in
            var done = 0
            while done < bytes.count {
                let n = pwrite(self.descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = FileSystem.error("pwrite", self.path)
                    return
                }
                done += n
            }
        }
        if let failure { throw failure }
    }

    /// Writes `parts` back to back at `offset` with `pwritev` (gathering, no copy).
    public func write(_ parts: [ByteBuffer], at offset: Int) throws(StorageError) {
        if parts.count == 1 {
            try self.write(parts[0], at: offset)
            return
        }
        // Gather up to IOV_MAX parts per call; the buffers stay alive for the whole call.
        var position = offset
        var start = 0
        while start < parts.count {
            let end = min(parts.count, start + 1024)
            let total = parts[start..<end].reduce(0) { $0 + $1.readableBytes }
            let written = try Self.withIOVecs(parts[start..<end]) { iovecs throws(StorageError) -> Int in
                let n = pwritev(self.descriptor, iovecs.baseAddress, Int32(iovecs.count), off_t(position))
                if n < 0 && errno != EINTR { throw FileSystem.error("pwritev", self.path) }
                return max(0, n)
            }
            if written < total {
                // A short write (signals, disk nearly full): finish what is left part by part.
                var partStart = position
                for part in parts[start..<end] {
                    let partEnd = partStart + part.readableBytes
                    let writtenEnd = position + written
                    if partEnd > writtenEnd {
                        let skip = max(0, writtenEnd - partStart)
                        let rest = part.getSlice(at: part.readerIndex + skip, length: part.readableBytes - skip)!
                        try self.write(rest, at: partStart + skip)
                    }
                    partStart = partEnd
                }
            }
            position += total
            start = end
        }
    }

    private static func withIOVecs<R>(
        _ parts: ArraySlice<ByteBuffer>,
        _ body: (UnsafeMutableBufferPointer<iovec>) throws(StorageError) -> R
    ) throws(StorageError) -> R {
        var iovecs = [iovec](repeating: iovec(), count: parts.count)
        // Pointers into ByteBuffer storage are valid while the buffers are alive and unmodified;
        // `parts` holds them for the duration of the call.
        for (i, part) in parts.enumerated() {
            part.withUnsafeReadableBytes { bytes in
                iovecs[i] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
            }
        }
        return try withExtendedLifetime(parts) { () throws(StorageError) -> R in
            try iovecs.withUnsafeMutableBufferPointer { (pointer) throws(StorageError) -> R in try body(pointer) }
        }
    }

    /// Reads up to `length` bytes at `offset` into a new buffer; fewer at end of file. With
    /// `waiting` false, reads only what the OS page cache holds (see `read(into:at:waiting:)`).
    public func read(
        at offset: Int,
        length: Int,
        allocator: ByteBufferAllocator,
        waiting: Bool = true
    ) throws(StorageError) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: length)
        var failure: StorageError?
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: length) { bytes in
            do throws(StorageError) {
                return try self.read(into: UnsafeMutableRawBufferPointer(rebasing: bytes[..<length]), at: offset, waiting: waiting)
            } catch {
                failure = error
                return 0
            }
        }
        if let failure { throw failure }
        return buffer
    }

    /// Reads up to `target.count` bytes at `offset` into `target`: how many were read (fewer at
    /// end of file). With `waiting` false, reads only what the OS page cache holds (`preadv2`
    /// with `RWF_NOWAIT`) and throws `.wouldWait` where the read would wait for the device (it
    /// reads normally where the kernel cannot tell).
    public func read(into target: UnsafeMutableRawBufferPointer, at offset: Int, waiting: Bool = true) throws(StorageError) -> Int {
        var withoutWaiting = waiting || !self.canTellResidency ? nil : FileSystem.preadv2
        var done = 0
        while done < target.count {
            let start = target.baseAddress! + done
            let n: Int
            if let preadv2 = withoutWaiting {
                var vector = iovec(iov_base: start, iov_len: target.count - done)
                n = preadv2(self.descriptor, &vector, 1, Int64(offset + done), FileSystem.readWithoutWaiting)
            } else {
                n = pread(self.descriptor, start, target.count - done, off_t(offset + done))
            }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EOPNOTSUPP && withoutWaiting != nil {
                    self.waitingUnknowable.store(true, ordering: .relaxed)
                    withoutWaiting = nil  // the kernel cannot tell for this file: read it
                    continue
                }
                if errno == EAGAIN {
                    throw StorageError(.wouldWait, "\(self.path) at byte \(offset + done) is not in the page cache")
                }
                throw FileSystem.error("pread", self.path)
            }
            if n == 0 { break }
            done += n
        }
        return done
    }

    public func truncate(to size: Int) throws(StorageError) {
        guard ftruncate(self.descriptor, off_t(size)) == 0 else { throw FileSystem.error("ftruncate", self.path) }
    }

    /// Flushes file data (not necessarily metadata other than size) to stable storage.
    public func sync() throws(StorageError) {
        guard fdatasync(self.descriptor) == 0 else { throw FileSystem.error("fdatasync", self.path) }
    }

    /// Asks the kernel to start writing `length` bytes at `offset` to the device, without
    /// waiting for them (sync_file_range with SYNC_FILE_RANGE_WRITE): durability still comes
    /// only from `sync()`, but dirty pages leave steadily instead of piling up until the kernel
    /// throttles every writer (stalls of 100+ ms were measured without it). May block while
    /// the device queue is full, so callers run it off the event loops. A no-op where the call
    /// does not exist.
    public func startWriteback(offset: Int, length: Int) throws(StorageError) {
        guard let call = FileSystem.syncFileRange else { return }
        guard call(self.descriptor, Int64(offset), Int64(length), 2 /* SYNC_FILE_RANGE_WRITE */) == 0 else {
            throw FileSystem.error("sync_file_range", self.path)
        }
    }

    /// Reserves the file's blocks for `length` bytes at `offset` without changing its size
    /// (Linux fallocate with FALLOC_FL_KEEP_SIZE), so that later writes there find their blocks
    /// allocated: an ext4 write into reserved blocks skips the per-block delayed-allocation
    /// bookkeeping (288 KiB pwrites paced like a partition's took 67–75 µs at p50 instead of
    /// 91–115 in a measurement here; docs/benchmarks.md).
    /// Returns false where the file system or platform cannot: the caller stops asking. A failure
    /// is not an error (a full disk shows up in the write itself). `truncate(to: size)` gives the
    /// blocks reserved past the end back.
    public func preallocate(offset: Int, length: Int) -> Bool {
        guard let call = FileSystem.fallocate else { return false }
        guard call(self.descriptor, 1 /* FALLOC_FL_KEEP_SIZE */, Int64(offset), Int64(length)) != 0 else { return true }
        return errno == ENOSPC || errno == EINTR  // worth asking again later
    }

    /// Waits until `range` is written back (its writeback was started earlier, so this is
    /// normally short) and drops its pages from the OS page cache (posix_fadvise DONTNEED):
    /// pages written once and read from the hot cache need not grow the page cache until the
    /// kernel must reclaim it. Blocks; callers run it off the event loops. A no-op where
    /// sync_file_range does not exist.
    public func releasePages(_ range: Range<Int>) throws(StorageError) {
        guard let call = FileSystem.syncFileRange, !range.isEmpty else { return }
        let flags: UInt32 = 1 | 2 | 4  // SYNC_FILE_RANGE_WAIT_BEFORE | _WRITE | _WAIT_AFTER
        guard call(self.descriptor, Int64(range.lowerBound), Int64(range.count), flags) == 0 else {
            throw FileSystem.error("sync_file_range", self.path)
        }
        let advice = posix_fadvise(self.descriptor, off_t(range.lowerBound), off_t(range.count), POSIX_FADV_DONTNEED)
        guard advice == 0 else {
            errno = advice
            throw FileSystem.error("posix_fadvise", self.path)
        }
    }
}

/// Thin wrappers over the POSIX calls storage needs. Paths are plain strings.
public enum FileSystem {
    /// Linux's sync_file_range(2), fallocate(2) and preadv2(2): GNU extensions Glibc's Swift
    /// module does not import, so they are looked up by name once (nil elsewhere).
    static let syncFileRange = Self.linuxCall("sync_file_range", as: (@convention(c) (Int32, Int64, Int64, UInt32) -> Int32).self)
    static let fallocate = Self.linuxCall("fallocate", as: (@convention(c) (Int32, Int32, Int64, Int64) -> Int32).self)
    static let preadv2 = Self.linuxCall("preadv2", as: (@convention(c) (Int32, UnsafePointer<iovec>?, Int32, Int64, Int32) -> Int).self)
    /// `RWF_NOWAIT` (linux/fs.h): `preadv2` fails with EAGAIN rather than wait for the device.
    static let readWithoutWaiting: Int32 = 0x8

    /// The C function `name` of the running process, as `Function`; nil if absent or not Linux.
    private static func linuxCall<Function>(_ name: String, as _: Function.Type) -> Function? {
        #if os(Linux)
        guard let symbol = dlsym(nil, name) else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
        #else
        return nil
        #endif
    }

    /// The memory page size (a power of two).
    static let pageBytes = Int(sysconf(Int32(_SC_PAGESIZE)))

    static func error(_ call: String, _ path: String) -> StorageError {
        let code = errno
        return StorageError(.io, "\(call) \(path): \(String(cString: strerror(code))) (errno \(code))")
    }

    public static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    public static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR
    }

    /// `mkdir -p`.
    public static func createDirectory(_ path: String) throws(StorageError) {
        if Self.isDirectory(path) { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/") {
            prefix += component
            if !Self.isDirectory(prefix) {
                guard mkdir(prefix, 0o755) == 0 || errno == EEXIST else { throw Self.error("mkdir", prefix) }
            }
            prefix += "/"
        }
    }

    /// The names in a directory, without `.` and `..`, sorted.
    public static func list(_ path: String) throws(StorageError) -> [String] {
        guard let dir = opendir(path) else { throw Self.error("opendir", path) }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: Int(NAME_MAX) + 1) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func remove(_ path: String) throws(StorageError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw Self.error("unlink", path) }
    }

    /// Removes a directory tree.
    public static func removeTree(_ path: String) throws(StorageError) {
        guard Self.exists(path) else { return }
        if Self.isDirectory(path) {
            for name in try Self.list(path) { try Self.removeTree(path + "/" + name) }
            guard rmdir(path) == 0 || errno == ENOENT else { throw Self.error("rmdir", path) }
        } else {
            try Self.remove(path)
        }
    }

    public static func rename(_ from: String, to: String) throws(StorageError) {
        guard Glibc.rename(from, to) == 0 else { throw Self.error("rename", from) }
    }

    /// fsyncs a directory so that creations, renames and deletions in it are durable.
    public static func syncDirectory(_ path: String) throws(StorageError) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw Self.error("open", path) }
        defer { close(fd) }
        guard fsync(fd) == 0 else { throw Self.error("fsync", path) }
    }

    /// Replaces `path` with `contents` atomically: write a temporary file, fsync, rename, fsync
    /// the directory. A crash leaves either the old or the new file, never a torn one.
    public static func writeAtomically(_ path: String, contents: ByteBuffer) throws(StorageError) {
        let temporary = path + ".tmp"
        let handle = try FileHandle.open(temporary, create: true)
        try handle.truncate(to: 0)
        try handle.write(contents, at: 0)
        try handle.sync()
        try Self.rename(temporary, to: path)
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        try Self.syncDirectory(directory.isEmpty ? "." : directory)
    }

    /// Reads a whole (small) file.
    public static func readAll(_ path: String) throws(StorageError) -> ByteBuffer {
        let handle = try FileHandle.open(path, create: false)
        return try handle.read(at: 0, length: try handle.size(), allocator: ByteBufferAllocator())
    }

    /// Milliseconds since the Unix epoch, from the wall clock (timestamps, retention).
    public static func wallClockMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }

    /// Milliseconds from a monotonic clock (segment age, flush intervals).
    public static func monotonicMilliseconds() -> Int64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return Int64(now.tv_sec) * 1000 + Int64(now.tv_nsec) / 1_000_000
    }
}
