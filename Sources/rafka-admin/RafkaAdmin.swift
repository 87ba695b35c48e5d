import ArgumentParser
import Foundation
import RafkaClient

@main
struct RafkaAdmin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rafka-admin",
        abstract: "Manage topics and inspect a Rafka (or any Kafka-compatible) cluster.",
        discussion: """
            Output is a table by default and JSON with --json. On failure the exit status is non-zero and \
            one line on stderr says why, with Kafka's error name.
            """,
        subcommands: [Topics.self, Cluster.self, Ring.self, Controllers.self, Cache.self]
    )

    /// `--bootstrap` and `--json` may come before the subcommand (`rafka-admin --bootstrap H:P
    /// topics list`) or after it; ArgumentParser wants them on the leaf command, so move them.
    static func main() async {
        await Self.main(Self.hoistingGlobalOptions(Array(CommandLine.arguments.dropFirst())))
    }

    static func hoistingGlobalOptions(_ arguments: [String]) -> [String] {
        var rest: [String] = []
        var global: [String] = []
        var index = 0
        var seenSubcommand = false
        while index < arguments.count {
            let argument = arguments[index]
            if !seenSubcommand && argument == "--bootstrap" && index + 1 < arguments.count {
                global += [argument, arguments[index + 1]]
                index += 2
                continue
            }
            if !seenSubcommand && (argument.hasPrefix("--bootstrap=") || argument == "--json") {
                global.append(argument)
            } else {
                if !argument.hasPrefix("-") { seenSubcommand = true }
                rest.append(argument)
            }
            index += 1
        }
        return rest + global
    }
}

/// Options every command takes.
struct Connection: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "Broker address(es), host:port[,host:port…] (default $RAFKA_BOOTSTRAP or 127.0.0.1:9092).",
            valueName: "host:port"))
    var bootstrap: String?

    @Flag(help: "Print JSON instead of a table.")
    var json = false

    func connect() async throws -> KafkaAdminClient {
        let address = self.bootstrap ?? ProcessInfo.processInfo.environment["RAFKA_BOOTSTRAP"] ?? "127.0.0.1:9092"
        return try await KafkaAdminClient.connect(bootstrap: address)
    }
}

