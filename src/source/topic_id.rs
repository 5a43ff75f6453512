//! A topic's id (KIP-516): a topic deleted and recreated under the same name gets a new
//! one. Offsets alone cannot tell the two apart once the new topic has grown past the
//! offsets a table holds (librdkafka itself resets a consumer only when its position is
//! out of range, see `rdkafka_topic.c`: "an offset reset must be triggered"), so every
//! table records, per partition, the id of the topic its offsets came from.
//!
//! rust-rdkafka has no DescribeTopics; librdkafka's C API does (2.3+), called here:
//! the crate's one unsafe block.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::time::Duration;

use base64::Engine as _;
use rdkafka::bindings as rd;
use rdkafka::client::{Client, ClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::{ReadError, SourceError};

/// A topic's id as the broker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicId {
    msb: i64,
    lsb: i64,
}

impl TopicId {
    /// The id folded into a `txn` version (non-negative, as Delta versions are). Two
    /// incarnations of one topic colliding here is a 1 in 2^63 chance.
    pub fn fingerprint(self) -> i64 {
        (self.msb ^ self.lsb.rotate_left(32)) & i64::MAX
    }
}

impl std::fmt::Display for TopicId {
    /// Base64url, the way Kafka's tools print topic ids.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.msb.to_be_bytes());
        bytes[8..].copy_from_slice(&self.lsb.to_be_bytes());
        f.write_str(&base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }
}

/// The id of `topic` now: None when the topic does not exist or the broker keeps no ids
/// (then only offsets can tell a recreated topic, see `start::start_for`).
pub fn topic_id<C: ClientContext>(
    client: &Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<TopicId>, SourceError> {
    let what = "cannot read the topic's id";
    let failed = |cause| {
        SourceError::read(topic)(ReadError::Broker {
            what: what.into(),
            cause,
        })
    };
    let name =
        CString::new(topic).map_err(|e| failed(KafkaError::AdminOpCreation(e.to_string())))?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: every handle made here is destroyed here, after the last use of what it
    // owns (the descriptions belong to the event); `client` outlives the call.
    unsafe {
        let rk = client.native_ptr();
        let queue = rd::rd_kafka_queue_new(rk);
        let mut names = [name.as_ptr()];
        let topics = rd::rd_kafka_TopicCollection_of_topic_names(names.as_mut_ptr(), 1);
        rd::rd_kafka_DescribeTopics(rk, topics, std::ptr::null(), queue);
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms);
        let answer = if event.is_null() {
            Err(SourceError::read(topic)(ReadError::NoAnswer {
                what: what.into(),
                seconds: timeout.as_secs(),
            }))
        } else {
            let answer = read_answer(event);
            rd::rd_kafka_event_destroy(event);
            answer.map_err(failed)
        };
        rd::rd_kafka_TopicCollection_destroy(topics);
        rd::rd_kafka_queue_destroy(queue);
        answer
    }
}

/// The id in a DescribeTopics result event.
///
/// # Safety
/// `event` must be a live DescribeTopics result event.
unsafe fn read_answer(event: *mut rd::rd_kafka_event_t) -> Result<Option<TopicId>, KafkaError> {
    let code = rd::rd_kafka_event_error(event);
    if code != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Err(KafkaError::AdminOp(RDKafkaErrorCode::from(code)));
    }
    let result = rd::rd_kafka_event_DescribeTopics_result(event);
    if result.is_null() {
        return Err(KafkaError::AdminOpCreation(
            "not a DescribeTopics answer".into(),
        ));
    }
    let mut count = 0usize;
    let descriptions = rd::rd_kafka_DescribeTopics_result_topics(result, &mut count);
    if descriptions.is_null() || count == 0 {
        return Ok(None);
    }
    let description = *descriptions;
    let error = rd::rd_kafka_TopicDescription_error(description);
    if !error.is_null() {
        return match rd::rd_kafka_error_code(error) {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
            | rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_ID => Ok(None),
            code => Err(KafkaError::AdminOp(RDKafkaErrorCode::from(code))),
        };
    }
    let id = rd::rd_kafka_TopicDescription_topic_id(description);
    if id.is_null() {
        return Ok(None);
    }
    let id = TopicId {
        msb: rd::rd_kafka_Uuid_most_significant_bits(id),
        lsb: rd::rd_kafka_Uuid_least_significant_bits(id),
    };
    // A broker without topic ids (before Kafka 2.8, or tansu) answers zeros.
    Ok((id.msb != 0 || id.lsb != 0).then_some(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_kafka_does_and_fold_to_a_txn_version() {
        let id = TopicId {
            msb: 0x5ead_0b1e_0000_0001,
            lsb: -2,
        };
        assert_eq!(id.to_string().len(), 22);
        assert!(id.fingerprint() >= 0);
        let other = TopicId { msb: 1, ..id };
        assert_ne!(id.fingerprint(), other.fingerprint());
    }
}
