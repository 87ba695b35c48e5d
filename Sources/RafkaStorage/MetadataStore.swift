import KafkaProtocol

/// Persists the metadata image in a SQLite file (`<data-dir>/metadata.db`), one transaction per
/// change, fsynced on commit. Owned by one actor.
public final class MetadataStore {
    private let database: SQLiteDatabase

    public init(path: String) throws(StorageError) {
        self.database = try SQLiteDatabase(path: path)
        try self.database.execute(
            """
            CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS topics(
                name TEXT PRIMARY KEY, id TEXT NOT NULL UNIQUE, partitions INTEGER NOT NULL,
                replication_factor INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS topic_configs(
                topic TEXT NOT NULL REFERENCES topics(name) ON DELETE CASCADE,
                key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY(topic, key));
            """)
    }

    /// Loads the stored image, creating a new cluster id on first use.
    public func load() throws(StorageError) -> MetadataImage {
        let clusterID: String
        if let stored = try self.database.query("SELECT value FROM meta WHERE key = 'cluster.id'").first?.first?.text {
            clusterID = stored
        } else {
            clusterID = KafkaUUID.random().description
            try self.database.query("INSERT INTO meta(key, value) VALUES('cluster.id', ?)", [.text(clusterID)])
        }
        var image = MetadataImage(clusterID: clusterID)
        if let next = try self.database.query("SELECT value FROM meta WHERE key = 'producer.id.next'").first?.first?.text {
            image.nextProducerID = Int64(next) ?? 0
        }
        for row in try self.database.query("SELECT name, id, partitions, replication_factor FROM topics") {
            guard let name = row[0].text, let idText = row[1].text, let id = KafkaUUID(idText),
                let partitions = row[2].integer, let factor = row[3].integer
            else { throw StorageError(.database, "\(self.database.path): malformed topic row \(row)") }
            image.topics[name] = TopicMetadata(
                name: name, id: id, partitionCount: Int32(partitions), replicationFactor: Int16(factor), configs: [:])
        }
        for row in try self.database.query("SELECT topic, key, value FROM topic_configs") {
            guard let topic = row[0].text, let key = row[1].text, let value = row[2].text else { continue }
            image.topics[topic]?.configs[key] = value
        }
        return image
    }

    /// Makes `change` durable.
    public func persist(_ change: MetadataChange) throws(StorageError) {
        try self.database.transaction { () throws(StorageError) in
            switch change {
            case .createTopic(let topic):
                try self.database.query(
                    "INSERT INTO topics(name, id, partitions, replication_factor) VALUES(?, ?, ?, ?)",
                    [.text(topic.name), .text(topic.id.description), .integer(Int64(topic.partitionCount)),
                     .integer(Int64(topic.replicationFactor))])
                try self.replaceConfigs(topic.name, topic.configs)
            case .deleteTopic(let name):
                try self.database.query("DELETE FROM topics WHERE name = ?", [.text(name)])
            case .setPartitionCount(let topic, let count):
                try self.database.query(
                    "UPDATE topics SET partitions = ? WHERE name = ?", [.integer(Int64(count)), .text(topic)])
            case .setTopicConfigs(let topic, let configs):
                try self.replaceConfigs(topic, configs)
            case .reserveProducerIDs(let next):
                try self.database.query(
                    "INSERT INTO meta(key, value) VALUES('producer.id.next', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [.text(String(next))])
            }
        }
    }

    private func replaceConfigs(_ topic: String, _ configs: [String: String]) throws(StorageError) {
        try self.database.query("DELETE FROM topic_configs WHERE topic = ?", [.text(topic)])
        for (key, value) in configs.sorted(by: { $0.key < $1.key }) {
            try self.database.query(
                "INSERT INTO topic_configs(topic, key, value) VALUES(?, ?, ?)", [.text(topic), .text(key), .text(value)])
        }
    }

    public func close() {
        self.database.close()
    }
}
