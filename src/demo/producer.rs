//! `lakestream produce`: replay calls into a topic (the job of the classic kafka_server.py).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::client::OAuthToken;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::source::{Auth, Connection, KafkaContext, SourceError};

/// Events per second; 0 means as fast as the broker takes them.
#[derive(Debug, Clone, Copy)]
pub struct Rate(pub f64);

#[derive(Debug, Clone)]
pub struct ProduceOptions {
    pub connection: Connection,
    pub topic: String,
    pub rate: Rate,
    /// librdkafka `compression.type`.
    pub compression: String,
    /// Draw a progress bar (when stderr is a terminal).
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct ProduceReport {
    pub sent: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl ProduceReport {
    pub fn per_second(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Counts failed deliveries; the librdkafka producer retries transient errors itself.
struct DeliveryCounter {
    failed: Arc<AtomicU64>,
    first_error: std::sync::Mutex<Option<String>>,
    auth: Auth,
}

impl ClientContext for DeliveryCounter {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    /// Not logged (rust-rdkafka's default dumps ~7 KB at INFO per report).
    fn stats(&self, _: rdkafka::Statistics) {}

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        KafkaContext::token(&self.auth)
    }
}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed.fetch_add(1, Ordering::Relaxed);
            let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert_with(|| e.to_string());
        }
    }
}

/// Send every record of `records` (key, JSON) to the topic and wait for delivery.
pub fn produce<I>(
    opts: &ProduceOptions,
    total: u64,
    records: I,
) -> Result<ProduceReport, SourceError>
where
    I: Iterator<Item = std::io::Result<(Option<String>, Vec<u8>)>>,
{
    let fail = |message: String| SourceError::Produce {
        topic: opts.topic.clone(),
        message,
    };
    let producer = producer(opts)?;
    // The first OAUTHBEARER token is made while the producer polls.
    producer.poll(Duration::from_millis(100));
    let bar = progress_bar(opts.progress, total);
    let started = Instant::now();
    let (mut sent, mut bytes) = (0u64, 0u64);
    for record in records {
        let (key, payload) = record.map_err(|e| fail(format!("reading input: {e}")))?;
        let mut message = BaseRecord::to(&opts.topic).payload(&payload);
        if let Some(k) = &key {
            message = message.key(k);
        }
        loop {
            match producer.send(message) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    message = back;
                    producer.poll(Duration::from_millis(20));
                }
                Err((e, _)) => return Err(fail(format!("send failed: {e}"))),
            }
        }
        sent += 1;
        bytes += payload.len() as u64;
        if sent.is_multiple_of(1000) {
            producer.poll(Duration::ZERO);
            bar.set_position(sent);
        }
        pace(opts.rate, sent, started);
    }
    producer
        .flush(Duration::from_secs(120))
        .map_err(|e| fail(format!("flush: {e}")))?;
    bar.finish_and_clear();
    let context = producer.context();
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = context
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        return Err(fail(format!(
            "{failed} of {sent} messages were not delivered (first error: {first})"
        )));
    }
    Ok(ProduceReport {
        sent,
        bytes,
        elapsed: started.elapsed(),
    })
}

/// An idempotent producer for `opts`, counting failed deliveries.
fn producer(opts: &ProduceOptions) -> Result<BaseProducer<DeliveryCounter>, SourceError> {
    let context = DeliveryCounter {
        failed: Arc::default(),
        first_error: std::sync::Mutex::default(),
        auth: opts.connection.context().auth().clone(),
    };
    opts.connection
        .client_config()
        // A retried send never stores a record twice: exact counts stay exact.
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "500000")
        .set("compression.type", &opts.compression)
        .create_with_context(context)
        .map_err(SourceError::kafka(&opts.topic))
}

/// The progress bar of a produce of `total` records (hidden off a terminal).
fn progress_bar(progress: bool, total: u64) -> ProgressBar {
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} calls  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Sleep just enough to hold `rate`.
fn pace(rate: Rate, sent: u64, started: Instant) {
    if rate.0 <= 0.0 {
        return;
    }
    let due = Duration::from_secs_f64(sent as f64 / rate.0);
    if let Some(ahead) = due.checked_sub(started.elapsed()) {
        if ahead > Duration::from_millis(1) {
            std::thread::sleep(ahead);
        }
    }
}
