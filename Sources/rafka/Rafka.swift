import ArgumentParser
import Logging
import RafkaServer
import ServiceLifecycle
import UnixSignals

#if canImport(Glibc)
import Glibc
#endif

@main
struct Rafka: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rafka",
        abstract: "A Kafka-compatible message broker.",
        discussion: """
            With no subcommand, runs `rafka standalone`: one node on 127.0.0.1:9092 with data under ./data, \
            which Kafka clients (kcat, confluent-kafka, kafka-python, aiokafka, the Java client) use as they \
            would a Kafka broker.

            Settings come from Rafka's defaults, then the YAML file given with --config, then RAFKA_* \
            environment variables (RAFKA_LISTEN, RAFKA_DATA_DIR, …: each key upper-cased with _ for -), \
            then command-line flags. config/standalone.yaml lists every key.
            """,
        subcommands: [Standalone.self],
        defaultSubcommand: Standalone.self
    )
}

struct Standalone: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one broker that serves Kafka clients (the default).",
        discussion: "SIGTERM or SIGINT shuts down cleanly: every partition is flushed and closed, exit status 0."
    )

    @Option(name: .customLong("data-dir"), help: "Directory for partition logs and metadata (default ./data).")
    var dataDirectory: String?

    @Option(help: ArgumentHelp("Address for Kafka clients (default 127.0.0.1:9092).", valueName: "host:port"))
    var listen: String?

    @Option(
        name: .customLong("advertised-listener"),
        help: ArgumentHelp("Address clients are told to use, if not --listen.", valueName: "host:port"))
    var advertisedListener: String?

    @Option(name: .customLong("config"), help: ArgumentHelp("YAML configuration file.", valueName: "file"))
    var configFile: String?

    @Option(name: .customLong("node-id"), help: "This node's id (Kafka's broker.id, default 1).")
    var nodeID: Int32?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    mutating func run() async throws {
        var config: BrokerConfig
        do {
            config = try BrokerConfig.load(path: self.configFile, environment: Self.environment())
            if let dataDirectory { config.dataDirectory = dataDirectory }
            if let listen {
                guard let hostPort = HostPort(listen) else { throw ConfigError("--listen \(listen) is not HOST:PORT") }
                config.listen = hostPort
            }
            if let advertisedListener {
                guard let hostPort = HostPort(advertisedListener) else {
                    throw ConfigError("--advertised-listener \(advertisedListener) is not HOST:PORT")
                }
                config.advertisedListener = hostPort
            }
            if let nodeID { config.nodeID = nodeID }
            if let logLevel { config.logLevel = logLevel }
            try config.validate(source: "command line")
        } catch let error as ConfigError {
            throw ValidationError(error.message)
        }
        let level = Logger.Level(rawValue: config.logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "rafka")
        logger.info(
            "starting rafka standalone",
            metadata: ["dataDir": "\(config.dataDirectory)", "listen": "\(config.listen)", "nodeID": "\(config.nodeID)"])
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: StandaloneService(config: config, logger: logger))],
                gracefulShutdownSignals: [.sigterm, .sigint],
                logger: logger))
        try await group.run()
    }

    static func environment() -> [String: String] {
        var result: [String: String] = [:]
        var pointer = environ
        while let entry = pointer.pointee {
            let text = String(cString: entry)
            if let equals = text.firstIndex(of: "=") {
                result[String(text[..<equals])] = String(text[text.index(after: equals)...])
            }
            pointer += 1
        }
        return result
    }
}
