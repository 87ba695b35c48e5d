import Foundation
import KafkaProtocol
import NIOCore
import RafkaCompression
import RafkaStorage

/// A fresh directory under the system temp folder, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        self.path = NSTemporaryDirectory() + "rafka-test-" + UUID().uuidString
        try! FileManager.default.createDirectory(atPath: self.path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: self.path) }
}

enum Batches {
    /// A v2 batch of `count` records of `valueBytes` each, at `timestamp` (+1 ms per record).
    static func make(
        count: Int = 3,
        valueBytes: Int = 10,
        timestamp: Int64 = 1_700_000_000_000,
        codec: CompressionCodec = .none,
        producerID: Int64 = -1,
        epoch: Int16 = -1,
        sequence: Int32 = -1,
        tag: String = "v"
    ) -> ByteBuffer {
        let records = (0..<count).map { i in
            Record(
                timestampDelta: Int64(i), offsetDelta: Int32(i), key: ByteBuffer(string: "k\(i)"),
                value: ByteBuffer(string: String((tag + "-\(i)-" + String(repeating: "x", count: valueBytes)).prefix(max(valueBytes, 1)))))
        }
        let header = RecordBatchHeader(
            attributes: Int16(codec.rawValue), baseTimestamp: timestamp, maxTimestamp: timestamp + Int64(count - 1),
            producerID: producerID, producerEpoch: epoch, baseSequence: sequence)
        return try! RecordBatch.build(header: header, records: records) { try codec.compress($0) }
    }

    static func validated(_ bytes: ByteBuffer, config: LogConfig? = nil) throws -> [ValidatedBatch] {
        try RecordBatchValidator.validate(bytes, config: config ?? LogConfig(), nowMilliseconds: 1_700_000_000_000)
    }

    /// The values of every record in `bytes` (whole batches), decompressing as needed.
    static func values(_ bytes: ByteBuffer) throws -> [String] {
        var values: [String] = []
        for batch in try RecordBatch.split(bytes, allowPartialTail: true) {
            let codec = CompressionCodec(rawValue: batch.header.compressionCodecValue)!
            let payload = try codec.decompress(RecordBatch.recordsSection(of: batch.bytes), outputBytesMax: 1 << 26)
            for record in try RecordBatch.decodeRecords(payload) {
                var value = record.value!
                values.append(value.readString(length: value.readableBytes)!)
            }
        }
        return values
    }

    static func offsets(_ bytes: ByteBuffer) throws -> [Int64] {
        try RecordBatch.split(bytes, allowPartialTail: true).map(\.header.baseOffset)
    }
}

extension AppendOutcome {
    var info: AppendInfo? {
        switch self {
        case .appended(let info), .duplicate(let info): info
        default: nil
        }
    }
}

/// The validator's failure code for `body`, or nil if it succeeded.
func validationFailure(_ body: () throws -> Void) -> RecordBatchValidator.Failure.Code? {
    do {
        try body()
        return nil
    } catch let failure as RecordBatchValidator.Failure {
        return failure.code
    } catch {
        return nil
    }
}
