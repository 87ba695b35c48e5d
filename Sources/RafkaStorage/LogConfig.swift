/// A topic's configuration, with Kafka's names, defaults and validation (`LogConfig.java`).
///
/// Every key a Kafka topic accepts is known here, so that tools which set them (Kafka Connect,
/// Terraform providers, Strimzi) work. `TopicConfigDefinition.isHonoured` says whether Rafka acts
/// on a key today; docs/configuration.md lists them. Values are validated on create and alter:
/// a bad value is an INVALID_CONFIG with the message from here.
public struct LogConfig: Sendable, Equatable {
    public enum TimestampType: String, Sendable {
        case createTime = "CreateTime"
        case logAppendTime = "LogAppendTime"
    }

    /// Bytes in a segment before a new one is rolled.
    public var segmentBytes: Int
    /// Milliseconds after which a segment is rolled even if not full.
    public var segmentMilliseconds: Int64
    /// Segments whose newest record is older than this are deleted; -1 keeps forever.
    public var retentionMilliseconds: Int64
    /// Oldest segments are deleted while the log is larger than this; -1 means no limit.
    public var retentionBytes: Int64
    /// fsync after this many messages; Int64.max leaves flushing to the OS (Kafka's default).
    public var flushMessages: Int64
    /// fsync when this many milliseconds passed since the last; Int64.max leaves it to the OS.
    public var flushMilliseconds: Int64
    /// Bytes between sparse offset-index entries.
    public var indexIntervalBytes: Int
    /// The largest batch the topic accepts.
    public var maxMessageBytes: Int
    public var timestampType: TimestampType
    /// `producer` keeps batches as sent; a codec name makes the broker recompress.
    public var compressionType: String
    /// A CreateTime more than this before the broker's clock is rejected.
    public var timestampBeforeMaxMilliseconds: Int64
    /// A CreateTime more than this after the broker's clock is rejected.
    public var timestampAfterMaxMilliseconds: Int64
    public var minInsyncReplicas: Int

    /// Builds the effective configuration: `overrides` (the topic's own) over `defaults` (the
    /// broker's) over Kafka's defaults. Throws `.invalidConfig` naming the first bad key.
    public init(overrides: [String: String] = [:], defaults: [String: String] = [:]) throws(StorageError) {
        func value(_ key: String) -> String {
            (overrides[key] ?? defaults[key] ?? TopicConfigDefinition.byName[key]!.defaultValue).trimmingCharacters()
        }
        for (key, text) in overrides {
            try TopicConfigDefinition.validate(key: key, value: text)
        }
        for (key, text) in defaults where TopicConfigDefinition.byName[key] != nil {
            try TopicConfigDefinition.validate(key: key, value: text)
        }
        self.segmentBytes = Int(value("segment.bytes"))!
        self.segmentMilliseconds = Int64(value("segment.ms"))!
        self.retentionMilliseconds = Int64(value("retention.ms"))!
        self.retentionBytes = Int64(value("retention.bytes"))!
        self.flushMessages = Int64(value("flush.messages"))!
        self.flushMilliseconds = Int64(value("flush.ms"))!
        self.indexIntervalBytes = Int(value("index.interval.bytes"))!
        self.maxMessageBytes = Int(value("max.message.bytes"))!
        self.timestampType = TimestampType(rawValue: value("message.timestamp.type"))!
        self.compressionType = value("compression.type")
        self.timestampBeforeMaxMilliseconds = Int64(value("message.timestamp.before.max.ms"))!
        self.timestampAfterMaxMilliseconds = Int64(value("message.timestamp.after.max.ms"))!
        self.minInsyncReplicas = Int(value("min.insync.replicas"))!
    }

    /// True when the OS decides when to flush (no fsync from Rafka).
    public var flushesOnlyByOS: Bool { self.flushMessages == Int64.max && self.flushMilliseconds == Int64.max }
}

/// One topic-level configuration key as Kafka defines it.
public struct TopicConfigDefinition: Sendable {
    /// Kafka's `ConfigDef.Type`, reported by DescribeConfigs v3+ (`configType`).
    public enum Kind: Int8, Sendable {
        case boolean = 1, string = 2, int = 3, short = 4, long = 5, double = 6, list = 7, `class` = 8, password = 9
    }

    public var name: String
    public var kind: Kind
    public var defaultValue: String
    /// The broker-level key that sets this key's default (Kafka's synonym).
    public var brokerSynonym: String?
    public var documentation: String
    /// Whether Rafka acts on the value today (others are stored and reported only).
    public var isHonoured: Bool
    /// Allowed range for numbers, inclusive.
    var range: ClosedRange<Int64>?
    /// Allowed values for strings (each element for lists).
    var choices: [String]?

