import HashTreeCollections
import KafkaProtocol
import NIOCore
import RafkaStorage

extension AdminAPIs {
    /// Kafka's `ConfigResource.Type` values.
    enum ResourceType {
        static let topic: Int8 = 2
        static let broker: Int8 = 4
        static let brokerLogger: Int8 = 8
    }

    /// Kafka's `ConfigSource` values (DescribeConfigs v1+).
    enum ConfigSource {
        static let topicConfig: Int8 = 1
        static let staticBrokerConfig: Int8 = 4
        static let defaultConfig: Int8 = 5
    }

    struct DescribedConfig {
        var name: String
        var value: String
        var source: Int8
        var definition: TopicConfigDefinition
        var synonyms: [(name: String, value: String, source: Int8)]
    }

    /// Every topic config with its effective value and where it came from.
    static func describedConfigs(_ overrides: [String: String], defaults: [String: String]) -> [DescribedConfig] {
        TopicConfigDefinition.all.map { definition in
            var synonyms: [(name: String, value: String, source: Int8)] = []
            if let value = overrides[definition.name] { synonyms.append((definition.name, value, ConfigSource.topicConfig)) }
            if let value = defaults[definition.name], let synonym = definition.brokerSynonym {
                synonyms.append((synonym, value, ConfigSource.staticBrokerConfig))
            }
            synonyms.append((definition.brokerSynonym ?? definition.name, definition.defaultValue, ConfigSource.defaultConfig))
            let effective = synonyms[0]
            return DescribedConfig(
                name: definition.name, value: effective.value, source: effective.source, definition: definition,
                synonyms: synonyms)
        }
    }

    /// DescribeConfigs v1–4 for topics and for this broker.
    func describeConfigs(_ request: DescribeConfigsRequest, _ context: RequestContext) -> EventLoopFuture<DescribeConfigsResponse?> {
        let config = self.config
        return context.eventLoop.makeFutureWithTask { await Self.describeConfigs(request, image: self.currentImage(), config: config) }
    }

    static func describeConfigs(_ request: DescribeConfigsRequest, image: MetadataImage, config: BrokerConfig) -> DescribeConfigsResponse {
        var response = DescribeConfigsResponse()
        for resource in request.resources {
            var result = DescribeConfigsResponse.DescribeConfigsResult()
            result.resourceType = resource.resourceType
            result.resourceName = resource.resourceName
            switch resource.resourceType {
            case ResourceType.topic:
                guard let topic = image.topics[resource.resourceName] else {
                    result.errorCode = KafkaErrorCode.unknownTopicOrPartition.rawValue
                    result.errorMessage = "Topic \(resource.resourceName) does not exist."
                    break
                }
                let described = Self.describedConfigs(topic.configs, defaults: config.topicDefaults)
                result.configs = described.filter { resource.configurationKeys?.contains($0.name) ?? true }.map {
                    Self.resourceResult($0, request: request, readOnly: false)
                }
            case ResourceType.broker:
                guard resource.resourceName.isEmpty || resource.resourceName == String(config.nodeID) else {
                    result.errorCode = KafkaErrorCode.invalidRequest.rawValue
                    result.errorMessage = "Broker \(resource.resourceName) is not this node (\(config.nodeID))."
                    break
                }
                result.configs = Self.brokerConfigs(config).filter { resource.configurationKeys?.contains($0.name) ?? true }.map {
                    Self.resourceResult($0, request: request, readOnly: true)
                }
            default:
                result.errorCode = KafkaErrorCode.invalidRequest.rawValue
                result.errorMessage = "Resource type \(resource.resourceType) is not supported."
            }
            response.results.append(result)
        }
        return response
    }

    private static func resourceResult(
        _ config: DescribedConfig,
        request: DescribeConfigsRequest,
        readOnly: Bool
    ) -> DescribeConfigsResponse.DescribeConfigsResourceResult {
        var result = DescribeConfigsResponse.DescribeConfigsResourceResult()
        result.name = config.name
        result.value = config.value
        result.readOnly = readOnly
        result.isDefault = config.source == ConfigSource.defaultConfig
        result.configSource = config.source
        result.configType = config.definition.kind.rawValue
        if request.includeSynonyms {
            result.synonyms = config.synonyms.map { .init(name: $0.name, value: $0.value, source: $0.source) }
        }
        if request.includeDocumentation { result.documentation = config.definition.documentation }
        return result
    }

