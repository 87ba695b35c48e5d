import Foundation
import KafkaProtocol
import NIOCore
import Testing

/// Request frames captured from kcat, confluent-kafka, kafka-python and aiokafka (the shared
/// `kafka-protocol/captures` folder next to this repository, or `$RAFKA_CAPTURES`): each must
/// decode and re-encode to the same bytes.
@Suite struct CaptureTests {
    static let directory: String? = {
        let candidates = [
            ProcessInfo.processInfo.environment["RAFKA_CAPTURES"],
            URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../shared/kafka-protocol/captures").path,
        ].compactMap { $0 }
        return candidates.first { FileManager.default.fileExists(atPath: $0 + "/index.tsv") }
    }()

    static let files: [String] = {
        guard let directory else { return [] }
        return ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".bin") }.sorted()
    }()

    @Test(.enabled(if: directory != nil, "captures folder not found"), arguments: files)
    func captureRoundTrips(file: String) throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.directory! + "/" + file))
        var frame = ByteBuffer(bytes: data)
        let size = frame.readInteger(as: Int32.self) ?? -1
        #expect(Int(size) == frame.readableBytes)
        let prefix = try #require(KafkaHeaders.peekPrefix(frame))
        guard let codec = Self.codecs[prefix.apiKey] else {
            return  // An API Rafka does not generate (e.g. GetTelemetrySubscriptions).
        }
        let headerVersion = KafkaHeaders.requestHeaderVersion(
            flexible: codec.flexible(prefix.apiVersion), apiKey: prefix.apiKey, apiVersion: prefix.apiVersion)
        let headerStart = frame.readerIndex
        let header = try RequestHeader(from: &frame, version: headerVersion)
        var reencoded = ByteBuffer()
        header.encode(into: &reencoded, version: headerVersion)
        try codec.reencode(&frame, prefix.apiVersion, &reencoded)
        #expect(frame.readableBytes == 0, "\(file): \(frame.readableBytes) bytes left")
        #expect(Array(reencoded.readableBytesView) == Array(data.dropFirst(headerStart)))
    }

    struct Codec: Sendable {
        var flexible: @Sendable (Int16) -> Bool
        var reencode: @Sendable (inout ByteBuffer, Int16, inout ByteBuffer) throws -> Void
    }

    static func codec<M: KafkaRequestMessage>(_: M.Type) -> Codec {
        Codec(flexible: { M.isFlexible($0) }) { input, version, output in
            let message = try M(from: &input, version: version)
            message.encode(into: &output, version: version)
        }
    }

    static let codecs: [KafkaAPIKey: Codec] = [
        .apiVersions: codec(ApiVersionsRequest.self), .metadata: codec(MetadataRequest.self),
        .produce: codec(ProduceRequest.self), .initProducerId: codec(InitProducerIdRequest.self),
        .createTopics: codec(CreateTopicsRequest.self), .describeConfigs: codec(DescribeConfigsRequest.self),
        .findCoordinator: codec(FindCoordinatorRequest.self), .joinGroup: codec(JoinGroupRequest.self),
        .syncGroup: codec(SyncGroupRequest.self), .leaveGroup: codec(LeaveGroupRequest.self),
    ]
}
