import Foundation
import KafkaProtocol
import Logging
import NIOCore
import RafkaClient
@testable import RafkaServer
import Testing

extension Tag {
    /// Tests that run a real broker on 127.0.0.1.
    @Tag static var integration: Self
}

/// A broker on 127.0.0.1 with an OS-chosen port and a temporary data directory.
struct TestBroker {
    let broker: Broker
    let listener: KafkaListener
    let directory: String
    /// The broker's loops (metadata quorum clock, reconciler); cancelled by `stop`.
    let loops: Task<Void, any Error>
    var port: Int { self.listener.localAddress!.port! }

    static func start(_ configure: (inout BrokerConfig) -> Void = { _ in }) async throws -> TestBroker {
        let directory = NSTemporaryDirectory() + "rafka-server-test-" + UUID().uuidString
        var config = BrokerConfig()
        config.dataDirectory = directory
        config.listen = HostPort(host: "127.0.0.1", port: 0)
        config.eventLoopThreads = 2
        configure(&config)
        var logger = Logger(label: "test")
        logger.logLevel = .warning
        let broker = try await Broker.start(config: config, logger: logger)
        let listener = try await KafkaListener.bind(broker: broker)
        // Unstructured because the test owns the broker across awaits; `stop` cancels it.
        let loops = Task { try await broker.run() }
        return TestBroker(broker: broker, listener: listener, directory: directory, loops: loops)
    }

    /// Runs `body` against a fresh broker and always stops it afterwards.
    static func with(
        _ configure: (inout BrokerConfig) -> Void = { _ in },
        _ body: (TestBroker) async throws -> Void
    ) async throws {
        let broker = try await Self.start(configure)
        do {
            try await body(broker)
        } catch {
            await broker.stop()
            throw error
        }
        await broker.stop()
    }

    func connect() async throws -> KafkaConnection {
        try await KafkaConnection.connect(host: "127.0.0.1", port: self.port)
    }

    func stop() async {
        self.loops.cancel()
        _ = await self.loops.result
        await self.listener.close()
        await self.broker.shutdown()
        try? FileManager.default.removeItem(atPath: self.directory)
    }
}

/// A blocking TCP socket for sending raw, possibly hostile, bytes.
final class RawSocket {
    let fd: Int32

    init(port: Int) throws {
        self.fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(self.fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else { throw KafkaClientError("connect failed: errno \(errno)") }
        // A bound on every read: a test never waits forever.
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(self.fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(self.fd) }

    func send(_ bytes: [UInt8]) {
        _ = bytes.withUnsafeBytes { Glibc.send(self.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    func send(_ buffer: ByteBuffer) { self.send(Array(buffer.readableBytesView)) }

    /// Reads exactly `count` bytes, or nil at EOF/timeout.
    func read(_ count: Int) -> [UInt8]? {
        var result = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: max(count, 1))
        while result.count < count {
            let n = chunk.withUnsafeMutableBytes { recv(self.fd, $0.baseAddress, count - result.count, 0) }
            if n <= 0 { return nil }
            result += chunk[0..<n]
        }
        return result
    }

    /// Reads one response frame (size-prefixed); nil when the server closed the connection.
    func readFrame() -> ByteBuffer? {
        guard let sizeBytes = self.read(4) else { return nil }
        let size = Int(ByteBuffer(bytes: sizeBytes).getInteger(at: 0, as: Int32.self)!)
        guard let body = self.read(size) else { return nil }
        return ByteBuffer(bytes: body)
    }

    /// True once the server has closed the connection (EOF before the timeout).
    func isClosedByPeer() -> Bool {
        var byte: UInt8 = 0
        return recv(self.fd, &byte, 1, 0) == 0
    }
}

/// A request frame: size, header v1/v2, body.
func requestFrame<M: KafkaRequestMessage>(_ message: M, version: Int16, correlationID: Int32) -> ByteBuffer {
    var frame = ByteBuffer()
    frame.writeInteger(Int32(0))
    let flexible = M.isFlexible(version)
    RequestHeader(requestApiKey: M.apiKey.rawValue, requestApiVersion: version, correlationId: correlationID, clientId: "t")
        .encode(into: &frame, version: KafkaHeaders.requestHeaderVersion(flexible: flexible, apiKey: M.apiKey, apiVersion: version))
    message.encode(into: &frame, version: version)
    frame.setInteger(Int32(frame.readableBytes - 4), at: 0)
    return frame
}

/// Waits until `condition` holds, checking it on `loop`'s timer every 10 ms, and gives up at
/// `limit`: for what a test cannot be told of (an fsync done, a waiter registered), a condition
/// with a deadline rather than a sleep that guesses how long it takes. Returns whether it held.
func eventually(
    on loop: any EventLoop,
    within limit: TimeAmount,
    _ condition: () async throws -> Bool
) async throws -> Bool {
    let deadline = NIODeadline.now() + limit
    while NIODeadline.now() < deadline {
        if try await condition() { return true }
        try await loop.scheduleTask(in: .milliseconds(10)) {}.futureResult.get()
    }
    return try await condition()
}
