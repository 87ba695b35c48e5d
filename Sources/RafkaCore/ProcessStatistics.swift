#if canImport(Glibc)
import Glibc
#endif

/// A process's CPU time and resident memory, read from /proc (Linux): the broker's metrics
/// report its own, `rafka-bench --broker-pid` the broker's.
public struct ProcessStatistics: Sendable, Equatable {
    /// User plus system CPU time.
    public var cpuSeconds: Double
    public var residentBytes: Int

    /// The process `pid` ("self" when nil), or nil when /proc does not have it.
    public static func read(pid: Int32? = nil) -> ProcessStatistics? {
        let directory = "/proc/" + (pid.map(String.init) ?? "self")
        guard let stat = Self.text(directory + "/stat"), let statm = Self.text(directory + "/statm"),
            let closing = stat.lastIndex(of: ")")
        else { return nil }
        // After the command name in parentheses: state is field 3, utime 14 and stime 15.
        let fields = stat[stat.index(after: closing)...].split(separator: " ")
        let pages = statm.split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]), pages.count > 1,
            let resident = Int(pages[1])
        else { return nil }
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        return ProcessStatistics(cpuSeconds: (user + system) / ticks, residentBytes: resident * Int(sysconf(Int32(_SC_PAGESIZE))))
    }

    /// A small /proc file (their sizes read as 0, so read to the end of one buffer).
    private static func text(_ path: String) -> String? {
        guard let file = fopen(path, "r") else { return nil }
        defer { fclose(file) }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let count = fread(&bytes, 1, bytes.count, file)
        return String(decoding: bytes.prefix(count), as: UTF8.self)
    }
}
