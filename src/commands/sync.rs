//! `lakestream sync`: the MySQL mirror on its own, once or until a signal.

use crate::config::{ConfigError, Plan};
use crate::sync::SyncTask;
use crate::{Error, Result};

/// How long `sync` may take to finish its pass after a signal.
const SYNC_DRAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// `lakestream sync [--once]`.
pub async fn sync(config: &Plan, once: bool) -> Result<()> {
    let mut task = SyncTask::new(config)
        .filter(SyncTask::has_targets)
        .ok_or_else(|| {
            ConfigError::key(
                "mysql.mirror",
                "nothing to mirror: add a [mysql] section listing pipelines in mirror",
            )
        })?;
    if !once {
        let mut supervisor = crate::supervisor::Supervisor::new(SYNC_DRAIN);
        let stop = supervisor.shutdown().clone();
        supervisor.spawn("mysql sync".into(), async move {
            task.run(stop, None)
                .await
                .map(|()| None)
                .map_err(Error::from)
        });
        return supervisor.finish(None).await.map(|_| ());
    }
    let tables = task.pass().await?;
    for t in &tables {
        println!("{}", serde_json::to_string(t).unwrap_or_default());
    }
    crate::sync::all_mirrored(&tables)?;
    Ok(())
}
