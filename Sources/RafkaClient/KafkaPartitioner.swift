import NIOCore

/// Kafka's default partitioner for records with a key (the Java client's, kafka-python's; the
/// `murmur2` choice of librdkafka): the partition is the key's murmur2 hash, made positive,
/// modulo the partition count. Records with one key so land on one partition whichever of
/// these clients wrote them.
public enum KafkaPartitioner {
    /// The partition (0..<partitions) that `key` belongs to.
    public static func partition(key: ByteBuffer, partitions: Int) -> Int {
        precondition(partitions > 0)
        let hash = key.withUnsafeReadableBytes { Self.murmur2($0) }
        return Int(hash & 0x7fff_ffff) % partitions
    }

    /// The 32-bit murmur2 hash with Kafka's seed, reading 4-byte words little-endian.
    public static func murmur2(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        let multiplier: UInt32 = 0x5bd1_e995
        var hash: UInt32 = 0x9747_b28c ^ UInt32(truncatingIfNeeded: bytes.count)
        let whole = bytes.count & ~3
        var index = 0
        while index < whole {
            var word =
                UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16
                | UInt32(bytes[index + 3]) << 24
            word &*= multiplier
            word ^= word >> 24
            word &*= multiplier
            hash &*= multiplier
            hash ^= word
            index += 4
        }
        let tail = bytes.count & 3
        if tail > 0 {
            if tail == 3 { hash ^= UInt32(bytes[whole + 2]) << 16 }
            if tail >= 2 { hash ^= UInt32(bytes[whole + 1]) << 8 }
            hash ^= UInt32(bytes[whole])
            hash &*= multiplier
        }
        hash ^= hash >> 13
        hash &*= multiplier
        hash ^= hash >> 15
        return hash
    }
}
