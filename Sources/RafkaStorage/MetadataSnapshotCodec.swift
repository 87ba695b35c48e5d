import ChordCore
import HashTreeCollections
import NIOCore
import KafkaProtocol
import RafkaCore

/// Metadata images as SQLite databases: the format of the controller quorum's Raft snapshots
/// (and, later, of backups). One table per part of the image, readable with the `sqlite3` tool.
public enum MetadataSnapshotCodec {
    static let schema = """
        CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE topics(
            name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, partitions INTEGER NOT NULL,
            replication_factor INTEGER NOT NULL);
        CREATE TABLE topic_configs(
            topic TEXT NOT NULL REFERENCES topics(name) ON DELETE CASCADE,
            key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(topic, key));
        CREATE TABLE controllers(id INTEGER PRIMARY KEY);
        CREATE TABLE controller_endpoints(id INTEGER PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL);
        CREATE TABLE nodes(
            id INTEGER PRIMARY KEY, host TEXT NOT NULL, port INTEGER NOT NULL, rack TEXT,
            incarnation INTEGER NOT NULL, fenced INTEGER NOT NULL, leaving INTEGER NOT NULL,
            joining INTEGER NOT NULL);
        CREATE TABLE node_tokens(node INTEGER NOT NULL REFERENCES nodes(id), token INTEGER NOT NULL);
        CREATE TABLE leader_epochs(arc_end INTEGER NOT NULL, epoch INTEGER NOT NULL);
        """

