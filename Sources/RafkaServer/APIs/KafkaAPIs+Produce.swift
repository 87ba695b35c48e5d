import HashTreeCollections
import KafkaProtocol
import Logging
import NIOCore
import RafkaCore
import RafkaStorage

extension KafkaAPIs {
    /// Produce v3–10. Each partition's records are validated and appended on the partition's
    /// loop (`PartitionShell.append(validating:)`); the reply lists every partition in request order,
    /// and from v10 names the leader of each partition turned away (`LeaderHints`).
    /// With acks=0 nothing is sent back, and a failed partition closes the connection (as Kafka
    /// does, so that the producer notices).
    func produce(_ request: ProduceRequest, _ context: RequestContext) -> EventLoopFuture<ProduceResponse?> {
        guard request.acks == 0 || request.acks == 1 || request.acks == -1 else {
            return context.eventLoop.makeSucceededFuture(
                Self.produceResponse(request, error: BrokerError(.invalidRequiredAcks, "acks must be 0, 1 or -1")))
        }
        let topicsToCreate = request.topicData.map(\.name).filter {
            self.broker.cache.image.topics[$0] == nil && self.mayAutoCreate(clientAllows: true)
        }
        let ready: EventLoopFuture<Void>
        if topicsToCreate.isEmpty {
            ready = context.eventLoop.makeSucceededVoidFuture()
        } else {
            let broker = self.broker
            ready = self.async(on: context.eventLoop) {
                for name in topicsToCreate { _ = try? await broker.ensureTopic(name) }
            }
        }
        // What waits for the answers keeps the topic names, not the request: a partition's
        // records are then referenced by its append alone, which writes them where they are
        // (`PartitionLog.append`).
        let names = request.topicData.map(\.name)
        let acks = request.acks
        let version = context.apiVersion
        let arrivalWait = ReplicaManager.arrivalWait(milliseconds: request.timeoutMs)
        return ready.flatMap {
            let answers = PartitionAnswers(counts: request.topicData.map(\.partitionData.count), loop: context.eventLoop)
            var slot = 0
            for topic in request.topicData {
                for partition in topic.partitionData {
                    let index = slot
                    self.produce(topic: topic.name, partition: partition, loop: context.eventLoop, arrivalWait: arrivalWait) {
                        answers.set(index, $0)
                    }
                    slot += 1
                }
            }
            return answers.grouped.flatMapThrowing { grouped in
                var response = ProduceResponse()
                response.responses = zip(names, grouped).map { .init(name: $0, partitionResponses: $1) }
                let results = grouped.joined()
                if version >= 10 && results.contains(where: { LeaderHints.applies(to: $0.errorCode, fetching: false) }) {
                    response.addLeaderHints(LeaderHints(self.broker))
                }
                if acks == 0 {
                    if let failed = results.first(where: { $0.errorCode != 0 }) {
                        throw ConnectionFailure(reason: "acks=0 produce failed with error \(failed.errorCode)")
                    }
                    return nil
                }
                return response
            }
        }
    }

    /// Appends one partition's records; `answer` gets its response, on the partition's loop or
    /// (when it cannot be served) at once. A partition this node is taking over is waited for
    /// (`ReplicaManager.whenArrived`, up to `arrivalWait`) and tried once more.
    private func produce(
        topic: String,
        partition: ProduceRequest.PartitionProduceData,
        loop: any EventLoop,
        arrivalWait: TimeAmount,
        answer: @escaping @Sendable (ProduceResponse.PartitionProduceResponse) -> Void
    ) {
        let index = partition.index
        let tp = TopicPartition(topic, index)
        guard let shell = self.broker.replicas.shell(for: tp), let config = self.broker.replicas.config(topic: topic) else {
            if arrivalWait > .zero, self.broker.replicas.isArriving(tp) {
                self.broker.replicas.whenArrived([tp], on: loop, within: arrivalWait).whenComplete { _ in
                    self.produce(topic: topic, partition: partition, loop: loop, arrivalWait: .zero, answer: answer)
                }
                return
            }
            return answer(Self.partitionResponse(partition.index, self.missingPartitionError(tp)))
        }
        guard let records = partition.records else {
            return answer(Self.partitionResponse(partition.index, BrokerError(.invalidRecord, "records are null")))
        }
        shell.append(validating: records, config: config) { result in
            answer(self.partitionResponse(index, tp, result))
        }
    }

