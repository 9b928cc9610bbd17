//! The lease keeper: renews the leases of the tasks this coordinator drives,
//! stops a driver whose lease was lost, and takes over tasks nobody drives.
//!
//! Renewal runs every third of `coordinator.lease_ttl`, one store call for all
//! the tasks held. A task missing from the renewal's answer was taken by
//! another coordinator (this one was presumed dead: paused, cut off): its
//! driver stops at once and writes nothing more (its writes would be fenced
//! anyway). When renewals keep failing for a whole lease time, every driver
//! stops, since others may take the tasks from then on.
//!
//! With `coordinator.takeover`, every `scan_interval` the keeper asks the
//! store for orphaned tasks (a lapsed or released lease, or none taken within
//! a lease time of submission), acquires each (a new epoch), and resumes it
//! from its newest checkpoint and the task ledger. Checkpoints of ended tasks
//! are pruned now and then.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use troupe_core::TaskId;

use super::driver::{DriverStart, DriverState, resumed_record};
use super::{Shared, spawn_driver, task_span};

/// How often checkpoints of ended tasks are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// Runs until the process stops.
pub(super) async fn keep(shared: Arc<Shared>) {
    let config = shared.config.coordinator.clone();
    let renew_every = config.lease_ttl / 3;
    let mut renew = tokio::time::interval(renew_every);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut scan = tokio::time::interval(config.scan_interval);
    scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_renewed = Instant::now();
    let mut last_pruned = Instant::now();
    loop {
        tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => return,
            _ = renew.tick() => {
                if renew_all(&shared).await {
                    last_renewed = Instant::now();
                } else if last_renewed.elapsed() >= config.lease_ttl {
                    tracing::error!("leases not renewed for a whole lease time; stopping every driver");
                    lose_all(&shared);
                }
            }
            _ = scan.tick(), if config.takeover => {
                take_over_orphans(&shared).await;
                if last_pruned.elapsed() >= PRUNE_INTERVAL {
                    last_pruned = Instant::now();
                    match shared.stores.checkpoints.prune_checkpoints().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(checkpoints = n, "checkpoints of ended tasks pruned"),
                        Err(e) => tracing::warn!(error = %e, "could not prune checkpoints"),
                    }
                }
            }
        }
    }
}

/// Renews every lease held; stops the drivers whose lease was lost. False if
/// the store could not be asked.
async fn renew_all(shared: &Shared) -> bool {
    let held: Vec<(TaskId, u64)> = shared
        .drivers()
        .iter()
        .filter(|(_, slot)| slot.epoch > 0 && !slot.lease.ending.load(Ordering::Relaxed))
        .map(|(id, slot)| (*id, slot.epoch))
        .collect();
    if held.is_empty() {
        return true;
    }
    let ttl = shared.config.coordinator.lease_ttl;
    match shared.stores.leases.renew(&shared.agent, &held, ttl).await {
        Ok(kept) => {
            let kept: std::collections::HashSet<TaskId> = kept.into_iter().collect();
            let drivers = shared.drivers();
            for (id, epoch) in held {
                // A driver that started storing the task's end meanwhile
                // lost nothing: the store dropped the lease of the ended task.
                if !kept.contains(&id)
                    && let Some(slot) = drivers.get(&id)
                    && slot.epoch == epoch
                    && !slot.lease.ending.load(Ordering::Relaxed)
                {
                    tracing::warn!(task_id = %id, epoch, "lease lost to another coordinator");
                    slot.lease.lost.cancel();
                }
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not renew the task leases");
            false
        }
    }
}

fn lose_all(shared: &Shared) {
    for slot in shared.drivers().values() {
        if slot.epoch > 0 {
            slot.lease.lost.cancel();
        }
    }
}

/// Takes over the tasks nobody drives, up to `takeover_batch`.
async fn take_over_orphans(shared: &Arc<Shared>) {
    let config = &shared.config.coordinator;
    let orphans = match shared
        .stores
        .leases
        .orphaned(config.lease_ttl, config.takeover_batch)
        .await
    {
        Ok(ids) => ids,
        Err(e) => {
            tracing::warn!(error = %e, "could not look for orphaned tasks");
            return;
        }
    };
    for id in orphans {
        if shared.shutdown.is_cancelled() {
            return;
        }
        if shared.drivers().contains_key(&id) {
            continue;
        }
        if let Err(e) = take_over(shared, id).await {
            tracing::warn!(task_id = %id, error = %e, "could not take the task over");
        }
    }
}

async fn take_over(shared: &Arc<Shared>, id: TaskId) -> Result<(), troupe_core::store::StoreError> {
    let stores = &shared.stores;
    let ttl = shared.config.coordinator.lease_ttl;
    let Some(lease) = stores.leases.acquire(id, &shared.agent, ttl).await? else {
        return Ok(()); // someone was quicker
    };
    let Some(record) = stores.tasks.get_task(id).await? else {
        return Ok(());
    };
    let checkpoint = stores.checkpoints.latest_checkpoint(id).await?;
    let state = checkpoint.as_ref().and_then(DriverState::from_checkpoint);
    let step = checkpoint.as_ref().map_or(0, |c| c.step);
    let request_id = super::request_id(state.as_ref().map(|s| s.request_id.as_str()));
    let span = task_span(&request_id, id, &shared.agent);
    span.in_scope(|| {
        tracing::info!(
            epoch = lease.epoch,
            checkpoint_step = step,
            status = record.status.as_str(),
            "taking the task over"
        );
    });
    let start = DriverStart {
        record: resumed_record(record, state.as_ref()),
        request_id,
        epoch: lease.epoch,
        last_step: step,
        resumed: Some(state.unwrap_or_default()),
    };
    // Nobody waits on a taken-over task here; its end is in the store.
    drop(spawn_driver(shared, start, span));
    Ok(())
}
