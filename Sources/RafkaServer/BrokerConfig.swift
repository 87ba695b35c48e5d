import NIOCore
import RafkaCore
import RafkaStorage
import Yams

/// A host and port, written `HOST:PORT` (IPv6 hosts in brackets).
public struct HostPort: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { self.host.contains(":") ? "[\(self.host)]:\(self.port)" : "\(self.host):\(self.port)" }
}

/// Everything a broker process is configured with. Built from defaults, then the YAML file,
/// then `RAFKA_*` environment variables, then command-line flags (each overriding the last).
public struct BrokerConfig: Sendable {
    public var nodeID: Int32 = 1
    public var dataDirectory: String = "./data"
    public var listen = HostPort(host: "127.0.0.1", port: 9092)
    /// The address clients are told to connect to; defaults to `listen` (0.0.0.0 becomes 127.0.0.1).
    public var advertisedListener: HostPort?
    public var rack: String?
    /// Where to serve Prometheus metrics over HTTP (GET /metrics); none when unset.
    public var metricsListen: HostPort?
    /// Kafka's `socket.request.max.bytes`.
    public var requestBytesMax = Limits.requestBytesMaxDefault
    public var connectionsMax = Limits.connectionsMaxDefault
    /// Request bytes held in memory across all connections (Kafka's `queued.max.request.bytes`).
    public var requestMemoryBytesMax = Limits.requestMemoryBytesMaxDefault
    /// Records held in memory for fetch responses, across all connections
    /// (`Limits.readMemoryBytesMaxDefault`).
    public var readMemoryBytesMax = Limits.readMemoryBytesMaxDefault
    /// A request frame that has begun must arrive whole within this long.
    public var requestFrameTimeoutMilliseconds: Int64 = 60_000
    /// A client that reads nothing of its responses for this long is disconnected: a response
    /// with records holds the segments' files open (retention cannot give their blocks back) or
    /// read memory; any other holds its own memory.
    public var responseWriteTimeoutMilliseconds = Limits.responseWriteTimeoutMillisecondsDefault
    /// Kafka's `auto.create.topics.enable`.
    public var autoCreateTopics = true
    /// Kafka's `num.partitions`, for auto-created topics and CreateTopics with -1.
    public var defaultPartitions: Int32 = 1
    public var defaultReplicationFactor: Int16 = 1
    /// Event loops serving connections and partitions; 0 means one per core.
    public var eventLoopThreads = 0
    /// Kafka's `log.retention.check.interval.ms`.
    public var retentionCheckIntervalMilliseconds: Int64 = 300_000
    /// Broker-wide defaults for topic configs, by topic-level name (`retention.ms: 86400000`).
    public var topicDefaults: [String: String] = [:]
    public var logLevel = "info"
    /// Compact the metadata log into a SQLite snapshot after this many entries.
    public var metadataSnapshotEveryEntries: UInt64 = 1000
    /// A data node's controllers (any of them; the leader is found from there).
    public var controllers: [HostPort] = []
    /// How often a data node reports to the controller leader.
    public var nodeHeartbeatIntervalMilliseconds: Int64 = 1000
    /// A data node silent for this long is fenced by the controller leader (Kafka's
    /// broker.session.timeout.ms).
    public var nodeSessionTimeoutMilliseconds: Int64 = 9000
    /// A data node its ring neighbours suspect is fenced once the controllers too have not
    /// heard from it for this long (the session timeout remains the backstop).
    public var suspectedNodeTimeoutMilliseconds: Int64 = 2000
    /// On SIGTERM a data node leaves the ring first, serving its partitions' new leaders their
    /// copies, for at most this long (then it stops anyway; what was not taken over waits for
    /// its return).
    public var controlledShutdownTimeoutMilliseconds: Int64 = 30_000
    /// Ring tokens the controllers give each new data node (a node keeps its tokens for life).
    /// 16 keeps every node within about 1.25× the mean partition load with the controllers'
    /// token allocation (`tools/simulate-ring` prints the table for 1, 8, 16, 32, 128).
    public var ringTokensPerNode = Limits.ringTokensPerNodeDefault
    /// The hot cache's budget: the newest batches of every partition kept in memory for tail
    /// consumers, oldest first out (0 turns it off).
    public var hotCacheBytes = 256 << 20
    /// Batches leave the hot cache after this long even when it has room.
    public var hotCacheMaxAgeMilliseconds: Int64 = 600_000
    /// How much of the end of each partition's log stays in the OS page cache once written
    /// back; older pages leave it, so the page cache does not grow with every byte written.
    /// nil keeps everything, as Kafka does.
    public var pageCacheTailBytes: Int? = 0
    /// The controller quorum's initial voters and their controller listeners
    /// (`1@host:port,2@host:port,…`); empty in standalone.
    public var voters: [(id: Int32, endpoint: HostPort)] = []