    private func partitionResponse(
        _ index: Int32,
        _ tp: TopicPartition,
        _ result: Result<AppendOutcome, any Error>
    ) -> ProduceResponse.PartitionProduceResponse {
        switch result {
        case .success(.appended(let info)), .success(.duplicate(let info)):
            var response = ProduceResponse.PartitionProduceResponse()
            response.index = index
            response.baseOffset = info.firstOffset
            response.logAppendTimeMs = info.logAppendTime
            response.logStartOffset = info.logStartOffset
            return response
        case .success(.outOfOrderSequence(let message)):
            return Self.partitionResponse(index, BrokerError(.outOfOrderSequenceNumber, message))
        case .success(.invalidProducerEpoch(let message)):
            return Self.partitionResponse(index, BrokerError(.invalidProducerEpoch, message))
        case .failure(let failure as RecordBatchValidator.Failure):
            self.logger.debug("rejected produce to \(tp): \(failure.message)")
            var response = Self.partitionResponse(index, BrokerError(failure))
            response.recordErrors = [.init(batchIndex: Int32(failure.batchIndex), batchIndexErrorMessage: failure.message)]
            return response
        case .failure(let error):
            return Self.partitionResponse(index, self.servingError(error, tp))
        }
    }

    static func partitionResponse(_ index: Int32, _ error: BrokerError) -> ProduceResponse.PartitionProduceResponse {
        var response = ProduceResponse.PartitionProduceResponse()
        response.index = index
        response.errorCode = error.code.rawValue
        response.errorMessage = error.message
        response.baseOffset = -1
        response.logAppendTimeMs = -1
        response.logStartOffset = -1
        return response
    }

    static func produceResponse(_ request: ProduceRequest, error: BrokerError) -> ProduceResponse {
        var response = ProduceResponse()
        response.responses = request.topicData.map { topic in
            .init(name: topic.name, partitionResponses: topic.partitionData.map { Self.partitionResponse($0.index, error) })
        }
        return response
    }
}

/// A produce's partition responses, gathered on the connection's loop in request order: one
/// promise for the request instead of a future per partition (`whenAllSucceed`), whose
/// allocations and generic look-ups were most of the broker's CPU per small batch.
private final class PartitionAnswers: @unchecked Sendable {  // its state is touched on `loop` only
    private let loop: any EventLoop
    private let counts: [Int]
    private var answers: [ProduceResponse.PartitionProduceResponse?]
    private var missing: Int
    private let promise: EventLoopPromise<[[ProduceResponse.PartitionProduceResponse]]>

    /// `counts`: the partitions of each topic of the request, in order.
    init(counts: [Int], loop: any EventLoop) {
        self.loop = loop
        self.counts = counts
        self.missing = counts.reduce(0, +)
        self.answers = Array(repeating: nil, count: self.missing)
        self.promise = loop.makePromise()
        if self.missing == 0 { self.promise.succeed(KafkaAPIs.grouped([], counts: counts)) }
    }

    /// The responses grouped by topic, once every partition has answered.
    var grouped: EventLoopFuture<[[ProduceResponse.PartitionProduceResponse]]> { self.promise.futureResult }

    /// The response of the request's partition number `slot` (counting across topics), from any thread.
    func set(_ slot: Int, _ answer: ProduceResponse.PartitionProduceResponse) {
        if self.loop.inEventLoop {
            self.store(slot, answer)
        } else {
            self.loop.execute { self.store(slot, answer) }
        }
    }

    private func store(_ slot: Int, _ answer: ProduceResponse.PartitionProduceResponse) {
        precondition(self.answers[slot] == nil, "partition \(slot) answered twice")
        self.answers[slot] = answer
        self.missing -= 1
        guard self.missing == 0 else { return }
        self.promise.succeed(KafkaAPIs.grouped(self.answers.map { $0! }, counts: self.counts))
    }
}
