import HashTreeCollections
import KafkaProtocol
import Logging
import NIOCore
import RafkaClient
import RafkaStorage

/// The metadata-changing APIs of a broker: answered here (standalone) or forwarded to the
/// controller leader (a data node), which validates and commits; the data node then waits for
/// its own image to show the change before answering, so a client's next Metadata sees it.
enum AdminRouting: Sendable {
    case local(AdminAPIs)
    case forwarded(ControllerLink, MetadataReconciler, MetadataCache, BrokerConfig, Logger)

    private func forward<Request: KafkaRequestWithResponse>(
        _ request: Request,
        _ context: RequestContext,
        notController: @escaping @Sendable (Request.Response) -> Bool
    ) -> EventLoopFuture<Request.Response?> {
        guard case .forwarded(let link, let reconciler, _, _, _) = self else { preconditionFailure("not forwarding") }
        return context.eventLoop.makeFutureWithTask {
            let response = try await link.sendToLeader(request, version: context.apiVersion, isNotController: notController)
            await link.refresh()
            await reconciler.waitUntilReconciled(await link.image.offset)
            return response
        }
    }

    private static let notController = KafkaErrorCode.notController.rawValue

    /// A retry after an attempt whose outcome is unknown (the leader lost leadership with the
    /// creation in flight, which may still commit under the next) can meet TOPIC_ALREADY_EXISTS
    /// for the topic that attempt created. When the topic did not exist before this request was
    /// forwarded and now exists as requested, the creation is taken to be this request's own,
    /// as the client's retry would want; Kafka's forwarding has the same window. Only a
    /// concurrent identical creation by another client in that window is indistinguishable.
    func createTopics(_ request: CreateTopicsRequest, _ context: RequestContext) -> EventLoopFuture<CreateTopicsResponse?> {
        guard case .forwarded(let link, let reconciler, let cache, _, _) = self else {
            guard case .local(let admin) = self else { preconditionFailure() }
            return admin.createTopics(request, context)
        }
        let existedBefore = Set(request.topics.map(\.name).filter { cache.image.topics[$0] != nil })
        return context.eventLoop.makeFutureWithTask {
            var (response, retried) = try await link.sendToLeaderTracking(
                request, version: context.apiVersion, isNotController: { $0.topics.contains { $0.errorCode == Self.notController } })
            await link.refresh()
            let image = await link.image
            await reconciler.waitUntilReconciled(image.offset)
            guard retried else { return response }
            for index in response.topics.indices where response.topics[index].errorCode == KafkaErrorCode.topicAlreadyExists.rawValue {
                let name = response.topics[index].name
                guard !existedBefore.contains(name), let topic = image.topics[name],
                    let asked = request.topics.first(where: { $0.name == name }),
                    asked.numPartitions < 0 || asked.numPartitions == topic.partitionCount
                else { continue }
                response.topics[index].errorCode = 0
                response.topics[index].errorMessage = nil
                response.topics[index].topicId = topic.id
                response.topics[index].numPartitions = topic.partitionCount
                response.topics[index].replicationFactor = topic.replicationFactor
            }
            return response
        }
    }

    func deleteTopics(_ request: DeleteTopicsRequest, _ context: RequestContext) -> EventLoopFuture<DeleteTopicsResponse?> {
        if case .local(let admin) = self { return admin.deleteTopics(request, context) }
        return self.forward(request, context) { $0.responses.contains { $0.errorCode == Self.notController } }
    }

    func createPartitions(_ request: CreatePartitionsRequest, _ context: RequestContext) -> EventLoopFuture<CreatePartitionsResponse?> {
        if case .local(let admin) = self { return admin.createPartitions(request, context) }
        return self.forward(request, context) { $0.results.contains { $0.errorCode == Self.notController } }
    }

    func alterConfigs(_ request: AlterConfigsRequest, _ context: RequestContext) -> EventLoopFuture<AlterConfigsResponse?> {
        if case .local(let admin) = self { return admin.alterConfigs(request, context) }
        return self.forward(request, context) { $0.responses.contains { $0.errorCode == Self.notController } }
    }

    func incrementalAlterConfigs(
        _ request: IncrementalAlterConfigsRequest,
        _ context: RequestContext
    ) -> EventLoopFuture<IncrementalAlterConfigsResponse?> {
        if case .local(let admin) = self { return admin.incrementalAlterConfigs(request, context) }
        return self.forward(request, context) { $0.responses.contains { $0.errorCode == Self.notController } }
    }

    func initProducerID(_ request: InitProducerIdRequest, _ context: RequestContext) -> EventLoopFuture<InitProducerIdResponse?> {
        if case .local(let admin) = self { return admin.initProducerID(request, context) }
        return self.forward(request, context) { $0.errorCode == Self.notController }
    }

    /// Configurations are described from this node's image: no need to ask the controllers.
    func describeConfigs(_ request: DescribeConfigsRequest, _ context: RequestContext) -> EventLoopFuture<DescribeConfigsResponse?> {
        switch self {
        case .local(let admin):
            return admin.describeConfigs(request, context)
        case .forwarded(_, _, let cache, let config, _):
            return context.eventLoop.makeSucceededFuture(AdminAPIs.describeConfigs(request, image: cache.image, config: config))
        }
    }
}