    /// The image as the bytes of a SQLite database file. `scratchDirectory` holds the temporary file.
    public static func encode(_ image: MetadataImage, scratchDirectory: String) throws(StorageError) -> [UInt8] {
        let path = scratchDirectory + "/snapshot-\(KafkaUUID.random()).db"
        defer { Self.removeDatabase(path) }
        let database = try SQLiteDatabase(path: path, journal: false)
        try database.execute(Self.schema)
        try database.transaction { () throws(StorageError) in
            let meta: [(String, String)] = [
                ("cluster.id", image.clusterID), ("offset", String(image.offset.rawValue)),
                ("producer.id.next", String(image.nextProducerID)), ("ring.epoch", String(image.ringEpoch)),
            ]
            for (key, value) in meta {
                try database.query("INSERT INTO meta(key, value) VALUES(?, ?)", [.text(key), .text(value)])
            }
            for topic in image.topics.values.sorted(by: { $0.name < $1.name }) {
                try database.query(
                    "INSERT INTO topics(name, id, partitions, replication_factor) VALUES(?, ?, ?, ?)",
                    [.text(topic.name), .text(topic.id.description), .integer(Int64(topic.partitionCount)),
                     .integer(Int64(topic.replicationFactor))])
                for (key, value) in topic.configs.sorted(by: { $0.key < $1.key }) {
                    try database.query(
                        "INSERT INTO topic_configs(topic, key, value) VALUES(?, ?, ?)", [.text(topic.name), .text(key), .text(value)])
                }
            }
            for id in image.controllers {
                try database.query("INSERT INTO controllers(id) VALUES(?)", [.integer(Int64(id.rawValue))])
            }
            for (id, endpoint) in image.controllerEndpoints.sorted(by: { $0.key < $1.key }) {
                try database.query(
                    "INSERT INTO controller_endpoints(id, host, port) VALUES(?, ?, ?)",
                    [.integer(Int64(id.rawValue)), .text(endpoint.host), .integer(Int64(endpoint.port))])
            }
            for node in image.nodes.values.sorted(by: { $0.id < $1.id }) {
                try database.query(
                    "INSERT INTO nodes(id, host, port, rack, incarnation, fenced, leaving, joining) VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                    [.integer(Int64(node.id.rawValue)), .text(node.host), .integer(Int64(node.port)),
                     node.rack.map { .text($0) } ?? .null, .integer(node.incarnation), .integer(node.fenced ? 1 : 0),
                     .integer(node.leaving ? 1 : 0), .integer(node.joining ? 1 : 0)])
                for token in node.tokens {
                    // SQLite integers are signed: the token's bits, as stored.
                    try database.query(
                        "INSERT INTO node_tokens(node, token) VALUES(?, ?)",
                        [.integer(Int64(node.id.rawValue)), .integer(Int64(bitPattern: token.rawValue))])
                }
            }
            for arc in image.leaderEpochs?.arcs ?? [] {
                try database.query(
                    "INSERT INTO leader_epochs(arc_end, epoch) VALUES(?, ?)",
                    [.integer(Int64(bitPattern: arc.end.rawValue)), .integer(arc.epoch)])
            }
        }
        database.close()
        return try Array(FileSystem.readAll(path).readableBytesView)
    }

    /// The image stored in `bytes` (a SQLite database written by `encode`).
    public static func decode(_ bytes: [UInt8], scratchDirectory: String) throws(StorageError) -> MetadataImage {
        let path = scratchDirectory + "/restore-\(KafkaUUID.random()).db"
        defer { Self.removeDatabase(path) }
        let handle = try FileHandle.open(path, create: true)
        try handle.write(ByteBuffer(bytes: bytes), at: 0)
        let database = try SQLiteDatabase(path: path, journal: false)
        defer { database.close() }
        var meta: [String: String] = [:]
        for row in try database.query("SELECT key, value FROM meta") {
            if let key = row[0].text, let value = row[1].text { meta[key] = value }
        }
        var image = MetadataImage(
            clusterID: meta["cluster.id"] ?? "", offset: LogIndex(UInt64(meta["offset"] ?? "0") ?? 0),
            nextProducerID: Int64(meta["producer.id.next"] ?? "0") ?? 0, ringEpoch: Int64(meta["ring.epoch"] ?? "0") ?? 0)
        for row in try database.query("SELECT name, id, partitions, replication_factor FROM topics") {
            guard let name = row[0].text, let idText = row[1].text, let id = KafkaUUID(idText),
                let partitions = row[2].integer, let factor = row[3].integer
            else { throw StorageError(.database, "snapshot: malformed topic row \(row)") }
            image.setTopic(
                TopicMetadata(name: name, id: id, partitionCount: Int32(partitions), replicationFactor: Int16(factor), configs: [:]))
        }
        for row in try database.query("SELECT topic, key, value FROM topic_configs") {
            guard let topic = row[0].text, let key = row[1].text, let value = row[2].text else { continue }
            image.updateTopic(named: topic) { $0.configs[key] = value }
        }
        image.controllers = try database.query("SELECT id FROM controllers ORDER BY id").compactMap {
            $0[0].integer.map { NodeID(Int32($0)) }
        }
        for row in try database.query("SELECT id, host, port FROM controller_endpoints") {
            guard let id = row[0].integer, let host = row[1].text, let port = row[2].integer else { continue }
            image.controllerEndpoints[NodeID(Int32(id))] = Endpoint(host: host, port: Int32(port))
        }
        for row in try database.query("SELECT id, host, port, rack, incarnation, fenced, leaving, joining FROM nodes") {
            guard let id = row[0].integer, let host = row[1].text, let port = row[2].integer, let incarnation = row[4].integer,
                let fenced = row[5].integer, let leaving = row[6].integer, let joining = row[7].integer
            else { throw StorageError(.database, "snapshot: malformed node row \(row)") }
            image.nodes[NodeID(Int32(id))] = NodeRegistration(
                id: NodeID(Int32(id)), host: host, port: Int32(port), rack: row[3].text, incarnation: incarnation, fenced: fenced != 0,
                leaving: leaving != 0, joining: joining != 0)
        }
        for row in try database.query("SELECT node, token FROM node_tokens ORDER BY rowid") {
            guard let id = row[0].integer, let token = row[1].integer, image.nodes[NodeID(Int32(id))] != nil else {
                throw StorageError(.database, "snapshot: malformed node token row \(row)")
            }
            image.nodes[NodeID(Int32(id))]!.tokens.append(RingPosition(UInt64(bitPattern: token)))
        }
        // No rows (or, from an older version, no table): the image does not track per-partition
        // leader epochs yet.
        let tables = try database.query("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'leader_epochs'")
        var arcs: [LeaderEpochMap.Arc] = []
        for row in try tables.isEmpty ? [] : database.query("SELECT arc_end, epoch FROM leader_epochs ORDER BY rowid") {
            guard let end = row[0].integer, let epoch = row[1].integer else {
                throw StorageError(.database, "snapshot: malformed leader epoch row \(row)")
            }
            arcs.append(LeaderEpochMap.Arc(end: RingPosition(UInt64(bitPattern: end)), epoch: epoch))
        }
        if !arcs.isEmpty {
            guard let map = LeaderEpochMap(arcs: arcs) else { throw StorageError(.database, "snapshot: leader epochs do not cover the ring") }
            image.leaderEpochs = map
        }
        return image
    }

    private static func removeDatabase(_ path: String) {
        for suffix in ["", "-journal", "-wal", "-shm"] { try? FileSystem.remove(path + suffix) }
    }
}
