import NIOCore

// Kafka's primitive types (protocol guide, "Protocol Primitive Types") on ByteBuffer.
//
// Readers throw `KafkaDecodingError` instead of returning nil so that generated decoders stay
// linear; every length is checked against `readableBytes` before it is used.

extension ByteBuffer {
    @inlinable
    mutating func readFixed<T: FixedWidthInteger>(_: T.Type, _ context: StaticString) throws(KafkaDecodingError) -> T {
        guard let value = self.readInteger(endianness: .big, as: T.self) else {
            throw KafkaDecodingError(.truncated, "\(context)")
        }
        return value
    }

    @inlinable
    public mutating func readKafkaInt8() throws(KafkaDecodingError) -> Int8 { try self.readFixed(Int8.self, "int8") }
    @inlinable
    public mutating func readKafkaInt16() throws(KafkaDecodingError) -> Int16 { try self.readFixed(Int16.self, "int16") }
    @inlinable
    public mutating func readKafkaInt32() throws(KafkaDecodingError) -> Int32 { try self.readFixed(Int32.self, "int32") }
    @inlinable
    public mutating func readKafkaInt64() throws(KafkaDecodingError) -> Int64 { try self.readFixed(Int64.self, "int64") }
    @inlinable
    public mutating func readKafkaUInt16() throws(KafkaDecodingError) -> UInt16 {
        try self.readFixed(UInt16.self, "uint16")
    }
    @inlinable
    public mutating func readKafkaUInt32() throws(KafkaDecodingError) -> UInt32 {
        try self.readFixed(UInt32.self, "uint32")
    }

    public mutating func readKafkaBool() throws(KafkaDecodingError) -> Bool { try self.readKafkaInt8() != 0 }

    public mutating func readKafkaFloat64() throws(KafkaDecodingError) -> Double {
        Double(bitPattern: try self.readFixed(UInt64.self, "float64"))
    }

    public mutating func readKafkaUUID() throws(KafkaDecodingError) -> KafkaUUID {
        let high = try self.readFixed(UInt64.self, "uuid")
        let low = try self.readFixed(UInt64.self, "uuid")
        return KafkaUUID(high: high, low: low)
    }

