import ArgumentParser
import Logging
import RafkaCore
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
            would a Kafka broker. `rafka controller` runs one voter of a controller quorum.

            Settings come from Rafka's defaults, then the YAML file given with --config, then RAFKA_* \
            environment variables (RAFKA_LISTEN, RAFKA_DATA_DIR, …: each key upper-cased with _ for -), \
            then command-line flags. config/standalone.yaml and config/controller.yaml list every key.
            """,
        subcommands: [Standalone.self, Controller.self, Node.self],
        defaultSubcommand: Standalone.self
    )
}

/// Flags every process takes.
struct CommonOptions: ParsableArguments {
    @Option(name: .customLong("data-dir"), help: "Directory for logs and metadata (default ./data).")
    var dataDirectory: String?

    @Option(help: ArgumentHelp("Address to listen on (default 127.0.0.1:9092).", valueName: "host:port"))
    var listen: String?

    @Option(name: .customLong("config"), help: ArgumentHelp("YAML configuration file.", valueName: "file"))
    var configFile: String?

    @Option(name: .customLong("node-id"), help: "This node's id (Kafka's broker.id / node.id, default 1).")
    var nodeID: Int32?

    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error or critical (default info).")
    var logLevel: String?

    /// The configuration from file, environment and these flags, validated.
    func load(_ apply: (inout BrokerConfig) throws -> Void = { _ in }) throws -> BrokerConfig {
        do {
            var config = try BrokerConfig.load(path: self.configFile, environment: Self.environment())
            if let dataDirectory { config.dataDirectory = dataDirectory }
            if let listen {
                guard let hostPort = HostPort(listen) else { throw ConfigError("--listen \(listen) is not HOST:PORT") }
                config.listen = hostPort
            }
            if let nodeID { config.nodeID = nodeID }
            if let logLevel { config.logLevel = logLevel }
            try apply(&config)
            try config.validate(source: "command line")
            return config
        } catch let error as ConfigError {
            throw ValidationError(error.message)
        }
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

/// Flags of the processes that serve Kafka clients (standalone and data nodes).
struct BrokerOptions: ParsableArguments {
    @Option(
        name: .customLong("advertised-listener"),
        help: ArgumentHelp("Address clients are told to use, if not --listen.", valueName: "host:port"))
    var advertisedListener: String?

    @Option(
        name: .customLong("metrics-listen"),
        help: ArgumentHelp("Serve Prometheus metrics over HTTP (GET /metrics) on this address.", valueName: "host:port"))
    var metricsListen: String?

    func apply(to config: inout BrokerConfig) throws {
        if let advertisedListener {
            guard let hostPort = HostPort(advertisedListener) else {
                throw ConfigError("--advertised-listener \(advertisedListener) is not HOST:PORT")
            }
            config.advertisedListener = hostPort
        }
        if let metricsListen {
            guard let hostPort = HostPort(metricsListen) else { throw ConfigError("--metrics-listen \(metricsListen) is not HOST:PORT") }
            config.metricsListen = hostPort
        }
    }
}

/// Runs `service` until SIGTERM or SIGINT, with logging at the configured level.
func runService(_ make: (Logger) -> any Service, config: BrokerConfig, starting: String) async throws {
    FreedMemory.keepForReuse()
    let level = Logger.Level(rawValue: config.logLevel) ?? .info
    LoggingSystem.bootstrap { label in
        var handler = StreamLogHandler.standardError(label: label)
        handler.logLevel = level
        return handler
    }
    let logger = Logger(label: "rafka")
    logger.info(
        "starting \(starting)",
        metadata: ["dataDir": "\(config.dataDirectory)", "listen": "\(config.listen)", "nodeID": "\(config.nodeID)"])
    let group = ServiceGroup(
        configuration: .init(
            services: [.init(service: make(logger))], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
    try await group.run()
}

struct Standalone: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one broker that serves Kafka clients (the default).",
        discussion: """
            Its metadata lives in a controller quorum of one voter (this process). SIGTERM or SIGINT shuts down \
            cleanly: every partition is flushed and closed, exit status 0.
            """
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var broker: BrokerOptions

    mutating func run() async throws {
        let broker = self.broker
        let config = try self.common.load { config in try broker.apply(to: &config) }
        try await runService({ StandaloneService(config: config, logger: $0) }, config: config, starting: "rafka standalone")
    }
}

struct Controller: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one voter of the controller quorum that holds the cluster's metadata.",
        discussion: """
            Every controller of a cluster is started with the same --voters list (its own id included); \
            --listen is this controller's entry in it. Controllers added later with \
            `rafka-admin controllers add` are started with the existing voters' list. SIGTERM or SIGINT shuts \
            down cleanly.
            """
    )

    @OptionGroup var common: CommonOptions

    @Option(help: ArgumentHelp("The quorum's voters and their controller listeners.", valueName: "id@host:port,…"))
    var voters: String?

    mutating func run() async throws {
        let voters = self.voters
        let config = try self.common.load { config in
            if let voters {
                guard let parsed = BrokerConfig.parseVoters(voters) else {
                    throw ConfigError("--voters \(voters) is not id@host:port,id@host:port,…")
                }
                config.voters = parsed
            }
            guard !config.voters.isEmpty else { throw ConfigError("a controller needs --voters (or voters: in its config)") }
        }
        try await runService({ ControllerProcess(config: config, logger: $0) }, config: config, starting: "rafka controller")
    }
}

struct Node: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a data node of a cluster: it registers with the controllers and follows their metadata.",
        discussion: """
            Kafka clients connect to data nodes. Each joins the ring with the tokens the controllers give it, \
            leads the partitions placement gives it (copying them from their previous leader first) and answers \
            Metadata with every partition's leader. SIGTERM leaves the ring first: the node's partitions pass to \
            the next nodes, then it exits (at most controlled-shutdown-timeout-ms).
            """
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var broker: BrokerOptions

    @Option(help: ArgumentHelp("Controller listeners (any of the quorum).", valueName: "host:port,…"))
    var controllers: String?

    mutating func run() async throws {
        let controllers = self.controllers
        let broker = self.broker
        let config = try self.common.load { config in
            if let controllers {
                guard let parsed = BrokerConfig.parseControllers(controllers) else {
                    throw ConfigError("--controllers \(controllers) is not host:port,host:port,…")
                }
                config.controllers = parsed
            }
            try broker.apply(to: &config)
            guard !config.controllers.isEmpty else { throw ConfigError("a data node needs --controllers (or controllers: in its config)") }
        }
        try await runService(
            { StandaloneService(config: config, logger: $0, dataNode: true) }, config: config, starting: "rafka node")
    }
}
