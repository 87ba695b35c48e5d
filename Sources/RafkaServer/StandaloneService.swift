import Logging
import ServiceLifecycle

/// `rafka standalone`: one broker serving Kafka clients until SIGTERM/SIGINT, then a clean
/// shutdown (listener closed, every partition flushed and closed, metadata store closed).
public struct StandaloneService: Service {
    let config: BrokerConfig
    let logger: Logger

    public init(config: BrokerConfig, logger: Logger) {
        self.config = config
        self.logger = logger
    }

    public func run() async throws {
        let broker = try await Broker.start(config: self.config, logger: self.logger)
        let listener: KafkaListener
        do {
            listener = try await KafkaListener.bind(broker: broker)
        } catch {
            await broker.shutdown()
            throw error
        }
        // The broker's loops run until shutdown is requested (SIGTERM/SIGINT) or they fail.
        do {
            try await cancelWhenGracefulShutdown {
                try await broker.run()
            }
        } catch is CancellationError {
        } catch {
            self.logger.critical("stopping after a failure: \(error)")
            await listener.close()
            await broker.shutdown()
            throw error
        }
        self.logger.info("shutting down")
        await listener.close()
        await broker.shutdown()
        self.logger.info("shut down cleanly")
    }
}