    public init() {}

    /// Parses `host:port,host:port`.
    public static func parseControllers(_ text: String) -> [HostPort]? {
        let list = text.split(separator: ",").compactMap { HostPort(String($0)) }
        return list.isEmpty || list.count != text.split(separator: ",").count ? nil : list
    }

    /// Parses `1@host:port,2@host:port`.
    public static func parseVoters(_ text: String) -> [(id: Int32, endpoint: HostPort)]? {
        var voters: [(id: Int32, endpoint: HostPort)] = []
        for item in text.split(separator: ",") {
            let parts = item.split(separator: "@", maxSplits: 1)
            guard parts.count == 2, let id = Int32(parts[0]), let endpoint = HostPort(String(parts[1])) else { return nil }
            voters.append((id, endpoint))
        }
        guard !voters.isEmpty, Set(voters.map(\.id)).count == voters.count else { return nil }
        return voters
    }

    /// The listener advertised in Metadata responses.
    public var advertised: HostPort {
        if let advertisedListener { return advertisedListener }
        let host = self.listen.host == "0.0.0.0" || self.listen.host == "::" ? "127.0.0.1" : self.listen.host
        return HostPort(host: host, port: self.listen.port)
    }

    /// The configuration file's keys (kebab-case, as in config/standalone.yaml).
    struct File: Decodable {
        var nodeID: Int32?
        var dataDir: String?
        var listen: String?
        var advertisedListener: String?
        var rack: String?
        var metricsListen: String?
        var maxRequestBytes: Int?
        var maxConnections: Int?
        var maxRequestMemoryBytes: Int?
        var maxReadMemoryBytes: Int?
        var requestFrameTimeoutMs: Int64?
        var responseWriteTimeoutMs: Int64?
        var autoCreateTopics: Bool?
        var defaultPartitions: Int32?
        var defaultReplicationFactor: Int16?
        var eventLoopThreads: Int?
        var retentionCheckIntervalMs: Int64?
        var topicDefaults: [String: String]?
        var logLevel: String?
        var voters: String?
        var controllers: String?
        var nodeHeartbeatIntervalMs: Int64?
        var nodeSessionTimeoutMs: Int64?
        var controlledShutdownTimeoutMs: Int64?
        var suspectedNodeTimeoutMs: Int64?
        var metadataSnapshotEntries: UInt64?
        var ringTokensPerNode: Int?
        var hotCacheBytes: Int?
        var hotCacheMaxAgeMs: Int64?
        var pageCacheTailBytes: Int?

        enum CodingKeys: String, CodingKey, CaseIterable {
            case nodeID = "node-id", dataDir = "data-dir", listen, advertisedListener = "advertised-listener", rack
            case metricsListen = "metrics-listen"
            case maxRequestBytes = "max-request-bytes", maxConnections = "max-connections"
            case maxRequestMemoryBytes = "max-request-memory-bytes", requestFrameTimeoutMs = "request-frame-timeout-ms"
            case maxReadMemoryBytes = "max-read-memory-bytes"
            case responseWriteTimeoutMs = "response-write-timeout-ms"
            case autoCreateTopics = "auto-create-topics", defaultPartitions = "default-partitions"
            case defaultReplicationFactor = "default-replication-factor", eventLoopThreads = "event-loop-threads"
            case retentionCheckIntervalMs = "retention-check-interval-ms", topicDefaults = "topic-defaults"
            case logLevel = "log-level", voters, controllers
            case nodeHeartbeatIntervalMs = "node-heartbeat-interval-ms", nodeSessionTimeoutMs = "node-session-timeout-ms"
            case metadataSnapshotEntries = "metadata-snapshot-entries", ringTokensPerNode = "ring-tokens-per-node"
            case controlledShutdownTimeoutMs = "controlled-shutdown-timeout-ms", suspectedNodeTimeoutMs = "suspected-node-timeout-ms"
            case hotCacheBytes = "hot-cache-bytes", hotCacheMaxAgeMs = "hot-cache-max-age-ms"
            case pageCacheTailBytes = "page-cache-tail-bytes"
        }
    }

