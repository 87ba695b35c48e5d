import Logging
import ServiceLifecycle

/// `rafka standalone` (or `rafka node`): one broker serving Kafka clients until SIGTERM/SIGINT,
/// then a clean shutdown (listener closed, every partition flushed and closed, metadata closed).
public struct StandaloneService: Service {
    let config: BrokerConfig
    let logger: Logger
    /// A data node (`rafka node`) instead of standalone: metadata from the controllers.
    let dataNode: Bool

    public init(config: BrokerConfig, logger: Logger, dataNode: Bool = false) {
        self.config = config
        self.logger = logger
        self.dataNode = dataNode
    }

    public func run() async throws {
        let broker =
            self.dataNode
            ? try await Broker.startDataNode(config: self.config, logger: self.logger)
            : try await Broker.start(config: self.config, logger: self.logger)
        let listener: KafkaListener
        var metrics: MetricsListener?
        do {
            listener = try await KafkaListener.bind(broker: broker)
            if let address = self.config.metricsListen { metrics = try await MetricsListener.bind(broker: broker, address: address) }
        } catch {
            await broker.shutdown()
            throw error
        }
        // The broker's loops run until shutdown is requested (SIGTERM/SIGINT) or they fail. A
        // data node leaves the ring before they return.
        do {
            try await withGracefulShutdownHandler {
                try await broker.run()
            } onGracefulShutdown: {
                broker.requestStop()
            }
        } catch is CancellationError {
        } catch {
            self.logger.critical("stopping after a failure: \(error)")
            await listener.close()
            await metrics?.close()
            await broker.shutdown()
            throw error
        }
        self.logger.info("shutting down")
        await listener.close()
        await metrics?.close()
        await broker.shutdown()
        self.logger.info("shut down cleanly")
    }
}
