//! The decode stage between the consumer and the commit, and the table offsets the
//! consumer's rebalance callback reads.

use super::*;

pub(super) async fn decode_stage(
    decoder: JsonDecoder,
    mut raw_rx: mpsc::Receiver<RawBatch>,
    ready_tx: mpsc::Sender<Ready>,
) -> Result<()> {
    let decoder = Arc::new(decoder);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    while let Some(raw) = raw_rx.recv().await {
        let decoder = decoder.clone();
        let fetch_ms = raw.opened_at.map_or(0, |t| t.elapsed().as_millis() as u64);
        let ready = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let decoded = decoder.decode(&raw, threads)?;
            Ok::<_, crate::decode::DecodeError>(Ready {
                opened_at: raw.opened_at,
                fetch_ms,
                decode_ms: started.elapsed().as_millis() as u64,
                ranges: raw.offset_ranges(),
                positions: raw.positions.clone(),
                records: raw.len(),
                bytes: raw.byte_len(),
                decoded,
            })
        })
        .await
        .map_err(|cause| Error::Task {
            task: "decode".into(),
            cause,
        })??;
        if ready_tx.send(ready).await.is_err() {
            break; // the commit stage stopped; it reports why
        }
    }
    Ok(())
}

/// The row table's offsets, for the consumer's rebalance callback (on its own thread).
pub(super) struct TableOffsets {
    pub opts: SinkOptions,
    pub table: String,
    pub runtime: tokio::runtime::Handle,
}

impl TableOffsets {
    /// Run `work` to completion from the consumer thread. librdkafka may also call the
    /// rebalance callback from a runtime worker (closing a consumer serves its pending
    /// callbacks): there the worker is handed over for the wait instead of blocking it.
    fn block<F: std::future::Future>(&self, work: F) -> F::Output {
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::block_in_place(|| self.runtime.block_on(work)),
            Err(_) => self.runtime.block_on(work),
        }
    }
}

impl OffsetStore for TableOffsets {
    fn committed(
        &self,
        partitions: &[i32],
    ) -> std::result::Result<HashMap<i32, Option<i64>>, String> {
        self.block(crate::sink::read_committed(
            &self.opts,
            &self.table,
            partitions,
        ))
        .map_err(|e| e.to_string())
    }

    fn record(
        &self,
        last: &BTreeMap<i32, i64>,
        overwrite: bool,
    ) -> std::result::Result<BTreeMap<i32, i64>, String> {
        self.block(crate::sink::record_offsets(
            &self.opts,
            &self.table,
            last,
            overwrite,
        ))
        .map_err(|e| e.to_string())
    }
}
