import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import RafkaCore
import RafkaStorage
import RaftCore
import Synchronization

/// One-way request frames to peers (Raft messages between controllers, Chord messages between
/// data nodes) over one outbound connection each.
///
/// Both protocols tolerate lost messages, so nothing is queued: while a peer is unreachable
/// (connecting, backing off, or not reading) its frames are dropped and the protocol's retries
/// resend what matters. Connections are opened lazily and re-opened with a back-off.
final class PeerLinks: Sendable {
    private struct Peer {
        var endpoint: Endpoint
        var channel: (any Channel)?
        var connecting = false
        var lastAttempt: ContinuousClock.Instant?
    }

    private let group: any EventLoopGroup
    private let logger: Logger
    private let peers: Mutex<[NodeID: Peer]>
    private let correlation = Atomic<Int32>(0)
    private static let reconnectDelay = Duration.milliseconds(200)

    init(endpoints: [NodeID: Endpoint], group: any EventLoopGroup, logger: Logger) {
        self.group = group
        self.logger = logger
        self.peers = Mutex(endpoints.mapValues { Peer(endpoint: $0) })
    }

    /// Learns peers' addresses (from the metadata image), keeping existing connections.
    func update(endpoints: [NodeID: Endpoint]) {
        self.peers.withLock { peers in
            for (id, endpoint) in endpoints where peers[id]?.endpoint != endpoint {
                peers[id]?.channel?.close(promise: nil)
                peers[id] = Peer(endpoint: endpoint)
            }
        }
    }

    /// Sends the frame `make` builds (given a correlation id) to `node`, or drops it while
    /// the node is unreachable.
    func send(to node: NodeID, _ make: (Int32) -> ByteBuffer) {
        guard let channel = self.channel(for: node) else { return }
        let id = self.correlation.add(1, ordering: .relaxed).newValue
        channel.writeAndFlush(make(id), promise: nil)
    }

    /// The open connection to `node`, or nil (starting a connection attempt if one is due).
    private func channel(for node: NodeID) -> (any Channel)? {
        let (channel, connectTo) = self.peers.withLock { peers -> ((any Channel)?, Endpoint?) in
            guard var peer = peers[node] else { return (nil, nil) }
            if let channel = peer.channel, channel.isActive {
                return (channel.isWritable ? channel : nil, nil)
            }
            peer.channel = nil
            let now = ContinuousClock.now
            let due = peer.lastAttempt.map { now - $0 >= Self.reconnectDelay } ?? true
            guard !peer.connecting && due else {
                peers[node] = peer
                return (nil, nil)
            }
            peer.connecting = true
            peer.lastAttempt = now
            peers[node] = peer
            return (nil, peer.endpoint)
        }
        if let connectTo { self.connect(node, connectTo) }
        return channel
    }

    private func connect(_ node: NodeID, _ endpoint: Endpoint) {
        ClientBootstrap(group: self.group)
            .connectTimeout(.seconds(1))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(DiscardingHandler())
                }
            }
            .connect(host: endpoint.host, port: Int(endpoint.port))
            .whenComplete { result in
                self.peers.withLock { peers in
                    peers[node]?.connecting = false
                    if case .success(let channel) = result {
                        if peers[node]?.endpoint == endpoint {
                            peers[node]?.channel = channel
                        } else {
                            channel.close(promise: nil)
                        }
                    }
                }
            }
    }

    func close() {
        let channels = self.peers.withLock { peers in peers.values.compactMap(\.channel) }
        for channel in channels { channel.close(promise: nil) }
    }
}

/// Sends Raft messages to the other controllers.
struct RaftPeerTransport: RaftTransport {
    let links: PeerLinks

    func send(_ messages: [RaftMessage]) {
        for message in messages {
            self.links.send(to: message.to) { RaftFrames.frame(message, correlationID: $0) }
        }
    }
}

/// The frames are one-way: a peer never answers on our outbound connection.
private final class DiscardingHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
