//! Writing events into Kafka topics (the producer of `chatflow produce`): a librdkafka
//! producer that waits for room when its queue is full, counts failed deliveries, and creates
//! missing topics through the standard admin API.
//!
//! Delivery: once per `send` that returned Ok, once `flush` has returned Ok (failed
//! deliveries make `flush` fail). The producer is idempotent: a request retried after a
//! timeout (under load, tansu once held such a record twice) carries the same sequence
//! number, and the broker drops the copy.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;

use crate::sources::kafka::{client_config, partition_counts};

/// Counts deliveries that failed, and learns from the client's statistics when the producer
/// has its producer id.
#[derive(Clone, Default)]
pub struct Deliveries {
    failed: Arc<AtomicU64>,
    ready: Arc<AtomicBool>,
}

impl ClientContext for Deliveries {
    fn stats(&self, statistics: Statistics) {
        if statistics.eos.is_some_and(|eos| eos.idemp_state == "Assigned") {
            self.ready.store(true, Ordering::Relaxed);
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        if let Err((e, _)) = result {
            if self.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(error = %e, "a Kafka delivery failed");
            }
        }
    }
}

/// A producer into the brokers' topics.
pub struct TopicWriter {
    producer: BaseProducer<Deliveries>,
    deliveries: Deliveries,
    brokers: String,
    extra: Vec<(String, String)>,
}

impl TopicWriter {
    pub fn new(brokers: &str, extra: &[(String, String)]) -> Result<Self> {
        let deliveries = Deliveries::default();
        let mut config = client_config(brokers, &[]);
        config
            .set("linger.ms", "5")
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("queue.buffering.max.messages", "1000000")
            // For `wait_ready`: the statistics say when the producer id is assigned.
            .set("statistics.interval.ms", "100");
        for (k, v) in extra {
            config.set(k, v);
        }
        let producer = config.create_with_context(deliveries.clone()).context("creating a Kafka producer")?;
        Ok(TopicWriter { producer, deliveries, brokers: brokers.to_owned(), extra: extra.to_vec() })
    }

    /// Creates the `topics` missing on the brokers, with `partitions` partitions each.
    pub fn ensure_topics(&self, topics: &[&str], partitions: i32) -> Result<()> {
        let wanted: Vec<String> = topics.iter().filter(|t| !t.is_empty()).map(|t| t.to_string()).collect();
        let existing = partition_counts(&self.brokers, &self.extra, &wanted)?;
        let missing: Vec<&String> = wanted.iter().filter(|t| !existing.iter().any(|(e, _)| e == *t)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let admin: AdminClient<DefaultClientContext> =
            client_config(&self.brokers, &self.extra).create().context("creating a Kafka admin client")?;
        let new: Vec<NewTopic> =
            missing.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1))).collect();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = futures_executor::block_on(admin.create_topics(&new, &options)).context("creating topics")?;
        for result in results {
            match result {
                Ok(topic) => tracing::info!(topic, partitions, "created topic"),
                Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic, "topic exists"),
                Err((topic, code)) => return Err(anyhow!("creating topic {topic}: {code}")),
            }
        }
        Ok(())
    }

    /// Waits (up to `timeout`) until the producer can send: connected, with its producer id.
    /// Records queued before that wait in the producer (librdkafka asks for the id every
    /// 500 ms until a broker is up: the first records of a paced run were delivered a second
    /// late, which a freshness benchmark counted against the pipeline). Returns whether it is
    /// ready.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let began = Instant::now();
        // Asking for metadata connects to a broker.
        let _ = self.producer.client().fetch_metadata(None, timeout);
        while !self.deliveries.ready.load(Ordering::Relaxed) {
            if began.elapsed() >= timeout {
                tracing::warn!(?timeout, "the Kafka producer has no producer id yet: sending anyway");
                return false;
            }
            self.producer.poll(Duration::from_millis(20));
        }
        tracing::debug!(ms = began.elapsed().as_millis() as u64, "the Kafka producer is ready");
        true
    }

    /// Queues one record, waiting for room while the producer's queue is full.
    pub fn send(&mut self, topic: &str, key: Option<&str>, payload: &[u8], timestamp_ms: i64) -> Result<()> {
        self.send_to(topic, None, key, Some(payload), timestamp_ms)
    }

    /// [`Self::send`] to a given partition (or the partitioner's choice), payload optional.
    pub fn send_to(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&str>,
        payload: Option<&[u8]>,
        timestamp_ms: i64,
    ) -> Result<()> {
        let mut record: BaseRecord<str, [u8]> = BaseRecord::to(topic).timestamp(timestamp_ms);
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(anyhow!("producing to {topic}: {e}")),
            }
        }
    }

    /// Serves delivery reports.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until every queued record is delivered; fails if any delivery failed.
    pub fn flush(&self) -> Result<()> {
        self.producer.flush(Duration::from_secs(60)).context("flushing the Kafka producer")?;
        match self.deliveries.failed.load(Ordering::Relaxed) {
            0 => Ok(()),
            n => Err(anyhow!("{n} records could not be delivered")),
        }
    }
}