/// Runs `body` with a connected client, turning any failure into one line and exit status 1.
func withAdmin<T>(_ connection: Connection, _ body: (KafkaAdminClient) async throws -> T) async throws -> T {
    do {
        let admin = try await connection.connect()
        defer { admin.close() }
        return try await body(admin)
    } catch {
        FileHandle.standardError.write(Data("rafka-admin: error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}

func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    let data = (try? encoder.encode(value)) ?? Data("null".utf8)
    print(String(decoding: data, as: UTF8.self))
}

/// Prints rows as left-aligned columns under a header.
func printTable(_ header: [String], _ rows: [[String]]) {
    var widths = header.map(\.count)
    for row in rows {
        for (i, cell) in row.enumerated() { widths[i] = max(widths[i], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { i, cell in
            i == cells.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    print(line(header))
    for row in rows { print(line(row)) }
}

/// `key=value` pairs from repeated options.
func parsePairs(_ pairs: [String], option: String) throws -> [String: String] {
    var result: [String: String] = [:]
    for pair in pairs {
        guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
            throw ValidationError("\(option) expects key=value, got '\(pair)'")
        }
        result[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
    }
    return result
}

struct Topics: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create, list, describe, delete and configure topics.",
        subcommands: [Create.self, List.self, Describe.self, Delete.self, AlterConfig.self, AddPartitions.self]
    )

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic.")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic name.") var name: String
        @Option(help: "Partition count (default: the broker's default-partitions).") var partitions: Int32 = -1
        @Option(name: .customLong("replication-factor"), help: "Replicas per partition (default: the broker's).")
        var replicationFactor: Int16 = -1
        @Option(name: .customLong("config"), help: ArgumentHelp("A topic config, repeatable.", valueName: "key=value"))
        var configs: [String] = []
        @Flag(name: .customLong("validate-only"), help: "Check the request without creating the topic.")
        var validateOnly = false

        func run() async throws {
            let configs = try parsePairs(self.configs, option: "--config")
            let created = try await withAdmin(self.connection) { admin in
                try await admin.createTopic(
                    name: self.name, partitions: self.partitions, replicationFactor: self.replicationFactor,
                    configs: configs, validateOnly: self.validateOnly)
            }
            if self.connection.json {
                printJSON(created)
            } else {
                let verb = self.validateOnly ? "Would create" : "Created"
                print("\(verb) topic \(created.name) (\(created.partitions) partitions, replication factor \(created.replicationFactor), id \(created.id))")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List topics.")
        @OptionGroup var connection: Connection

        func run() async throws {
            let topics = try await withAdmin(self.connection) { try await $0.listTopics() }
            if self.connection.json {
                printJSON(topics)
            } else {
                printTable(
                    ["TOPIC", "PARTITIONS", "REPLICATION", "ID"],
                    topics.map { [$0.name, String($0.partitions), String($0.replicationFactor), $0.id] })
            }
        }
    }

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show partitions, leaders and configuration of topics.")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic names.") var names: [String]
        @Flag(name: .customLong("all-configs"), help: "Show default configuration values too.")
        var allConfigs = false

        func validate() throws {
            guard !self.names.isEmpty else { throw ValidationError("name at least one topic") }
        }

        func run() async throws {
            let topics = try await withAdmin(self.connection) { try await $0.describeTopics(self.names) }
            if self.connection.json {
                printJSON(topics)
                return
            }
            for (i, topic) in topics.enumerated() {
                if i > 0 { print("") }
                print("Topic: \(topic.name)  id: \(topic.id)  partitions: \(topic.partitions.count)")
                printTable(
                    ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR"],
                    topic.partitions.map {
                        [String($0.partition), String($0.leader), String($0.leaderEpoch), $0.replicas.map(String.init).joined(separator: ","),
                         $0.isr.map(String.init).joined(separator: ",")]
                    })
                let shown = topic.configs.filter { self.allConfigs || !$0.isDefault }
                if !shown.isEmpty {
                    print("")
                    printTable(["CONFIG", "VALUE", "SOURCE"], shown.map { [$0.name, $0.value ?? "", $0.source] })
                }
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete topics and all their data.")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic names.") var names: [String]

        func run() async throws {
            try await withAdmin(self.connection) { admin in
                for name in self.names { try await admin.deleteTopic(name) }
            }
            if self.connection.json {
                printJSON(["deleted": self.names])
            } else {
                for name in self.names { print("Deleted topic \(name)") }
            }
        }
    }

    struct AlterConfig: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "alter-config", abstract: "Set or remove topic configuration keys.")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic name.") var name: String
        @Option(name: .customLong("set"), help: ArgumentHelp("Set a key, repeatable.", valueName: "key=value"))
        var sets: [String] = []
        @Option(name: .customLong("delete"), help: ArgumentHelp("Remove a key (back to the default), repeatable.", valueName: "key"))
        var deletes: [String] = []

        func validate() throws {
            guard !self.sets.isEmpty || !self.deletes.isEmpty else { throw ValidationError("give --set or --delete") }
        }

        func run() async throws {
            let sets = try parsePairs(self.sets, option: "--set")
            try await withAdmin(self.connection) { try await $0.alterTopicConfig(self.name, set: sets, delete: self.deletes) }
            if self.connection.json {
                printJSON(["topic": self.name, "altered": "true"])
            } else {
                print("Altered configuration of topic \(self.name)")
            }
        }
    }

    struct AddPartitions: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "add-partitions", abstract: "Raise a topic's partition count (CreatePartitions).")
        @OptionGroup var connection: Connection
        @Argument(help: "Topic name.") var name: String
        @Option(help: "The new total partition count.") var partitions: Int32

        func run() async throws {
            try await withAdmin(self.connection) { try await $0.createPartitions(self.name, count: self.partitions) }
            if self.connection.json {
                printJSON(["topic": self.name, "partitions": String(self.partitions)])
            } else {
                print("Topic \(self.name) now has \(self.partitions) partitions")
            }
        }
    }
}

