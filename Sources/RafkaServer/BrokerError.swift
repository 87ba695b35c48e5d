import KafkaProtocol
import RafkaStorage

/// A request failed with a Kafka error code and a message for clients that can show one.
///
/// Domain errors (storage, validation, metadata) become wire codes here and nowhere else.
public struct BrokerError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: KafkaErrorCode
    public var message: String?

    public init(_ code: KafkaErrorCode, _ message: String? = nil) {
        self.code = code
        self.message = message
    }

    public var description: String { self.message.map { "\(self.code): \($0)" } ?? "\(self.code)" }

    /// The Kafka error for a storage failure.
    public init(_ error: StorageError) {
        switch error.code {
        case .offsetOutOfRange: self.init(.offsetOutOfRange, error.message)
        case .invalidConfig: self.init(.invalidConfig, error.message)
        case .notFound: self.init(.unknownTopicOrPartition, error.message)
        case .alreadyExists: self.init(.topicAlreadyExists, error.message)
        default: self.init(.kafkaStorageError, error.message)
        }
    }

    /// The Kafka error for a batch that failed validation.
    public init(_ failure: RecordBatchValidator.Failure) {
        switch failure.code {
        case .corruptMessage: self.init(.corruptMessage, failure.message)
        case .invalidRecord: self.init(.invalidRecord, failure.message)
        case .messageTooLarge: self.init(.messageTooLarge, failure.message)
        case .unsupportedCompression: self.init(.unsupportedCompressionType, failure.message)
        case .invalidTimestamp: self.init(.invalidTimestamp, failure.message)
        }
    }
}

/// Runs a storage operation, turning its error into the Kafka error clients see.
func storage<T>(_ body: () throws(StorageError) -> T) throws(BrokerError) -> T {
    do {
        return try body()
    } catch {
        throw BrokerError(error)
    }
}
