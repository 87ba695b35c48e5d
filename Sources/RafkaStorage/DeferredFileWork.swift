import NIOCore

/// File work that a roll, a flush or retention leaves behind and that the log does not need to
/// stay correct: a closed segment's index files and the producer snapshot (recovery rebuilds
/// them when they are missing), the recovery point (when it lags, recovery validates more), the
/// blocks reserved past a closed segment's end, and the files of segments retention took out
/// (renamed first, so a restart deletes them too). Each step may wait on the device for long —
/// while writeback was busy here, an index file's fsync took 0.54 s and a truncation 0.25 s —
/// so a log's owner takes the work
/// (`PartitionLog.takeDeferredFileWork`) and runs it off its event loop, in the order it was
/// left, before it closes or deletes the log.
public struct DeferredFileWork: Sendable {
    enum Step: Sendable {
        /// Replaces the file at `path` atomically with what `contents` makes (made on the
        /// thread that runs the step: a gigabyte segment's indexes are megabytes).
        case replace(path: String, contents: @Sendable () -> ByteBuffer)
        /// Cuts a closed segment's file to `bytes`, giving back the blocks reserved past it.
        case truncate(FileHandle, bytes: Int)
        /// Keeps the newest `keep` producer snapshots in `directory`.
        case pruneSnapshots(directory: String, keep: Int)
        /// Unlinks a deleted segment's renamed files and lets go of its open file last: the
        /// blocks of an unlinked file are freed when its last descriptor closes, which for a
        /// gigabyte segment waits on the device. A fetch still sending a span of the segment
        /// may hold the file longer; its close then goes to a blocking pool (`FileHandle`).
        case remove(paths: [String], file: FileHandle)
    }

    var steps: [Step] = []

    public var isEmpty: Bool { self.steps.isEmpty }

    /// The open files of deleted segments whose unlinking is still to come.
    var filesToRemove: [FileHandle] {
        self.steps.compactMap { if case .remove(_, let file) = $0 { file } else { nil } }
    }

    mutating func append(_ other: DeferredFileWork) {
        self.steps.append(contentsOf: other.steps)
    }

    /// Drops the steps for a segment deleted before they ran (retention may roll a segment and
    /// delete it at once): its index files would come back as orphans.
    mutating func forget(_ segment: LogSegment) {
        self.steps.removeAll { step in
            switch step {
            case .replace(let path, _): path == segment.indexPath || path == segment.timeIndexPath
            case .truncate(let file, _): file === segment.log
            case .pruneSnapshots, .remove: false
            }
        }
    }

    /// Runs every step, in order; a step that fails does not stop the later ones (none depends
    /// on another), and the first failure is thrown at the end.
    public func run() throws(StorageError) {
        var failure: StorageError?
        for step in self.steps {
            do {
                switch step {
                case .replace(let path, let contents):
                    try FileSystem.writeAtomically(path, contents: contents())
                case .truncate(let file, let bytes):
                    try file.truncate(to: bytes)
                case .pruneSnapshots(let directory, let keep):
                    try ProducerStateSnapshot.prune(directory: directory, after: Int64.max, keepNewest: keep)
                case .remove(let paths, let file):
                    defer { file.markUnlinked() }
                    for path in paths { try FileSystem.remove(path) }
                }
            } catch {
                failure = failure ?? error
            }
        }
        if let failure { throw failure }
    }
}