struct Cluster: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect the cluster.", subcommands: [Describe.self])

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the controller quorum (leader, term, commit index, each voter's match index and lag) and the data nodes.",
            discussion: "Works through any data node or controller address; the leader is asked for voter progress.")
        @OptionGroup var connection: Connection

        struct Report: Encodable {
            var clusterID: String?
            var leaderId: Int32
            var term: Int64
            var commitIndex: Int64
            var voters: [QuorumReport.Voter]
            var nodes: [QuorumReport.DataNode]
            var controllers: [QuorumReport.Controller]
            var brokers: [ClusterDescription.Broker]
        }

        func run() async throws {
            let report = try await withAdmin(self.connection) { admin -> Report in
                let quorum = try await admin.describeQuorum()
                // A controller does not serve DescribeCluster; a data node does.
                let cluster = try? await admin.describeCluster()
                return Report(
                    clusterID: cluster?.clusterID, leaderId: quorum.leaderId, term: quorum.term, commitIndex: quorum.commitIndex,
                    voters: quorum.voters, nodes: quorum.nodes, controllers: quorum.controllers, brokers: cluster?.brokers ?? [])
            }
            if self.connection.json {
                printJSON(report)
                return
            }
            if let clusterID = report.clusterID { print("Cluster: \(clusterID)") }
            print("Controller quorum: leader \(report.leaderId), term \(report.term), commit index \(report.commitIndex)")
            printTable(
                ["VOTER", "MATCH INDEX", "LAG", "LISTENER"],
                report.voters.map { voter in
                    let listener = report.controllers.first { $0.id == voter.id }.map { "\($0.host):\($0.port)" } ?? ""
                    return [
                        String(voter.id) + (voter.id == report.leaderId ? " (leader)" : ""),
                        voter.matchIndex < 0 ? "?" : String(voter.matchIndex), voter.lag < 0 ? "?" : String(voter.lag), listener,
                    ]
                })
            if !report.nodes.isEmpty {
                print("")
                printTable(
                    ["DATA NODE", "STATE", "LISTENER", "RACK", "INCARNATION", "APPLIED OFFSET", "LAST HEARD"],
                    report.nodes.map { node in
                        [
                            String(node.id), node.state,
                            node.host.map { host in "\(host):\(node.port ?? 0)" } ?? "", node.rack ?? "",
                            node.incarnation.map(String.init) ?? "", node.appliedOffset < 0 ? "?" : String(node.appliedOffset),
                            node.lastHeartbeatAgeMs < 0 ? "?" : "\(node.lastHeartbeatAgeMs) ms ago",
                        ]
                    })
            }
            if !report.brokers.isEmpty {
                print("")
                printTable(["BROKER", "HOST", "PORT", "RACK"], report.brokers.map { [String($0.id), $0.host, String($0.port), $0.rack ?? ""] })
            }
        }
    }
}

struct Controllers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Change the controller quorum's voters, one at a time.", subcommands: [Add.self, Remove.self])

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a running controller (started with the current voters' --voters) as a voter.")
        @OptionGroup var connection: Connection
        @Option(help: "The new controller's node id.") var id: Int32
        @Option(help: ArgumentHelp("The new controller's listener.", valueName: "host:port")) var listener: String

        func run() async throws {
            guard let colon = self.listener.lastIndex(of: ":"), let port = Int(self.listener[self.listener.index(after: colon)...]) else {
                throw ValidationError("--listener \(self.listener) is not host:port")
            }
            let host = String(self.listener[..<colon])
            try await withAdmin(self.connection) { try await $0.addController(id: self.id, host: host, port: port) }
            if self.connection.json { printJSON(["added": self.id]) } else { print("Added controller \(self.id) as a voter") }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Remove a voter from the controller quorum.")
        @OptionGroup var connection: Connection
        @Option(help: "The controller's node id.") var id: Int32

        func run() async throws {
            try await withAdmin(self.connection) { try await $0.removeController(id: self.id) }
            if self.connection.json { printJSON(["removed": self.id]) } else { print("Removed controller \(self.id) from the voters") }
        }
    }
}