    /// Loads `path` (YAML) over the defaults, then applies `RAFKA_*` environment overrides.
    public static func load(path: String?, environment: [String: String]) throws(ConfigError) -> BrokerConfig {
        var config = BrokerConfig()
        if let path {
            let text: String
            do {
                var bytes = try FileSystem.readAll(path)
                text = bytes.readString(length: bytes.readableBytes) ?? ""
            } catch {
                throw ConfigError("cannot read \(path): \(error.message)")
            }
            let file: File
            do {
                // A misspelt key would otherwise be ignored silently.
                if let keys = (try Yams.load(yaml: text) as? [String: Any])?.keys {
                    let known = Set(File.CodingKeys.allCases.map(\.rawValue))
                    if let unknown = keys.sorted().first(where: { !known.contains($0) }) {
                        throw ConfigError("\(path): unknown key '\(unknown)' (config/standalone.yaml lists every key)")
                    }
                }
                file = try YAMLDecoder().decode(File.self, from: text.isEmpty ? "{}" : text)
            } catch let error as ConfigError {
                throw error
            } catch {
                throw ConfigError("\(path): \(error)")
            }
            try config.apply(file, source: path)
        }
        try config.apply(Self.environmentFile(environment), source: "environment")
        return config
    }

    /// `RAFKA_LISTEN=…`, `RAFKA_DATA_DIR=…`: every scalar key, upper-cased with `_` for `-`.
    static func environmentFile(_ environment: [String: String]) throws(ConfigError) -> File {
        var yaml = ""
        for key in File.CodingKeys.allCases where key != .topicDefaults {
            let variable = "RAFKA_" + key.rawValue.uppercased().replacingDashes()
            if let value = environment[variable] { yaml += "\(key.rawValue): \"\(value)\"\n" }
        }
        do {
            return try YAMLDecoder().decode(File.self, from: yaml.isEmpty ? "{}" : yaml)
        } catch {
            throw ConfigError("environment: \(error)")
        }
    }

    mutating func apply(_ file: File, source: String) throws(ConfigError) {
        if let v = file.nodeID { self.nodeID = v }
        if let v = file.dataDir { self.dataDirectory = v }
        if let v = file.listen {
            guard let hostPort = HostPort(v) else { throw ConfigError("\(source): listen \(v) is not HOST:PORT") }
            self.listen = hostPort
        }
        if let v = file.advertisedListener {
            guard let hostPort = HostPort(v) else { throw ConfigError("\(source): advertised-listener \(v) is not HOST:PORT") }
            self.advertisedListener = hostPort
        }
        if let v = file.rack { self.rack = v }
        if let v = file.metricsListen {
            guard let hostPort = HostPort(v) else { throw ConfigError("\(source): metrics-listen \(v) is not HOST:PORT") }
            self.metricsListen = hostPort
        }
        if let v = file.maxRequestBytes { self.requestBytesMax = v }
        if let v = file.maxConnections { self.connectionsMax = v }
        if let v = file.maxRequestMemoryBytes { self.requestMemoryBytesMax = v }
        if let v = file.maxReadMemoryBytes { self.readMemoryBytesMax = v }
        if let v = file.requestFrameTimeoutMs { self.requestFrameTimeoutMilliseconds = v }
        if let v = file.responseWriteTimeoutMs { self.responseWriteTimeoutMilliseconds = v }
        if let v = file.autoCreateTopics { self.autoCreateTopics = v }
        if let v = file.defaultPartitions { self.defaultPartitions = v }
        if let v = file.defaultReplicationFactor { self.defaultReplicationFactor = v }
        if let v = file.eventLoopThreads { self.eventLoopThreads = v }
        if let v = file.retentionCheckIntervalMs { self.retentionCheckIntervalMilliseconds = v }
        if let v = file.topicDefaults { self.topicDefaults.merge(v) { _, new in new } }
        if let v = file.logLevel { self.logLevel = v }
        if let v = file.controllers {
            guard let controllers = Self.parseControllers(v) else {
                throw ConfigError("\(source): controllers \(v) is not host:port,host:port,…")
            }
            self.controllers = controllers
        }
        if let v = file.nodeHeartbeatIntervalMs { self.nodeHeartbeatIntervalMilliseconds = v }
        if let v = file.nodeSessionTimeoutMs { self.nodeSessionTimeoutMilliseconds = v }
        if let v = file.suspectedNodeTimeoutMs { self.suspectedNodeTimeoutMilliseconds = max(0, v) }
        if let v = file.controlledShutdownTimeoutMs { self.controlledShutdownTimeoutMilliseconds = max(0, v) }
        if let v = file.metadataSnapshotEntries { self.metadataSnapshotEveryEntries = max(1, v) }
        if let v = file.ringTokensPerNode { self.ringTokensPerNode = v }
        if let v = file.hotCacheBytes { self.hotCacheBytes = v }
        if let v = file.hotCacheMaxAgeMs { self.hotCacheMaxAgeMilliseconds = v }
        if let v = file.pageCacheTailBytes { self.pageCacheTailBytes = v < 0 ? nil : v }
        if let v = file.voters {
            guard let voters = Self.parseVoters(v) else {
                throw ConfigError("\(source): voters \(v) is not id@host:port,id@host:port,…")
            }
            self.voters = voters
        }
        try self.validate(source: source)
    }

