import HashTreeCollections
import KafkaProtocol
import Logging
import NIOCore
import NIOPosix
import RafkaClient
import RafkaCore
import RafkaStorage
import RaftCore
import Synchronization

/// A data node's connection to the controller quorum: finds the leader (DescribeQuorum to any
/// controller), registers the node, sends its heartbeats, follows the metadata log into a local
/// image, and forwards metadata changes (CreateTopics, …) to the leader.
///
/// Isolation: an actor. Its loops (`run`) live under the node's service.
actor ControllerLink {
    /// A controller that has not answered in this long is treated as gone (it may be paused or
    /// partitioned): the link looks for the leader again.
    private static let requestTimeout = TimeAmount.seconds(2)
    private let controllers: [Endpoint]
    private let config: BrokerConfig
    private let logger: Logger
    private let group: any EventLoopGroup
    private var leaderConnection: KafkaConnection?
    /// A second connection to the leader, for the metadata long polls: requests on one
    /// connection are answered in order, so heartbeats and forwarded changes would otherwise
    /// wait behind a poll.
    private var pollConnection: KafkaConnection?
    private var leaderEndpoint: Endpoint?
    private var anyConnection: KafkaConnection?
    private(set) var leaderID: NodeID?
    private(set) var incarnation: Int64?
    /// Set by a controlled shutdown: heartbeats ask to leave the ring, and a fenced incarnation
    /// does not register again.
    private var wantsToLeave = false
    /// Data nodes this node's Chord shell suspects, carried by every heartbeat.
    private var suspects: [NodeID] = []
    /// This joining node has copied what it will lead (carried until the image shows it placed).
    private var caughtUp = false
    private(set) var image = MetadataImage(clusterID: "")
    /// Called with each new image, in order.
    private let onImage: @Sendable (MetadataImage) -> Void
    private var imageWaiters: [(offset: LogIndex, continuation: CheckedContinuation<Void, Never>)] = []
    /// Set by `close`: no image comes any more, so nobody waits for one.
    private var closed = false

    init(
        controllers: [Endpoint], config: BrokerConfig, group: any EventLoopGroup, logger: Logger,
        onImage: @escaping @Sendable (MetadataImage) -> Void
    ) {
        self.controllers = controllers
        self.config = config
        self.group = group
        self.logger = logger
        self.onImage = onImage
    }

    // MARK: Connections

    private func connect(_ endpoint: Endpoint) async throws -> KafkaConnection {
        try await KafkaConnection.connect(
            host: endpoint.host, port: Int(endpoint.port), clientID: "rafka-node-\(self.config.nodeID)", group: self.group,
            connectTimeout: Self.requestTimeout)
    }

    /// A connection to some controller (for reads any of them can answer).
    private func someController() async throws -> KafkaConnection {
        if let connection = self.anyConnection { return connection }
        var lastError: (any Error)?
        for endpoint in self.controllers.shuffled() {
            do {
                let connection = try await self.connect(endpoint)
                self.anyConnection = connection
                return connection
            } catch {
                lastError = error
            }
        }
        throw lastError ?? KafkaClientError("no controller configured")
    }

    /// A connection to the quorum leader, found through DescribeQuorum.
    func leader() async throws -> KafkaConnection {
        if let connection = self.leaderConnection { return connection }
        let probe = try await self.someController()
        let response: DescribeQuorumResponse
        do {
            response = try await probe.send(
                DescribeQuorumRequest(topics: [.init(topicName: "__cluster_metadata", partitions: [.init(partitionIndex: 0)])]),
                timeout: Self.requestTimeout)
        } catch {
            self.drop(probe)
            throw error
        }
        guard let partition = response.topics.first?.partitions.first, partition.leaderId >= 0,
            let listener = response.nodes.first(where: { $0.nodeId == partition.leaderId })?.listeners.first
        else {
            // This controller knows no leader (an election, or it was removed from the quorum):
            // ask another one next time.
            self.drop(probe)
            throw BrokerError(.notController, "the controller quorum has no leader now")
        }
        let endpoint = Endpoint(host: listener.host, port: Int32(listener.port))
        let connection = try await self.connect(endpoint)
        if let found = self.leaderConnection {
            // The heartbeats and the long polls looked for the leader at the same time.
            connection.close()
            return found
        }
        self.leaderConnection = connection
        self.leaderEndpoint = endpoint
        self.leaderID = NodeID(partition.leaderId)
        return connection
    }

    /// The long polls' connection to the quorum leader.
    private func leaderForPolls() async throws -> KafkaConnection {
        if let connection = self.pollConnection { return connection }
        _ = try await self.leader()
        guard let endpoint = self.leaderEndpoint else { throw BrokerError(.notController, "the controller leader is unknown") }
        let connection = try await self.connect(endpoint)
        if let found = self.pollConnection {
            connection.close()
            return found
        }
        self.pollConnection = connection
        return connection
    }

    /// Closes `connection`; dropping either connection to the leader drops both, so that the
    /// leader is looked for again.
    private func drop(_ connection: KafkaConnection) {
        connection.close()
        if self.leaderConnection === connection || self.pollConnection === connection {
            self.leaderConnection?.close()
            self.pollConnection?.close()
            self.leaderConnection = nil
            self.pollConnection = nil
            self.leaderEndpoint = nil
            self.leaderID = nil
        }
        if self.anyConnection === connection { self.anyConnection = nil }
    }

    /// Sends `request` to the leader at `version`, retrying through elections for up to ten
    /// seconds. `isNotController` says when an answer means "ask the new leader".
    func sendToLeader<Request: KafkaRequestWithResponse>(
        _ request: Request,
        version: Int16? = nil,
        isNotController: (Request.Response) -> Bool = { _ in false }
    ) async throws -> Request.Response {
        try await self.sendToLeaderTracking(request, version: version, isNotController: isNotController).response
    }

    /// `sendToLeader`, also saying whether an earlier attempt reached a controller and ended
    /// without a definite answer (leadership moved, the connection dropped, a timeout): that
    /// attempt's change may have committed, so a retry can meet its own effect.
    func sendToLeaderTracking<Request: KafkaRequestWithResponse>(
        _ request: Request,
        version: Int16?,
        isNotController: (Request.Response) -> Bool
    ) async throws -> (response: Request.Response, retriedAfterUnknownOutcome: Bool) {
        var lastError: any Error = BrokerError(.notController, "the controller quorum has no leader now")
        var unknownOutcome = false
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            var sent = false
            do {
                let connection = try await self.leader()
                sent = true
                let response = try await connection.send(request, version: version, timeout: Self.requestTimeout)
                if !isNotController(response) { return (response, unknownOutcome) }
                unknownOutcome = true
                self.drop(connection)
            } catch {
                lastError = error
                unknownOutcome = unknownOutcome || sent
                if let connection = self.leaderConnection { self.drop(connection) }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        throw lastError
    }

    /// DescribeQuorum through the leader; an answer naming another leader drops the cached one.
    func describeQuorum(_ request: DescribeQuorumRequest, version: Int16) async throws -> DescribeQuorumResponse {
        let response = try await self.sendToLeader(request, version: version)
        let named = response.topics.first?.partitions.first?.leaderId
        if let named, named != self.leaderID?.rawValue, let connection = self.leaderConnection { self.drop(connection) }
        return response
    }

    // MARK: Registration and heartbeats

    /// Registers (again) with the leader, getting a new incarnation.
    private func register() async throws {
        let advertised = self.config.advertised
        let response = try await self.sendToLeader(
            RegisterNodeRequest(nodeID: self.config.nodeID, host: advertised.host, port: Int32(advertised.port), rack: self.config.rack),
            isNotController: { $0.errorCode == KafkaErrorCode.notController.rawValue })
        guard response.errorCode == 0 else {
            throw BrokerError(KafkaErrorCode(rawValue: response.errorCode), response.errorMessage)
        }
        self.incarnation = response.incarnation
        self.logger.info("registered with the controllers", metadata: ["incarnation": "\(response.incarnation)"])
    }

    private func heartbeat() async {
        do {
            guard let incarnation = self.incarnation else {
                try await self.register()
                return
            }
            let response = try await self.leader().send(
                NodeHeartbeatRequest(
                    nodeID: self.config.nodeID, incarnation: incarnation, appliedOffset: Int64(self.image.offset.rawValue),
                    wantsToLeave: self.wantsToLeave, suspects: self.suspects.map(\.rawValue), caughtUp: self.caughtUp),
                timeout: Self.requestTimeout)
            switch KafkaErrorCode(rawValue: response.errorCode) {
            case KafkaErrorCode(rawValue: 0):
                break
            case .staleBrokerEpoch where self.wantsToLeave:
                self.incarnation = nil
            case .staleBrokerEpoch:
                // Fenced: this incarnation may no longer serve; rejoin with a new one.
                self.logger.warning("this node's incarnation was fenced; registering again", metadata: ["incarnation": "\(incarnation)"])
                self.incarnation = nil
                try await self.register()
            default:
                if let connection = self.leaderConnection { self.drop(connection) }
            }
        } catch {
            self.logger.debug("heartbeat failed: \(error)")
            if let connection = self.leaderConnection { self.drop(connection) }
        }
    }

    // MARK: Following the metadata log

    /// How long a metadata long poll may wait at the controller for a change, in milliseconds.
    static let metadataWaitMilliseconds: Int32 = 500

    /// Fetches what was committed after this node's image; with `waitMilliseconds`, on the polls'
    /// connection, waiting up to that long at the controller for something to be. Returns whether
    /// the image moved, and whether the controller could wait (v1; an older one is polled).
    @discardableResult
    private func fetch(waitMilliseconds: Int32 = 0) async -> (learned: Bool, waited: Bool) {
        let polling = waitMilliseconds > 0
        do {
            let connection = polling ? try await self.leaderForPolls() : try await self.leader()
            let waits = polling && (try? connection.version(for: FetchMetadataRequest.self)) ?? 0 >= 1
            let wait = waits ? waitMilliseconds : 0
            let response = try await connection.send(
                FetchMetadataRequest(fromOffset: Int64(self.image.offset.rawValue), maxWaitMs: wait),
                timeout: Self.requestTimeout + .milliseconds(Int64(wait)))
            guard response.errorCode == 0 else { return (false, waits) }
            var image = self.image
            if let snapshot = response.snapshot {
                image = try MetadataSnapshotCodec.decode(Array(snapshot.readableBytesView), scratchDirectory: self.config.dataDirectory)
            }
            for entry in response.entries where entry.index > image.offset {
                if let error = image.apply(entry) { self.logger.error("skipping an unreadable metadata entry: \(error)") }
            }
            // Another fetch (a refresh beside the long poll) may have moved the image meanwhile.
            guard image.offset > self.image.offset || (response.snapshot != nil && image.offset >= self.image.offset) else {
                return (false, waits)
            }
            self.image = image
            self.onImage(image)
            let ready = self.imageWaiters.filter { $0.offset <= image.offset }
            self.imageWaiters.removeAll { $0.offset <= image.offset }
            for waiter in ready { waiter.continuation.resume() }
            return (true, waits)
        } catch {
            self.logger.debug("metadata fetch failed: \(error)")
            if let connection = polling ? self.pollConnection : self.leaderConnection { self.drop(connection) }
            return (false, false)
        }
    }

    /// Asks the controllers to take this node out of the placement (controlled shutdown), at
    /// once and with every later heartbeat.
    func requestLeave() async {
        self.wantsToLeave = true
        await self.heartbeat()
        await self.fetch()
    }

    /// Tells the controllers this joining node has copied what it will lead, at once and with
    /// every later heartbeat.
    func reportCaughtUp() async {
        guard !self.caughtUp else { return }
        self.caughtUp = true
        await self.heartbeat()
    }

    /// Reports the data nodes the Chord shell suspects, at once and with every later heartbeat.
    func report(suspects: [NodeID]) async {
        self.suspects = suspects
        if !suspects.isEmpty { await self.heartbeat() }
    }

    /// Fetches now (after forwarding a change, so this node shows it promptly).
    func refresh() async {
        await self.fetch()
    }

    /// Creates topic `name` with the broker defaults unless it exists (auto-creation on a data
    /// node), then waits until this node's image shows it.
    func ensureTopic(_ name: String, defaults config: BrokerConfig, reconciler: MetadataReconciler) async throws(BrokerError) -> TopicMetadata {
        if let topic = self.image.topics[name] { return topic }
        do {
            let response = try await self.sendToLeader(
                CreateTopicsRequest(topics: [.init(name: name, numPartitions: -1, replicationFactor: -1)], timeoutMs: 30_000),
                version: 7, isNotController: { $0.topics.first?.errorCode == KafkaErrorCode.notController.rawValue })
            if let result = response.topics.first, result.errorCode != 0 && result.errorCode != KafkaErrorCode.topicAlreadyExists.rawValue {
                throw BrokerError(KafkaErrorCode(rawValue: result.errorCode), result.errorMessage)
            }
        } catch let error as BrokerError {
            throw error
        } catch {
            throw BrokerError(.requestTimedOut, "the controllers did not answer: \(error)")
        }
        for _ in 0..<50 {
            await self.fetch()
            if let topic = self.image.topics[name] {
                await reconciler.waitUntilReconciled(self.image.offset)
                return topic
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
        throw BrokerError(.leaderNotAvailable, "topic \(name) was created but is not visible here yet")
    }

    /// Waits until the local image reaches `offset` (after a forwarded change), up to 10 s.
    func waitForImage(_ offset: LogIndex) async {
        if self.image.offset >= offset || self.closed { return }
        await withCheckedContinuation { self.imageWaiters.append((offset, $0)) }
    }

    /// Before serving: registers and fetches until this node's image has caught up with the
    /// controllers' commit index (as a KRaft broker does before it unfences), for up to
    /// `timeout`.
    func catchUp(timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            do {
                if self.incarnation == nil { try await self.register() }
                let connection = try await self.leader()
                let target = try await connection.send(
                    FetchMetadataRequest(fromOffset: Int64(self.image.offset.rawValue), maxEntries: 0), timeout: Self.requestTimeout
                ).commitIndex
                while Int64(self.image.offset.rawValue) < target && ContinuousClock.now < deadline {
                    await self.fetch()
                }
                if Int64(self.image.offset.rawValue) >= target { return }
            } catch {
                self.logger.notice("waiting for the controllers: \(error)")
                if let connection = self.leaderConnection { self.drop(connection) }
                try await Task.sleep(for: .milliseconds(500))
            }
        }
        throw BrokerError(.requestTimedOut, "could not catch up with the controllers' metadata within \(timeout)")
    }

    /// Registers, then heartbeats and follows the metadata log until cancelled: each long poll
    /// follows the last at once (a controller that cannot wait is asked every 100 ms), and a
    /// heartbeat goes every `node-heartbeat-interval-ms`.
    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                while true {
                    try Task.checkCancellation()
                    let (learned, waited) = await self.fetch(waitMilliseconds: Self.metadataWaitMilliseconds)
                    // Polled, failed, or answered early with nothing yet: not at once again.
                    if !learned { try await Task.sleep(for: .milliseconds(waited ? 10 : 100)) }
                }
            }
            group.addTask {
                while true {
                    await self.heartbeat()
                    try await Task.sleep(for: .milliseconds(self.config.nodeHeartbeatIntervalMilliseconds))
                }
            }
            try await group.next()
        }
    }

    func close() {
        self.closed = true
        self.leaderConnection?.close()
        self.pollConnection?.close()
        self.anyConnection?.close()
        for waiter in self.imageWaiters { waiter.continuation.resume() }
        self.imageWaiters = []
    }
}

extension RegisterNodeRequest: KafkaRequestWithResponse { typealias Response = RegisterNodeResponse }
extension NodeHeartbeatRequest: KafkaRequestWithResponse { typealias Response = NodeHeartbeatResponse }
extension FetchMetadataRequest: KafkaRequestWithResponse { typealias Response = FetchMetadataResponse }