struct Ring: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect the ring of data nodes.", subcommands: [Describe.self])

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show the ring: each data node's tokens, the share of the ring it owns and the partitions it leads.",
            discussion: """
                Answered from the connected node's metadata image (any data node, standalone or controller), with \
                placement as the nodes compute it; then each running data node is asked what it serves (partitions, \
                bytes) and how its Chord sees its tokens' neighbours. --arcs lists every token's arc, --views each \
                node's view.
                """)
        @OptionGroup var connection: Connection
        @Flag(help: "List each node's tokens and the arcs (previous token, token] they own.") var arcs = false
        @Flag(help: "List each node's view of its tokens' predecessor and successor.") var views = false

        func run() async throws {
            let report = try await withAdmin(self.connection) { try await $0.describeRing() }
            if self.connection.json {
                printJSON(report)
                return
            }
            let answered = report.answeredBy < 0 ? "a controller" : "node \(report.answeredBy)"
            print("Ring epoch \(report.ringEpoch) (metadata offset \(report.metadataOffset), answered by \(answered)): "
                + "\(report.nodes.count) data node\(report.nodes.count == 1 ? "" : "s"), \(report.partitions) partitions")
            guard !report.nodes.isEmpty else { return }
            let percent = { (share: Double) in String(format: "%.2f%%", share * 100) }
            printTable(
                ["NODE", "STATE", "LISTENER", "RACK", "TOKENS", "OWNS", "LEADS", "SERVES", "BYTES"],
                report.nodes.map { node in
                    [
                        String(node.id), node.state, "\(node.host):\(node.port)", node.rack ?? "", String(node.arcs.count),
                        percent(node.ownership), String(node.partitions), node.served.map(String.init) ?? "?",
                        node.bytes.map(String.init) ?? "?",
                    ]
                })
            for node in report.nodes where self.arcs {
                print("")
                print("Node \(node.id):")
                printTable(["TOKEN", "ARC FROM", "SHARE"], node.arcs.map { [$0.token, $0.from, percent($0.share)] })
            }
            for node in report.nodes where self.views {
                print("")
                guard let view = node.view else {
                    print("Node \(node.id): did not answer")
                    continue
                }
                print("Node \(node.id) sees:")
                printTable(["TOKEN", "PREDECESSOR", "SUCCESSOR"], view.map { [$0.token, $0.predecessor, $0.successor] })
            }
        }
    }
}

struct Cache: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Inspect the nodes' hot caches.", subcommands: [Describe.self])

    struct Describe: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each node's hot cache: budget, what it holds, hit ratio and evictions.",
            discussion: """
                The hot cache keeps the newest batches of every partition in memory (hot-cache-bytes, \
                hot-cache-max-age-ms), so consumers at the tail read without touching the disk. Counters are since \
                each node started; a read counts as a hit when the cache held its offset, a miss when it went to the \
                segment files. Asks the connected node, then every other broker the cluster lists.
                """)
        @OptionGroup var connection: Connection

        func run() async throws {
            let reports = try await withAdmin(self.connection) { try await $0.describeCaches() }
            if self.connection.json {
                printJSON(reports)
                return
            }
            let mebibytes = { (bytes: Int64) in String(format: "%.1f MiB", Double(bytes) / 1_048_576) }
            printTable(
                ["NODE", "HOLDS", "BUDGET", "BATCHES", "PARTITIONS", "HIT RATIO", "HITS", "MISSES", "EVICTED (BUDGET)", "EVICTED (AGE)"],
                reports.map { report in
                    [
                        String(report.node), mebibytes(report.bytes), mebibytes(report.bytesMax), String(report.batches),
                        String(report.partitions), String(format: "%.2f%%", report.hitRatio * 100), String(report.hits),
                        String(report.misses), String(report.evictedForBytes), String(report.evictedForAge),
                    ]
                })
        }
    }
}