    /// An unsigned LEB128 varint of at most 5 bytes (protocol guide, UNSIGNED_VARINT).
    @inlinable
    public mutating func readKafkaUnsignedVarint() throws(KafkaDecodingError) -> UInt32 {
        var result: UInt32 = 0
        var shift: UInt32 = 0
        while true {
            guard let byte = self.readInteger(as: UInt8.self) else {
                throw KafkaDecodingError(.truncated, "unsigned varint")
            }
            if shift == 28 && byte > 0x0F {
                throw KafkaDecodingError(.varintTooLong, "unsigned varint")
            }
            result |= UInt32(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// An unsigned LEB128 varlong of at most 10 bytes.
    @inlinable
    public mutating func readKafkaUnsignedVarlong() throws(KafkaDecodingError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard let byte = self.readInteger(as: UInt8.self) else {
                throw KafkaDecodingError(.truncated, "unsigned varlong")
            }
            if shift == 63 && byte > 1 {
                throw KafkaDecodingError(.varintTooLong, "unsigned varlong")
            }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
    }

    /// A zig-zag signed varint (records use these for lengths and deltas).
    @inlinable
    public mutating func readKafkaVarint() throws(KafkaDecodingError) -> Int32 {
        let raw = try self.readKafkaUnsignedVarint()
        return Int32(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// A zig-zag signed varlong.
    @inlinable
    public mutating func readKafkaVarlong() throws(KafkaDecodingError) -> Int64 {
        let raw = try self.readKafkaUnsignedVarlong()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    /// Reads a string or compact string length; nil means null.
    @inlinable
    mutating func readKafkaLength(compact: Bool, wide: Bool, _ context: StaticString) throws(KafkaDecodingError) -> Int? {
        let length: Int
        if compact {
            let raw = try self.readKafkaUnsignedVarint()
            if raw == 0 { return nil }
            length = Int(raw) - 1
        } else if wide {
            let raw = try self.readKafkaInt32()
            if raw < 0 {
                guard raw == -1 else { throw KafkaDecodingError(.negativeLength, "\(context)") }
                return nil
            }
            length = Int(raw)
        } else {
            let raw = try self.readKafkaInt16()
            if raw < 0 {
                guard raw == -1 else { throw KafkaDecodingError(.negativeLength, "\(context)") }
                return nil
            }
            length = Int(raw)
        }
        guard length <= self.readableBytes else {
            throw KafkaDecodingError(.lengthExceedsBuffer, "\(context)")
        }
        return length
    }

    public mutating func readKafkaNullableString(compact: Bool) throws(KafkaDecodingError) -> String? {
        guard let length = try self.readKafkaLength(compact: compact, wide: false, "string") else { return nil }
        return self.readString(length: length)
    }

    public mutating func readKafkaString(compact: Bool) throws(KafkaDecodingError) -> String {
        guard let string = try self.readKafkaNullableString(compact: compact) else {
            throw KafkaDecodingError(.unexpectedNull, "string")
        }
        return string
    }

    /// Bytes are returned as a slice of this buffer: no copy is made.
    public mutating func readKafkaNullableBytes(compact: Bool) throws(KafkaDecodingError) -> ByteBuffer? {
        guard let length = try self.readKafkaLength(compact: compact, wide: true, "bytes") else { return nil }
        return self.readSlice(length: length)
    }

    public mutating func readKafkaBytes(compact: Bool) throws(KafkaDecodingError) -> ByteBuffer {
        guard let bytes = try self.readKafkaNullableBytes(compact: compact) else {
            throw KafkaDecodingError(.unexpectedNull, "bytes")
        }
        return bytes
    }

    /// An array's element count, or nil for a null array. The count is bounded by the bytes
    /// left, since every element takes at least one byte.
    public mutating func readKafkaArrayCount(compact: Bool) throws(KafkaDecodingError) -> Int? {
        try self.readKafkaLength(compact: compact, wide: true, "array")
    }

    /// Skips an unknown tagged field of `size` bytes.
    public mutating func skipKafkaTaggedField(tag: UInt32, size: UInt32) throws(KafkaDecodingError) {
        guard Int(size) <= self.readableBytes else {
            throw KafkaDecodingError(.lengthExceedsBuffer, "tagged field \(tag)")
        }
        self.moveReaderIndex(forwardBy: Int(size))
    }

    // MARK: Writers

    @inlinable
    public mutating func writeKafkaInt8(_ value: Int8) { self.writeInteger(value) }
    @inlinable
    public mutating func writeKafkaInt16(_ value: Int16) { self.writeInteger(value, endianness: .big) }
    @inlinable
    public mutating func writeKafkaInt32(_ value: Int32) { self.writeInteger(value, endianness: .big) }
    @inlinable
    public mutating func writeKafkaInt64(_ value: Int64) { self.writeInteger(value, endianness: .big) }
    @inlinable
    public mutating func writeKafkaUInt16(_ value: UInt16) { self.writeInteger(value, endianness: .big) }
    @inlinable
    public mutating func writeKafkaUInt32(_ value: UInt32) { self.writeInteger(value, endianness: .big) }

    public mutating func writeKafkaBool(_ value: Bool) { self.writeInteger(value ? 1 : 0, as: Int8.self) }

    public mutating func writeKafkaFloat64(_ value: Double) {
        self.writeInteger(value.bitPattern, endianness: .big)
    }

    public mutating func writeKafkaUUID(_ value: KafkaUUID) {
        self.writeInteger(value.high, endianness: .big)
        self.writeInteger(value.low, endianness: .big)
    }

    @inlinable
    public mutating func writeKafkaUnsignedVarint(_ value: UInt32) {
        var v = value
        while v >= 0x80 {
            self.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        self.writeInteger(UInt8(v))
    }

    @inlinable
    public mutating func writeKafkaUnsignedVarlong(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            self.writeInteger(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        self.writeInteger(UInt8(v))
    }

    @inlinable
    public mutating func writeKafkaVarint(_ value: Int32) {
        self.writeKafkaUnsignedVarint(UInt32(bitPattern: (value << 1) ^ (value >> 31)))
    }

    @inlinable
    public mutating func writeKafkaVarlong(_ value: Int64) {
        self.writeKafkaUnsignedVarlong(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func writeKafkaString(_ value: String, compact: Bool) {
        let length = value.utf8.count
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(length + 1))
        } else {
            self.writeKafkaInt16(Int16(truncatingIfNeeded: length))
        }
        self.writeString(value)
    }

    public mutating func writeKafkaNullableString(_ value: String?, compact: Bool) {
        guard let value else {
            if compact { self.writeKafkaUnsignedVarint(0) } else { self.writeKafkaInt16(-1) }
            return
        }
        self.writeKafkaString(value, compact: compact)
    }

    public mutating func writeKafkaBytes(_ value: ByteBuffer, compact: Bool) {
        self.writeKafkaBytesLength(value.readableBytes, compact: compact)
        self.writeImmutableBuffer(value)
    }

    /// The length prefix of a bytes field of `count` bytes.
    mutating func writeKafkaBytesLength(_ count: Int, compact: Bool) {
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(count + 1))
        } else {
            self.writeKafkaInt32(Int32(count))
        }
    }

    public mutating func writeKafkaNullableBytes(_ value: ByteBuffer?, compact: Bool) {
        guard let value else {
            if compact { self.writeKafkaUnsignedVarint(0) } else { self.writeKafkaInt32(-1) }
            return
        }
        self.writeKafkaBytes(value, compact: compact)
    }

    public mutating func writeKafkaArrayCount(_ count: Int, compact: Bool) {
        if compact {
            self.writeKafkaUnsignedVarint(UInt32(count + 1))
        } else {
            self.writeKafkaInt32(Int32(count))
        }
    }

    public mutating func writeKafkaNullArray(compact: Bool) {
        if compact { self.writeKafkaUnsignedVarint(0) } else { self.writeKafkaInt32(-1) }
    }
}

/// The number of bytes `value` takes as a zig-zag varint.
@inlinable
public func kafkaVarintSize(_ value: Int64) -> Int {
    var v = UInt64(bitPattern: (value << 1) ^ (value >> 63))
    var size = 1
    while v >= 0x80 {
        v >>= 7
        size += 1
    }
    return size
}
