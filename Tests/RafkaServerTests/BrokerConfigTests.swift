import Foundation
@testable import RafkaServer
import Testing

@Suite struct BrokerConfigTests {
    @Test func environmentOverridesTheFile() throws {
        let path = NSTemporaryDirectory() + "rafka-config-\(UUID().uuidString).yaml"
        try "listen: 127.0.0.1:7000\nnode-id: 4\ntopic-defaults:\n  segment.bytes: \"1048576\"\n".write(
            toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let config = try BrokerConfig.load(path: path, environment: ["RAFKA_LISTEN": "0.0.0.0:7001", "RAFKA_LOG_LEVEL": "debug"])
        #expect(config.listen == HostPort(host: "0.0.0.0", port: 7001))
        #expect(config.advertised == HostPort(host: "127.0.0.1", port: 7001))
        #expect(config.nodeID == 4)
        #expect(config.logLevel == "debug")
        #expect(config.topicDefaults == ["segment.bytes": "1048576"])
    }

    @Test(arguments: [
        "listen: nowhere", "default-partitions: 0", "log-level: loud", "topic-defaults:\n  retention.ms: soon",
        "unknown: [", "max-request-bytes: 10", "listn: 127.0.0.1:9092", "max-read-memory-bytes: 0",
    ])
    func badValuesAreRefusedWithTheKey(yaml: String) throws {
        let path = NSTemporaryDirectory() + "rafka-config-\(UUID().uuidString).yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        #expect(throws: ConfigError.self) { try BrokerConfig.load(path: path, environment: [:]) }
    }

    /// The example files in config/ load, and where they state a default it is the real one.
    @Test(arguments: ["standalone", "controller", "node"])
    func shippedConfigFilesLoad(name: String) throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let config = try BrokerConfig.load(path: root.appendingPathComponent("config/\(name).yaml").path, environment: [:])
        let defaults = BrokerConfig()
        #expect(config.nodeSessionTimeoutMilliseconds == defaults.nodeSessionTimeoutMilliseconds)
        #expect(config.nodeHeartbeatIntervalMilliseconds == defaults.nodeHeartbeatIntervalMilliseconds)
        #expect(config.metadataSnapshotEveryEntries == defaults.metadataSnapshotEveryEntries)
        #expect(config.requestBytesMax == defaults.requestBytesMax)
        #expect(config.requestMemoryBytesMax == defaults.requestMemoryBytesMax)
        #expect(config.readMemoryBytesMax == defaults.readMemoryBytesMax)
        #expect(config.responseWriteTimeoutMilliseconds == defaults.responseWriteTimeoutMilliseconds)
        #expect(config.connectionsMax == defaults.connectionsMax)
        #expect(config.requestFrameTimeoutMilliseconds == defaults.requestFrameTimeoutMilliseconds)
        #expect(config.retentionCheckIntervalMilliseconds == defaults.retentionCheckIntervalMilliseconds)
        switch name {
        case "controller": #expect(config.voters.map(\.id) == [1, 2, 3])
        case "node": #expect(config.controllers.count == 3)
        default: #expect(config.voters.isEmpty && config.controllers.isEmpty)
        }
    }

    @Test func hostPortParsing() {
        #expect(HostPort("127.0.0.1:9092") == HostPort(host: "127.0.0.1", port: 9092))
        #expect(HostPort("[::1]:9092") == HostPort(host: "::1", port: 9092))
        #expect(HostPort("host") == nil)
        #expect(HostPort("host:99999") == nil)
    }
}
