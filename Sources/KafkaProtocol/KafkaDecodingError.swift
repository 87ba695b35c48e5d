/// A request or response could not be decoded: the bytes do not follow the Kafka wire format.
///
/// Decoding never trusts a length it reads: every length and count is checked against the bytes
/// actually present before anything is allocated, so a lying length costs nothing but this error.
public struct KafkaDecodingError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What went wrong. New codes may be added; switch with a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case truncated, negativeLength, lengthExceedsBuffer, varintTooLong, unexpectedNull
            case unsupportedVersion, unknownAPIKey, trailingBytes
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The buffer ended inside a field.
        public static let truncated = Code(.truncated)
        /// A length or count was negative where null is not allowed.
        public static let negativeLength = Code(.negativeLength)
        /// A length or count claims more bytes than the frame holds.
        public static let lengthExceedsBuffer = Code(.lengthExceedsBuffer)
        /// A varint ran past its maximum width.
        public static let varintTooLong = Code(.varintTooLong)
        /// A non-nullable field was null.
        public static let unexpectedNull = Code(.unexpectedNull)
        /// The API version is outside what this side supports.
        public static let unsupportedVersion = Code(.unsupportedVersion)
        /// The API key is not one this side knows.
        public static let unknownAPIKey = Code(.unknownAPIKey)
        /// Bytes were left over after the message.
        public static let trailingBytes = Code(.trailingBytes)

        public var description: String { "\(self.base)" }
    }

    public var code: Code
    /// The field or context where decoding stopped.
    public var context: String

    public init(_ code: Code, _ context: String) {
        self.code = code
        self.context = context
    }

    public var description: String { "\(self.code) at \(self.context)" }
}