    /// The broker's own settings, described under Kafka's broker key names (read-only).
    private static func brokerConfigs(_ config: BrokerConfig) -> [DescribedConfig] {
        func entry(_ name: String, _ value: String, _ kind: TopicConfigDefinition.Kind, _ doc: String) -> DescribedConfig {
            let definition = TopicConfigDefinition(
                name: name, kind: kind, defaultValue: value, brokerSynonym: nil, documentation: doc, isHonoured: true)
            return DescribedConfig(
                name: name, value: value, source: ConfigSource.staticBrokerConfig, definition: definition,
                synonyms: [(name, value, ConfigSource.staticBrokerConfig)])
        }
        var entries = [
            entry("broker.id", String(config.nodeID), .int, "This node's id."),
            entry("listeners", "PLAINTEXT://\(config.listen)", .list, "Where the Kafka listener binds."),
            entry("advertised.listeners", "PLAINTEXT://\(config.advertised)", .list, "What clients are told."),
            entry("log.dirs", config.dataDirectory + "/logs", .list, "Partition log directory."),
            entry("num.partitions", String(config.defaultPartitions), .int, "Partitions of auto-created topics."),
            entry("default.replication.factor", String(config.defaultReplicationFactor), .int, "Default replication factor."),
            entry("auto.create.topics.enable", String(config.autoCreateTopics), .boolean, "Create topics on first use."),
            entry("socket.request.max.bytes", String(config.requestBytesMax), .int, "Largest request accepted."),
            entry("log.retention.check.interval.ms", String(config.retentionCheckIntervalMilliseconds), .long,
                  "How often retention runs."),
        ]
        for definition in TopicConfigDefinition.all {
            guard let synonym = definition.brokerSynonym, !entries.contains(where: { $0.name == synonym }) else { continue }
            let value = config.topicDefaults[definition.name] ?? definition.defaultValue
            let source = config.topicDefaults[definition.name] == nil ? ConfigSource.defaultConfig : ConfigSource.staticBrokerConfig
            var described = entry(synonym, value, definition.kind, definition.documentation)
            described.source = source
            described.synonyms = [(synonym, value, source)]
            entries.append(described)
        }
        return entries
    }

    /// AlterConfigs v0–2: the given set replaces the topic's overrides.
    func alterConfigs(_ request: AlterConfigsRequest, _ context: RequestContext) -> EventLoopFuture<AlterConfigsResponse?> {
        let metadata = self.metadata
        return context.eventLoop.makeFutureWithTask {
            var response = AlterConfigsResponse()
            for resource in request.resources {
                var result = AlterConfigsResponse.AlterConfigsResourceResponse(
                    resourceType: resource.resourceType, resourceName: resource.resourceName)
                do throws(BrokerError) {
                    guard resource.resourceType == ResourceType.topic else {
                        throw BrokerError(.invalidRequest, "Only topic configurations can be altered.")
                    }
                    var configs: [String: String] = [:]
                    for config in resource.configs {
                        if let value = config.value { configs[config.name] = value }
                    }
                    try await metadata.setConfigs(topic: resource.resourceName, configs: configs, validateOnly: request.validateOnly)
                } catch {
                    result.errorCode = error.code.rawValue
                    result.errorMessage = error.message
                }
                response.responses.append(result)
            }
            return response
        }
    }

    /// IncrementalAlterConfigs v0–1: SET (0), DELETE (1), APPEND (2), SUBTRACT (3) per key.
    func incrementalAlterConfigs(
        _ request: IncrementalAlterConfigsRequest,
        _ context: RequestContext
    ) -> EventLoopFuture<IncrementalAlterConfigsResponse?> {
        let metadata = self.metadata
        let currentImage = self.currentImage
        let topicDefaults = self.config.topicDefaults
        return context.eventLoop.makeFutureWithTask {
            var response = IncrementalAlterConfigsResponse()
            for resource in request.resources {
                var result = IncrementalAlterConfigsResponse.AlterConfigsResourceResponse(
                    resourceType: resource.resourceType, resourceName: resource.resourceName)
                do throws(BrokerError) {
                    guard resource.resourceType == ResourceType.topic else {
                        throw BrokerError(.invalidRequest, "Only topic configurations can be altered.")
                    }
                    guard let topic = await currentImage().topics[resource.resourceName] else {
                        throw BrokerError(.unknownTopicOrPartition, "Topic \(resource.resourceName) does not exist.")
                    }
                    let configs = try Self.applyIncremental(resource.configs, to: topic.configs, defaults: topicDefaults)
                    try await metadata.setConfigs(topic: topic.name, configs: configs, validateOnly: request.validateOnly)
                } catch {
                    result.errorCode = error.code.rawValue
                    result.errorMessage = error.message
                }
                response.responses.append(result)
            }
            return response
        }
    }

    static func applyIncremental(
        _ operations: [IncrementalAlterConfigsRequest.AlterableConfig],
        to current: [String: String],
        defaults: [String: String]
    ) throws(BrokerError) -> [String: String] {
        var configs = current
        for operation in operations {
            guard let definition = TopicConfigDefinition.byName[operation.name] else {
                throw BrokerError(.invalidConfig, "Unknown topic config name: \(operation.name)")
            }
            let effective = configs[operation.name] ?? defaults[operation.name] ?? definition.defaultValue
            var items = effective.split(separator: ",").map { String($0) }.filter { !$0.isEmpty }
            switch operation.configOperation {
            case 0:
                guard let value = operation.value else {
                    throw BrokerError(.invalidConfig, "Null value not supported for: \(operation.name)")
                }
                configs[operation.name] = value
            case 1:
                configs[operation.name] = nil
            case 2, 3:
                guard definition.kind == .list else {
                    throw BrokerError(.invalidConfig, "Config value append/subtract is not allowed for config key: \(operation.name)")
                }
                let values = (operation.value ?? "").split(separator: ",").map { String($0) }
                if operation.configOperation == 2 {
                    for value in values where !items.contains(value) { items.append(value) }
                } else {
                    items.removeAll { values.contains($0) }
                }
                configs[operation.name] = items.joined(separator: ",")
            default:
                throw BrokerError(.invalidRequest, "Unknown config operation \(operation.configOperation)")
            }
        }
        return configs
    }
}