    public init(
        name: String, kind: Kind, defaultValue: String, brokerSynonym: String?, documentation: String, isHonoured: Bool,
        range: ClosedRange<Int64>? = nil, choices: [String]? = nil
    ) {
        self.name = name
        self.kind = kind
        self.defaultValue = defaultValue
        self.brokerSynonym = brokerSynonym
        self.documentation = documentation
        self.isHonoured = isHonoured
        self.range = range
        self.choices = choices
    }

    static let longMax = String(Int64.max)

    /// Every topic key Kafka 3.9 accepts (tiered-storage keys excluded: Rafka has no remote tier).
    public static let all: [TopicConfigDefinition] = [
        .init(name: "cleanup.policy", kind: .list, defaultValue: "delete", brokerSynonym: "log.cleanup.policy",
              documentation: "delete: old segments are removed by retention. compact is not supported yet.",
              isHonoured: true, choices: ["delete"]),
        .init(name: "compression.type", kind: .string, defaultValue: "producer", brokerSynonym: "compression.type",
              documentation: "producer keeps batches as produced; a codec makes the broker recompress to it.",
              isHonoured: true, choices: ["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        .init(name: "delete.retention.ms", kind: .long, defaultValue: "86400000", brokerSynonym: "log.cleaner.delete.retention.ms",
              documentation: "Tombstone retention for compacted topics (stored; no compaction yet).", isHonoured: false,
              range: 0...Int64.max),
        .init(name: "file.delete.delay.ms", kind: .long, defaultValue: "60000", brokerSynonym: "log.segment.delete.delay.ms",
              documentation: "Delay before a deleted segment's file is removed (Rafka removes at once).", isHonoured: false,
              range: 0...Int64.max),
        .init(name: "flush.messages", kind: .long, defaultValue: longMax, brokerSynonym: "log.flush.interval.messages",
              documentation: "fsync the log after this many messages; the default leaves flushing to the OS.",
              isHonoured: true, range: 1...Int64.max),
        .init(name: "flush.ms", kind: .long, defaultValue: longMax, brokerSynonym: "log.flush.interval.ms",
              documentation: "fsync the log when this many ms passed since the last; the default leaves it to the OS.",
              isHonoured: true, range: 0...Int64.max),
        .init(name: "index.interval.bytes", kind: .int, defaultValue: "4096", brokerSynonym: "log.index.interval.bytes",
              documentation: "Bytes of log between entries of the sparse offset index.", isHonoured: true,
              range: 0...Int64(Int32.max)),
        .init(name: "max.compaction.lag.ms", kind: .long, defaultValue: longMax, brokerSynonym: "log.cleaner.max.compaction.lag.ms",
              documentation: "Compaction only (stored; no compaction yet).", isHonoured: false, range: 1...Int64.max),
        .init(name: "max.message.bytes", kind: .int, defaultValue: "1048588", brokerSynonym: "message.max.bytes",
              documentation: "The largest record batch the topic accepts.", isHonoured: true,
              range: 0...Int64(Int32.max)),
        .init(name: "message.downconversion.enable", kind: .boolean, defaultValue: "true",
              brokerSynonym: "log.message.downconversion.enable",
              documentation: "Rafka stores v2 batches only and never down-converts.", isHonoured: false,
              choices: ["true", "false"]),
        .init(name: "message.timestamp.after.max.ms", kind: .long, defaultValue: longMax,
              brokerSynonym: "log.message.timestamp.after.max.ms",
              documentation: "Reject CreateTime timestamps further than this in the future.", isHonoured: true,
              range: 0...Int64.max),
        .init(name: "message.timestamp.before.max.ms", kind: .long, defaultValue: longMax,
              brokerSynonym: "log.message.timestamp.before.max.ms",
              documentation: "Reject CreateTime timestamps further than this in the past.", isHonoured: true,
              range: 0...Int64.max),
        .init(name: "message.timestamp.difference.max.ms", kind: .long, defaultValue: longMax,
              brokerSynonym: "log.message.timestamp.difference.max.ms",
              documentation: "Deprecated by the before/after keys; stored only.", isHonoured: false, range: 0...Int64.max),
        .init(name: "message.timestamp.type", kind: .string, defaultValue: "CreateTime",
              brokerSynonym: "log.message.timestamp.type",
              documentation: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches on append.",
              isHonoured: true, choices: ["CreateTime", "LogAppendTime"]),
        .init(name: "min.cleanable.dirty.ratio", kind: .double, defaultValue: "0.5", brokerSynonym: "log.cleaner.min.cleanable.ratio",
              documentation: "Compaction only (stored; no compaction yet).", isHonoured: false),
        .init(name: "min.compaction.lag.ms", kind: .long, defaultValue: "0", brokerSynonym: "log.cleaner.min.compaction.lag.ms",
              documentation: "Compaction only (stored; no compaction yet).", isHonoured: false, range: 0...Int64.max),
        .init(name: "min.insync.replicas", kind: .int, defaultValue: "1", brokerSynonym: "min.insync.replicas",
              documentation: "Replicas that must acknowledge an acks=all write (one node: always met).", isHonoured: true,
              range: 1...Int64(Int32.max)),
        .init(name: "preallocate", kind: .boolean, defaultValue: "false", brokerSynonym: "log.preallocate",
              documentation: "Preallocate segment files (stored; Rafka does not preallocate).", isHonoured: false,
              choices: ["true", "false"]),
        .init(name: "retention.bytes", kind: .long, defaultValue: "-1", brokerSynonym: "log.retention.bytes",
              documentation: "Delete oldest segments while the partition is larger than this; -1 means no limit.",
              isHonoured: true),
        .init(name: "retention.ms", kind: .long, defaultValue: "604800000", brokerSynonym: "log.retention.ms",
              documentation: "Delete segments whose newest record is older than this; -1 keeps forever.",
              isHonoured: true, range: -1...Int64.max),
        .init(name: "segment.bytes", kind: .int, defaultValue: "1073741824", brokerSynonym: "log.segment.bytes",
              documentation: "Segment file size at which a new segment is rolled.", isHonoured: true,
              range: 14...Int64(Int32.max)),
        .init(name: "segment.index.bytes", kind: .int, defaultValue: "10485760", brokerSynonym: "log.index.size.max.bytes",
              documentation: "Index file size limit (Rafka's indexes grow as needed).", isHonoured: false,
              range: 4...Int64(Int32.max)),
        .init(name: "segment.jitter.ms", kind: .long, defaultValue: "0", brokerSynonym: "log.roll.jitter.ms",
              documentation: "Random jitter subtracted from segment.ms (stored only).", isHonoured: false,
              range: 0...Int64.max),
        .init(name: "segment.ms", kind: .long, defaultValue: "604800000", brokerSynonym: "log.roll.ms",
              documentation: "Roll a new segment after this many ms even if not full.", isHonoured: true,
              range: 1...Int64.max),
        .init(name: "unclean.leader.election.enable", kind: .boolean, defaultValue: "false",
              brokerSynonym: "unclean.leader.election.enable",
              documentation: "On a data node's ring: whether the next node takes over the partitions of a fenced leader with what it has (their records on the fenced node are lost) instead of keeping them offline until it returns.",
              isHonoured: true, choices: ["true", "false"]),
    ]

    public static let byName: [String: TopicConfigDefinition] = Dictionary(uniqueKeysWithValues: all.map { ($0.name, $0) })

    /// Checks one key and value; the error message is what clients see with INVALID_CONFIG.
    public static func validate(key: String, value: String) throws(StorageError) {
        guard let definition = Self.byName[key] else {
            throw StorageError(.invalidConfig, "Unknown topic config name: \(key)")
        }
        let trimmed = value.trimmingCharacters()
        switch definition.kind {
        case .int, .long, .short:
            guard let number = Int64(trimmed) else {
                throw StorageError(.invalidConfig, "Invalid value \(value) for configuration \(key): Not a number of type \(definition.kind)")
            }
            if definition.kind == .int && (number < Int64(Int32.min) || number > Int64(Int32.max)) {
                throw StorageError(.invalidConfig, "Invalid value \(value) for configuration \(key): Not a number of type INT")
            }
            if let range = definition.range, !range.contains(number) {
                throw StorageError(
                    .invalidConfig,
                    "Invalid value \(value) for configuration \(key): Value must be at least \(range.lowerBound)"
                        + (range.upperBound < Int64.max ? " and at most \(range.upperBound)" : ""))
            }
        case .double:
            guard Double(trimmed) != nil else {
                throw StorageError(.invalidConfig, "Invalid value \(value) for configuration \(key): Not a number of type DOUBLE")
            }
        case .boolean:
            guard trimmed.lowercased() == "true" || trimmed.lowercased() == "false" else {
                throw StorageError(.invalidConfig, "Invalid value \(value) for configuration \(key): Expected value to be either true or false")
            }
        case .string, .list, .class, .password:
            if let choices = definition.choices {
                let items = definition.kind == .list ? trimmed.split(separator: ",").map { String($0).trimmingCharacters() } : [trimmed]
                for item in items where !choices.contains(item) {
                    let hint = key == "cleanup.policy" && item == "compact" ? " (log compaction is not supported yet)" : ""
                    throw StorageError(
                        .invalidConfig,
                        "Invalid value \(value) for configuration \(key): String must be one of: \(choices.joined(separator: ", "))\(hint)")
                }
            }
        }
    }
}

extension String {
    /// Leading and trailing ASCII whitespace removed (no Foundation in storage).
    func trimmingCharacters() -> String {
        let scalars = self.unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }) else { return "" }
        let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })!
        return String(scalars[first...last])
    }
}
