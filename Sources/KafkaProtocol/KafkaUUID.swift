import NIOCore

/// A 128-bit Kafka UUID (topic ids, KIP-516), printed the way Kafka prints it: URL-safe base64
/// without padding, 22 characters.
public struct KafkaUUID: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The all-zero UUID, Kafka's "no id".
    public static let zero = KafkaUUID(high: 0, low: 0)

    /// A random version-4 UUID that is neither zero nor Kafka's reserved metadata id (0…01).
    public static func random<G: RandomNumberGenerator>(using generator: inout G) -> KafkaUUID {
        while true {
            var high = generator.next() as UInt64
            var low = generator.next() as UInt64
            high = (high & ~0xF000) | 0x4000
            low = (low & ~(0xC000_0000_0000_0000 as UInt64)) | 0x8000_0000_0000_0000
            let id = KafkaUUID(high: high, low: low)
            if id != .zero && id != KafkaUUID(high: 0, low: 1) { return id }
        }
    }

    public static func random() -> KafkaUUID {
        var generator = SystemRandomNumberGenerator()
        return .random(using: &generator)
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    public var description: String {
        var bytes = [UInt8]()
        bytes.reserveCapacity(16)
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: self.high >> UInt64(shift))) }
        for shift in stride(from: 56, through: 0, by: -8) { bytes.append(UInt8(truncatingIfNeeded: self.low >> UInt64(shift))) }
        var out = [UInt8]()
        out.reserveCapacity(22)
        var index = 0
        while index < 16 {
            let b0 = UInt32(bytes[index])
            let b1 = index + 1 < 16 ? UInt32(bytes[index + 1]) : 0
            let b2 = index + 2 < 16 ? UInt32(bytes[index + 2]) : 0
            let triple = (b0 << 16) | (b1 << 8) | b2
            let chars = index + 2 < 16 ? 4 : (index + 1 < 16 ? 3 : 2)
            for j in 0..<chars {
                out.append(Self.alphabet[Int((triple >> UInt32(18 - 6 * j)) & 0x3F)])
            }
            index += 3
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Parses Kafka's 22-character base64url form.
    public init?(_ text: String) {
        let chars = Array(text.utf8)
        guard chars.count == 22 else { return nil }
        var bits: [UInt8] = []
        bits.reserveCapacity(16)
        var accumulator: UInt32 = 0
        var count = 0
        for c in chars {
            guard let value = Self.alphabet.firstIndex(of: c) else { return nil }
            accumulator = (accumulator << 6) | UInt32(value)
            count += 6
            if count >= 8 {
                count -= 8
                bits.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(count)))
            }
        }
        guard bits.count == 16 else { return nil }
        self.high = bits[0..<8].reduce(0) { ($0 << 8) | UInt64($1) }
        self.low = bits[8..<16].reduce(0) { ($0 << 8) | UInt64($1) }
    }
}
