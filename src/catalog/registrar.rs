//! The background task that registers tables: pipelines offer a table's schema after it
//! is opened and after each commit; an offer whose columns were already offered costs a
//! comparison. The task keeps the newest offer per table until the catalog took it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deltalake::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use super::{hive_columns, Catalog, Entry, Registered};
use crate::config::CatalogPlan;
use crate::storage::Storage;

/// How long the last try before exit may take (`run --until-caught-up` ends with its
/// tables registered unless the catalog is down).
const LAST_TRY: Duration = Duration::from_secs(15);

struct Offer {
    table: String,
    schema: SchemaRef,
    version: i64,
}

/// Where pipelines offer their tables' schemas.
#[derive(Clone)]
pub struct Offers {
    tx: mpsc::UnboundedSender<Offer>,
    plan: Arc<CatalogPlan>,
    /// The columns last offered per table.
    offered: Arc<Mutex<HashMap<String, SchemaRef>>>,
}

impl Offers {
    /// Offer `table` at `version` with `schema`; a no-op for tables without a catalog
    /// name or columns already offered.
    pub fn offer(&self, table: &str, schema: SchemaRef, version: i64) {
        if !self.plan.tables.contains_key(table) {
            return;
        }
        let Ok(mut offered) = self.offered.lock() else {
            return;
        };
        if offered
            .get(table)
            .is_some_and(|s| s.fields() == schema.fields())
        {
            return;
        }
        offered.insert(table.to_string(), schema.clone());
        let _ = self.tx.send(Offer {
            table: table.to_string(),
            schema,
            version,
        });
    }
}

/// Start the registrar of `plan`'s catalog on `helpers`, stopped by `stop`.
pub fn spawn(
    plan: Arc<CatalogPlan>,
    storage: Storage,
    helpers: &TaskTracker,
    stop: CancellationToken,
) -> Offers {
    let (tx, rx) = mpsc::unbounded_channel();
    let offers = Offers {
        tx,
        plan: plan.clone(),
        offered: Arc::default(),
    };
    helpers.spawn(run(plan, storage, rx, stop));
    offers
}

async fn run(
    plan: Arc<CatalogPlan>,
    storage: Storage,
    mut rx: mpsc::UnboundedReceiver<Offer>,
    stop: CancellationToken,
) {
    let catalog = Catalog::connect(&plan).await;
    let mut pending: HashMap<String, Entry> = HashMap::new();
    let mut delay = Duration::from_secs(1);
    loop {
        let wait = async {
            match pending.is_empty() {
                true => std::future::pending().await,
                false => tokio::time::sleep(delay).await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            offer = rx.recv() => match offer {
                Some(offer) => add(&plan, &storage, &mut pending, offer),
                None => break,
            },
            () = wait => {}
        }
        while let Ok(offer) = rx.try_recv() {
            add(&plan, &storage, &mut pending, offer);
        }
        let failed = register_all(&catalog, &mut pending, Some(delay)).await;
        delay = match failed {
            true => (delay * 2).min(plan.max_backoff),
            false => Duration::from_secs(1),
        };
    }
    while let Ok(offer) = rx.try_recv() {
        add(&plan, &storage, &mut pending, offer);
    }
    if !pending.is_empty() {
        let _ = tokio::time::timeout(LAST_TRY, register_all(&catalog, &mut pending, None)).await;
        for entry in pending.values() {
            warn!(table = %entry.table, entry = %entry.name, "not registered in the catalog before exit; the next run registers it");
        }
    }
}

fn add(plan: &CatalogPlan, storage: &Storage, pending: &mut HashMap<String, Entry>, o: Offer) {
    let Some(name) = plan.tables.get(&o.table) else {
        return;
    };
    let location = match storage.url(&o.table) {
        Ok(url) => url.as_str().trim_end_matches('/').to_string(),
        Err(e) => {
            warn!(table = %o.table, "cannot register: {e}");
            return;
        }
    };
    pending.insert(
        o.table.clone(),
        Entry {
            name: name.clone(),
            table: o.table,
            location,
            columns: hive_columns(&o.schema),
            version: o.version,
        },
    );
}

/// Try every pending entry once; true when one failed (it stays pending).
async fn register_all(
    catalog: &Catalog,
    pending: &mut HashMap<String, Entry>,
    retry_in: Option<Duration>,
) -> bool {
    let mut failed = false;
    let tables: Vec<String> = pending.keys().cloned().collect();
    for table in tables {
        let Some(entry) = pending.get(&table) else {
            continue;
        };
        match catalog.register(entry).await {
            Ok(done) => {
                if done != Registered::Unchanged {
                    info!(table = %entry.table, entry = %entry.name, version = entry.version, columns = entry.columns.len(), "registered in the catalog ({done:?})");
                }
                crate::metrics::catalog_registered(&entry.table);
                pending.remove(&table);
            }
            Err(e) => {
                failed = true;
                crate::metrics::catalog_failed(&entry.table);
                match retry_in {
                    Some(d) => {
                        warn!(table = %entry.table, "{e}; ingestion goes on, retrying in {d:?}")
                    }
                    None => warn!(table = %entry.table, "{e}"),
                }
            }
        }
    }
    failed
}
