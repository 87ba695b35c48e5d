/// A storage operation failed. Public errors are structs with a nested `Code` so that adding a
/// code never breaks callers; the server maps codes to Kafka errors in one place.
public struct StorageError: Error, Hashable, Sendable, CustomStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: Hashable, Sendable {
            case io, corruptSegment, offsetOutOfRange, invalidConfig, notFound, alreadyExists, database, wouldWait
        }

        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// A system call failed (the errno is in the message).
        public static let io = Code(.io)
        /// A closed segment failed validation; the file is named in the message.
        public static let corruptSegment = Code(.corruptSegment)
        /// A read asked for an offset outside [log start, log end].
        public static let offsetOutOfRange = Code(.offsetOutOfRange)
        /// A configuration value was rejected.
        public static let invalidConfig = Code(.invalidConfig)
        public static let notFound = Code(.notFound)
        public static let alreadyExists = Code(.alreadyExists)
        /// SQLite reported an error.
        public static let database = Code(.database)
        /// A read asked not to wait for the device found a page the OS page cache does not hold
        /// (`FileHandle.read(…, waiting: false)`).
        public static let wouldWait = Code(.wouldWait)

        public var description: String { "\(self.base)" }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(self.code): \(self.message)" }
}
