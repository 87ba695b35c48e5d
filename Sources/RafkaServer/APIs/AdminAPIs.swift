import KafkaProtocol
import Logging
import NIOCore
import RafkaStorage

/// The Kafka APIs that change or describe metadata: topics, configurations, producer ids. The
/// same code serves a broker's clients and the controllers' listener; each call validates and
/// proposes through `MetadataService` (which needs the quorum leader, else NOT_CONTROLLER).
struct AdminAPIs: Sendable {
    let metadata: MetadataService
    let config: BrokerConfig
    let logger: Logger
    /// The image to answer from (a broker's published image, or a controller's applied one).
    let currentImage: @Sendable () async -> MetadataImage

    init(
        metadata: MetadataService,
        config: BrokerConfig,
        logger: Logger,
        currentImage: @escaping @Sendable () async -> MetadataImage
    ) {
        self.metadata = metadata
        self.config = config
        self.logger = logger
        self.currentImage = currentImage
    }

    // MARK: InitProducerId

    /// Hands idempotent producers a fresh id at epoch 0. Kafka does the same for a request
    /// without a transactional id, even when it names its previous id (KIP-360 bumps need a
    /// transaction coordinator). Transactions are not supported yet.
    func initProducerID(_ request: InitProducerIdRequest, _ context: RequestContext) -> EventLoopFuture<InitProducerIdResponse?> {
        guard request.transactionalId == nil else {
            var response = InitProducerIdResponse()
            response.errorCode = KafkaErrorCode.invalidRequest.rawValue
            response.producerId = -1
            response.producerEpoch = -1
            self.logger.notice("refused InitProducerId with a transactional id: transactions are not supported")
            return context.eventLoop.makeSucceededFuture(response)
        }
        let metadata = self.metadata
        return context.eventLoop.makeFutureWithTask {
            var response = InitProducerIdResponse()
            do throws(BrokerError) {
                response.producerId = try await metadata.allocateProducerID()
                response.producerEpoch = 0
            } catch {
                response.errorCode = error.code.rawValue
                response.producerId = -1
                response.producerEpoch = -1
            }
            return response
        }
    }
}
