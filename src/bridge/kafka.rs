//! The librdkafka side: client settings, delivery reports, metadata and
//! error mapping.

use parking_lot::Mutex;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Message};

use super::MirrorError;
use super::config::MirrorConfig;

/// The settings every Kafka client of a mirror starts from: the user's
/// librdkafka properties, then `bootstrap.servers`.
pub(crate) fn client_config(config: &MirrorConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in &config.kafka_config {
        c.set(k, v);
    }
    c.set("bootstrap.servers", &config.bootstrap_servers);
    c
}

/// A Kafka call's failure, as a [`MirrorError`]: a fenced producer (another
/// mirror of the same name took over) is [`MirrorError::Fenced`].
pub(crate) fn kafka_error(operation: &'static str, source: KafkaError) -> MirrorError {
    let fenced = matches!(
        source.rdkafka_error_code(),
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    ) || matches!(&source, KafkaError::Transaction(e) if e.is_fatal());
    if fenced {
        MirrorError::Fenced {
            operation,
            reason: source.to_string(),
        }
    } else {
        MirrorError::Kafka { operation, source }
    }
}

/// Where a sent record landed, or why it did not.
pub(crate) type Delivery = Result<(i32, i64), String>;

/// The producer's context: collects delivery reports by the index each
/// record was sent with.
#[derive(Debug, Default)]
pub(crate) struct DeliveryContext {
    pub(crate) results: Mutex<Vec<Option<Delivery>>>,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        let outcome = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        if let Some(slot) = self.results.lock().get_mut(index) {
            *slot = Some(outcome);
        }
    }
}

/// The partition count of a Kafka topic, from the cluster's metadata.
pub(crate) fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: std::time::Duration,
) -> Result<u32, MirrorError> {
    let metadata = client
        .fetch_metadata(Some(topic), timeout)
        .map_err(|e| kafka_error("fetch metadata", e))?;
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            u32::try_from(t.partitions().len()).map_err(|_| MirrorError::UnknownKafkaTopic {
                topic: topic.to_string(),
            })
        }
        _ => Err(MirrorError::UnknownKafkaTopic {
            topic: topic.to_string(),
        }),
    }
}
