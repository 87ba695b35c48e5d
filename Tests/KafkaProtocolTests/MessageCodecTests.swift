import KafkaProtocol
import NIOCore
import Testing

@Suite struct MessageCodecTests {
    /// Every field of every version of every message Rafka speaks survives encode → decode.
    @Test(arguments: allMessageSamples.map(\.name))
    func everyVersionRoundTrips(name: String) throws {
        let entry = try #require(allMessageSamples.first { $0.name == name })
        for version in entry.versions {
            #expect(try entry.roundTrip(version), "\(name) v\(version) did not round-trip")
        }
    }

    /// Rafka's DescribeNodes: round-trips, and a response cut short is an error, not a crash.
    @Test func describeNodesRoundTripsAndRejectsTruncation() throws {
        let response = DescribeNodesResponse(
            fromLeader: true,
            nodes: [
                .init(id: 101, host: "10.0.0.1", port: 9092, rack: "a", incarnation: 7, fenced: false, appliedOffset: 42, lastHeartbeatAgeMs: 120),
                .init(id: 102, host: "10.0.0.2", port: 9092, rack: nil, incarnation: 3, fenced: true),
            ])
        var buffer = ByteBuffer()
        response.encode(into: &buffer, version: 0)
        #expect(try DescribeNodesResponse.decodeWhole(buffer, version: 0) == response)
        let truncated = buffer.getSlice(at: 0, length: buffer.readableBytes - 3)!
        #expect(throws: KafkaDecodingError.self) { try DescribeNodesResponse.decodeWhole(truncated, version: 0) }
    }

    /// Rafka's DescribeRing: round-trips; a token count the bytes cannot hold is refused before
    /// anything is allocated.
    @Test func describeRingRoundTripsAndRejectsLyingCounts() throws {
        let response = DescribeRingResponse(
            ringEpoch: 9, metadataOffset: 120, answeredBy: 101,
            nodes: [
                .init(id: 101, host: "10.0.0.1", port: 9092, rack: "a", fenced: false, tokens: [1, UInt64.max, 1 << 63]),
                .init(id: 102, host: "10.0.0.2", port: 9092, rack: nil, fenced: true, tokens: []),
            ])
        var buffer = ByteBuffer()
        response.encode(into: &buffer, version: 0)
        #expect(try DescribeRingResponse.decodeWhole(buffer, version: 0) == response)
        var lying = ByteBuffer()
        DescribeRingResponse(nodes: [.init(id: 1, host: "h", port: 1, rack: nil, fenced: false, tokens: [])]).encode(into: &lying, version: 0)
        lying.moveWriterIndex(to: lying.writerIndex - 1)
        lying.writeKafkaArrayCount(1000, compact: true)  // 1,000 tokens announced, none sent
        #expect(throws: KafkaDecodingError.self) { try DescribeRingResponse.decodeWhole(lying, version: 0) }
    }

    /// Golden bytes written by hand from the protocol guide: ApiVersionsResponse v0 with one API.
    @Test func apiVersionsResponseV0GoldenBytes() throws {
        let response = ApiVersionsResponse(errorCode: 35, apiKeys: [.init(apiKey: 18, minVersion: 0, maxVersion: 4)])
        var buffer = ByteBuffer()
        response.encode(into: &buffer, version: 0)
        #expect(Array(buffer.readableBytesView) == [0, 35, 0, 0, 0, 1, 0, 18, 0, 0, 0, 4])
    }

    /// The same response in v3: compact array (count+1), tagged-field sections, throttle time.
    @Test func apiVersionsResponseV3GoldenBytes() throws {
        let response = ApiVersionsResponse(errorCode: 0, apiKeys: [.init(apiKey: 18, minVersion: 0, maxVersion: 4)], throttleTimeMs: 7)
        var buffer = ByteBuffer()
        response.encode(into: &buffer, version: 3)
        #expect(Array(buffer.readableBytesView) == [0, 0, 2, 0, 18, 0, 0, 0, 4, 0, 0, 0, 0, 7, 0])
    }

    /// A tagged field written by a newer peer is skipped, not rejected (KIP-482).
    @Test func unknownTaggedFieldsAreSkipped() throws {
        // ApiVersionsRequest v3: name "a", version "b", then one tagged field (tag 9, 2 bytes).
        let bytes: [UInt8] = [2, 0x61, 2, 0x62, 1, 9, 2, 0xAA, 0xBB]
        let request = try ApiVersionsRequest.decodeWhole(ByteBuffer(bytes: bytes), version: 3)
        #expect(request.clientSoftwareName == "a")
        #expect(request.clientSoftwareVersion == "b")
    }

    /// A known tagged field is read at its tag (FetchResponse v12 partition CurrentLeader, tag 1).
    @Test func knownTaggedFieldRoundTrips() throws {
        var partition = FetchResponse.PartitionData()
        partition.currentLeader = .init(leaderId: 3, leaderEpoch: 9)
        partition.records = ByteBuffer()
        let response = FetchResponse(responses: [.init(topic: "t", partitions: [partition])])
        var buffer = ByteBuffer()
        response.encode(into: &buffer, version: 12)
        let decoded = try FetchResponse.decodeWhole(buffer, version: 12)
        #expect(decoded.responses[0].partitions[0].currentLeader == .init(leaderId: 3, leaderEpoch: 9))
    }

    @Test func trailingBytesAreRejected() {
        var buffer = ByteBuffer()
        ApiVersionsRequest().encode(into: &buffer, version: 0)
        buffer.writeInteger(UInt8(1))
        #expect(throws: KafkaDecodingError.self) { try ApiVersionsRequest.decodeWhole(buffer, version: 0) }
    }

    /// Truncating any valid encoding anywhere is an error, never a crash or a wrong value.
    @Test func everyTruncationOfAProduceRequestFails() throws {
        let request = ProduceRequest.sample(version: 9, seed: 1)
        var buffer = ByteBuffer()
        request.encode(into: &buffer, version: 9)
        for length in 0..<buffer.readableBytes {
            let cut = buffer.getSlice(at: 0, length: length)!
            #expect(throws: KafkaDecodingError.self) { try ProduceRequest.decodeWhole(cut, version: 9) }
        }
    }

    /// A count that claims more elements than bytes remain fails before anything is allocated.
    @Test func lyingArrayCountFailsFast() {
        var buffer = ByteBuffer()
        buffer.writeKafkaNullableString("txn", compact: false)  // transactional id (v3)
        buffer.writeInteger(Int16(1))  // acks
        buffer.writeInteger(Int32(1000))  // timeout
        buffer.writeInteger(Int32.max)  // topic count: a lie
        #expect(throws: KafkaDecodingError(.lengthExceedsBuffer, "array")) {
            try ProduceRequest.decodeWhole(buffer, version: 3)
        }
    }
}
