import Foundation
import KafkaProtocol
import NIOCore
import Testing

/// Encodings of every version of every message Rafka serves, written by an independent
/// implementation (kafka-python 3.x, via `tools/gen-golden.py`) with every field set: Rafka's
/// codec must decode each and encode it back to the same bytes.
@Suite struct GoldenEncodingTests {
    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden").path

    static let files: [String] =
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".bin") }.sorted()

    typealias Codec = @Sendable (ByteBuffer, Int16) throws -> ByteBuffer

    static func codec<M: KafkaMessage>(_: M.Type) -> Codec {
        { bytes, version in
            var output = ByteBuffer()
            try M.decodeWhole(bytes, version: version).encode(into: &output, version: version)
            return output
        }
    }

    static let codecs: [String: Codec] = [
        "ProduceRequest": codec(ProduceRequest.self), "ProduceResponse": codec(ProduceResponse.self),
        "FetchRequest": codec(FetchRequest.self), "FetchResponse": codec(FetchResponse.self),
        "ListOffsetsRequest": codec(ListOffsetsRequest.self), "ListOffsetsResponse": codec(ListOffsetsResponse.self),
        "MetadataRequest": codec(MetadataRequest.self), "MetadataResponse": codec(MetadataResponse.self),
        "ApiVersionsRequest": codec(ApiVersionsRequest.self), "ApiVersionsResponse": codec(ApiVersionsResponse.self),
        "CreateTopicsRequest": codec(CreateTopicsRequest.self), "CreateTopicsResponse": codec(CreateTopicsResponse.self),
        "DeleteTopicsRequest": codec(DeleteTopicsRequest.self), "DeleteTopicsResponse": codec(DeleteTopicsResponse.self),
        "InitProducerIdRequest": codec(InitProducerIdRequest.self),
        "InitProducerIdResponse": codec(InitProducerIdResponse.self),
        "DescribeConfigsRequest": codec(DescribeConfigsRequest.self),
        "DescribeConfigsResponse": codec(DescribeConfigsResponse.self),
        "AlterConfigsRequest": codec(AlterConfigsRequest.self), "AlterConfigsResponse": codec(AlterConfigsResponse.self),
        "CreatePartitionsRequest": codec(CreatePartitionsRequest.self),
        "CreatePartitionsResponse": codec(CreatePartitionsResponse.self),
        "IncrementalAlterConfigsRequest": codec(IncrementalAlterConfigsRequest.self),
        "IncrementalAlterConfigsResponse": codec(IncrementalAlterConfigsResponse.self),
        "DescribeClusterRequest": codec(DescribeClusterRequest.self),
        "DescribeClusterResponse": codec(DescribeClusterResponse.self),
    ]

    @Test func everyServedVersionHasAGoldenEncoding() {
        #expect(Self.files.count == 150)
    }

    @Test(arguments: files)
    func decodesAndReencodesIdentically(file: String) throws {
        let name = String(file.dropLast(4))
        let parts = name.split(separator: "-v")
        let message = String(parts[0])
        let version = try #require(Int16(parts[1]))
        let codec = try #require(Self.codecs[message], "no codec for \(message)")
        let bytes = ByteBuffer(bytes: try Data(contentsOf: URL(fileURLWithPath: Self.directory + "/" + file)))
        let reencoded = try codec(bytes, version)
        #expect(Array(reencoded.readableBytesView) == Array(bytes.readableBytesView), "\(file)")
    }
}
