import NIOCore

/// Header versions follow from the API and its version (KIP-482): flexible request versions use
/// request header v2 (tagged fields), others v1; responses use header v1 when flexible, except
/// ApiVersions, whose response header is always v0 so that a client can read it before it knows
/// which versions the broker speaks.
public enum KafkaHeaders {
    /// The request header version for `apiKey` at `apiVersion`.
    public static func requestHeaderVersion(flexible: Bool, apiKey: KafkaAPIKey, apiVersion: Int16) -> Int16 {
        if apiKey == .controlledShutdown && apiVersion == 0 { return 0 }
        return flexible ? 2 : 1
    }

    /// The response header version for `apiKey` at `apiVersion`.
    public static func responseHeaderVersion(flexible: Bool, apiKey: KafkaAPIKey) -> Int16 {
        if apiKey == .apiVersions { return 0 }
        return flexible ? 1 : 0
    }

    /// Reads the fixed prefix every request header version shares: key, version, correlation id.
    /// The rest of the header depends on whether the version is flexible.
    public static func peekPrefix(_ frame: ByteBuffer) -> (apiKey: KafkaAPIKey, apiVersion: Int16, correlationID: Int32)? {
        guard let key = frame.getInteger(at: frame.readerIndex, endianness: .big, as: Int16.self),
            let version = frame.getInteger(at: frame.readerIndex + 2, endianness: .big, as: Int16.self),
            let correlation = frame.getInteger(at: frame.readerIndex + 4, endianness: .big, as: Int32.self)
        else { return nil }
        return (KafkaAPIKey(rawValue: key), version, correlation)
    }
}