    /// Rejects values the broker cannot run with, naming the key.
    public func validate(source: String = "config") throws(ConfigError) {
        guard self.requestBytesMax >= 1024 else { throw ConfigError("\(source): max-request-bytes must be at least 1024") }
        guard self.connectionsMax > 0 else { throw ConfigError("\(source): max-connections must be positive") }
        guard self.requestMemoryBytesMax >= self.requestBytesMax else {
            throw ConfigError("\(source): max-request-memory-bytes must be at least max-request-bytes")
        }
        guard self.readMemoryBytesMax > 0 else { throw ConfigError("\(source): max-read-memory-bytes must be positive") }
        guard self.requestFrameTimeoutMilliseconds > 0 else {
            throw ConfigError("\(source): request-frame-timeout-ms must be positive")
        }
        guard self.responseWriteTimeoutMilliseconds > 0 else {
            throw ConfigError("\(source): response-write-timeout-ms must be positive")
        }
        guard self.defaultPartitions > 0 else { throw ConfigError("\(source): default-partitions must be positive") }
        guard self.defaultReplicationFactor > 0 else {
            throw ConfigError("\(source): default-replication-factor must be positive")
        }
        guard self.hotCacheBytes >= 0 else { throw ConfigError("\(source): hot-cache-bytes must be ≥ 0 (0 turns the cache off)") }
        guard self.hotCacheMaxAgeMilliseconds > 0 else { throw ConfigError("\(source): hot-cache-max-age-ms must be positive") }
        guard self.eventLoopThreads >= 0 else { throw ConfigError("\(source): event-loop-threads must be ≥ 0") }
        guard (1...Limits.ringTokensPerNodeMax).contains(self.ringTokensPerNode) else {
            throw ConfigError("\(source): ring-tokens-per-node must be between 1 and \(Limits.ringTokensPerNodeMax)")
        }
        guard self.retentionCheckIntervalMilliseconds > 0 else {
            throw ConfigError("\(source): retention-check-interval-ms must be positive")
        }
        guard ["trace", "debug", "info", "notice", "warning", "error", "critical"].contains(self.logLevel) else {
            throw ConfigError("\(source): log-level \(self.logLevel) is not one of trace, debug, info, notice, warning, error, critical")
        }
        do {
            _ = try LogConfig(defaults: self.topicDefaults)
        } catch {
            throw ConfigError("\(source): topic-defaults: \(error.message)")
        }
    }
}

/// The configuration cannot be used; the message names the source and key.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { self.message }
}

extension String {
    fileprivate func replacingDashes() -> String { String(self.map { $0 == "-" ? "_" : $0 }) }
}
