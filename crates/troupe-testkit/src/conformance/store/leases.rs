//! The lease checks of the store suite: acquisition, renewal, expiry and
//! takeover under a higher epoch, release, and orphan detection. The fence
//! checks, which lean on these leases, are in `fences`.
//!
//! Leases use short real time to live ([`TTL`]) and the checks sleep past
//! them, since a store may take "now" from a database's clock.

use std::time::Duration;

use chrono::Utc;
use troupe_core::store::{Stores, TaskUpdate};
use troupe_core::task::{TaskRecord, TaskStatus};
use troupe_core::{AgentId, TaskId};

use super::{StoreSuite, new_task};

/// The short lease the checks let lapse.
pub(super) const TTL: Duration = Duration::from_millis(300);

/// A lease the checks keep for their whole run.
pub(super) const LONG: Duration = Duration::from_secs(60);

/// Long enough for a [`TTL`] lease to have lapsed by any clock.
pub(super) async fn past_ttl() {
    tokio::time::sleep(TTL + TTL / 2).await;
}

pub(super) fn coordinator(name: &str) -> AgentId {
    AgentId::unique(name)
}

/// The tasks among `ours` that [`orphaned`](troupe_core::store::LeaseStore::orphaned)
/// returns with `grace`, in its order (other tasks of a shared database are left out).
async fn orphaned_among(stores: &Stores, grace: Duration, ours: &[TaskId]) -> Vec<TaskId> {
    stores
        .leases
        .orphaned(grace, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|id| ours.contains(id))
        .collect()
}

impl StoreSuite {
    /// A lease is held until it lapses or is released; every acquisition
    /// raises the epoch; renewal needs the current epoch; ended and missing
    /// tasks cannot be acquired.
    pub async fn leases_tasks(&self, stores: Stores) {
        let check = "leases_tasks";
        let (a, b, c) = (
            coordinator("coord-a"),
            coordinator("coord-b"),
            coordinator("coord-c"),
        );
        let task = new_task("goal");
        let t = task.id;
        stores.tasks.create_task(&task).await.unwrap();
        let l = &stores.leases;

        let before = troupe_core::time::now();
        let first = l.acquire(t, &a, TTL).await.unwrap().unwrap();
        assert_eq!(
            (first.task, &first.owner, first.epoch),
            (t, &a, 1),
            "{check}"
        );
        // The store may use the database's clock: allow for some skew.
        let skew = chrono::Duration::seconds(5);
        assert!(
            first.expires_at > before - skew && first.expires_at < Utc::now() + skew,
            "{check}: {first:?} does not expire about {TTL:?} from now"
        );
        assert_eq!(
            l.acquire(t, &a, TTL).await.unwrap(),
            None,
            "{check}: held by itself"
        );
        assert_eq!(
            l.acquire(t, &b, TTL).await.unwrap(),
            None,
            "{check}: held by a"
        );
        assert_eq!(
            l.acquire(TaskId::new(), &a, TTL).await.unwrap(),
            None,
            "{check}: a missing task"
        );

        assert_eq!(
            l.renew(&a, &[(t, 1)], TTL).await.unwrap(),
            vec![t],
            "{check}"
        );
        assert!(
            l.renew(&b, &[(t, 1)], TTL).await.unwrap().is_empty(),
            "{check}: b renews a's"
        );
        assert!(
            l.renew(&a, &[(t, 2)], TTL).await.unwrap().is_empty(),
            "{check}: wrong epoch"
        );
        assert!(
            l.renew(&a, &[], TTL).await.unwrap().is_empty(),
            "{check}: nothing held"
        );

        // a stops renewing: its lease lapses and b takes the task under epoch 2.
        past_ttl().await;
        assert_eq!(
            orphaned_among(&stores, Duration::from_secs(3600), &[t]).await,
            vec![t],
            "{check}: a lapsed lease is orphaned whatever the grace"
        );
        let second = l.acquire(t, &b, LONG).await.unwrap().unwrap();
        assert_eq!((second.epoch, &second.owner), (2, &b), "{check}");
        assert!(
            orphaned_among(&stores, Duration::ZERO, &[t])
                .await
                .is_empty(),
            "{check}: a held task is not orphaned"
        );
        assert!(
            l.renew(&a, &[(t, 1)], TTL).await.unwrap().is_empty(),
            "{check}: a lost the task"
        );
        assert_eq!(
            l.acquire(t, &a, TTL).await.unwrap(),
            None,
            "{check}: b holds it"
        );

        // Release needs the owner and its epoch; then anyone may take the task at once.
        l.release(t, &a, 1).await.unwrap();
        l.release(t, &a, 2).await.unwrap();
        assert_eq!(
            l.acquire(t, &c, TTL).await.unwrap(),
            None,
            "{check}: a released b's lease"
        );
        l.release(t, &b, 2).await.unwrap();
        assert_eq!(
            orphaned_among(&stores, Duration::from_secs(3600), &[t]).await,
            vec![t],
            "{check}: a released lease is orphaned"
        );
        assert!(
            l.renew(&b, &[(t, 2)], TTL).await.unwrap().is_empty(),
            "{check}: b renews what it released"
        );
        let third = l.acquire(t, &c, LONG).await.unwrap().unwrap();
        assert_eq!((third.epoch, &third.owner), (3, &c), "{check}");

        // An ended task is driven by nobody and cannot be taken again.
        stores
            .tasks
            .update_task(t, &TaskUpdate::status(TaskStatus::Completed))
            .await
            .unwrap();
        assert!(
            l.renew(&c, &[(t, 3)], LONG).await.unwrap().is_empty(),
            "{check}: renewed an ended task"
        );
        assert_eq!(l.acquire(t, &a, TTL).await.unwrap(), None, "{check}: ended");
        past_ttl().await;
        assert_eq!(l.acquire(t, &a, TTL).await.unwrap(), None, "{check}: ended");
        assert!(
            orphaned_among(&stores, Duration::ZERO, &[t])
                .await
                .is_empty(),
            "{check}: an ended task is orphaned"
        );
    }

    /// Renewal extends only the leases still held, in one call for many tasks.
    pub async fn renews_many_leases(&self, stores: Stores) {
        let check = "renews_many_leases";
        let (a, b) = (coordinator("coord-a"), coordinator("coord-b"));
        let mut ids = Vec::new();
        for i in 0..3 {
            let task = new_task(&format!("goal {i}"));
            stores.tasks.create_task(&task).await.unwrap();
            ids.push(task.id);
        }
        let l = &stores.leases;
        let mut held = Vec::new();
        for id in &ids {
            held.push((*id, l.acquire(*id, &a, TTL).await.unwrap().unwrap().epoch));
        }
        // Keep 0 and 2 alive across more than one ttl; 1 lapses and b takes it.
        for _ in 0..3 {
            tokio::time::sleep(TTL / 4).await;
            l.renew(&a, &[held[0], held[2]], TTL).await.unwrap();
        }
        tokio::time::sleep(TTL / 4).await;
        assert_eq!(
            l.renew(&a, &[held[0], held[2]], TTL).await.unwrap(),
            vec![ids[0], ids[2]],
            "{check}"
        );
        l.renew(&a, &[held[0], held[2]], LONG).await.unwrap();
        past_ttl().await;
        assert!(
            l.acquire(ids[0], &b, TTL).await.unwrap().is_none(),
            "{check}"
        );
        assert_eq!(
            l.acquire(ids[1], &b, LONG).await.unwrap().map(|x| x.epoch),
            Some(2),
            "{check}: a lapsed lease was not taken"
        );
        let mut kept = l.renew(&a, &held, LONG).await.unwrap();
        kept.sort_unstable();
        assert_eq!(kept, vec![ids[0], ids[2]], "{check}: a kept a lost lease");
    }

    /// Unfinished tasks nobody drives are orphaned: never leased ones only
    /// after `grace`; oldest first; at most `limit`.
    pub async fn finds_orphaned_tasks(&self, stores: Stores) {
        let check = "finds_orphaned_tasks";
        let a = coordinator("coord-a");
        let hour = Duration::from_secs(3600);
        // Submitted two hours ago (a task the previous coordinator never took).
        let old = TaskRecord::new(
            TaskId::new(),
            "old goal",
            troupe_core::time::now() - chrono::Duration::hours(2),
        );
        stores.tasks.create_task(&old).await.unwrap();
        let mut ids = vec![old.id];
        for i in 0..4 {
            let task = new_task(&format!("goal {i}"));
            stores.tasks.create_task(&task).await.unwrap();
            ids.push(task.id);
        }
        let (held, done) = (ids[2], ids[4]);
        stores
            .leases
            .acquire(held, &a, LONG)
            .await
            .unwrap()
            .unwrap();
        stores
            .tasks
            .update_task(done, &TaskUpdate::status(TaskStatus::Failed))
            .await
            .unwrap();

        assert_eq!(
            orphaned_among(&stores, hour, &ids).await,
            vec![old.id],
            "{check}: only the task older than the grace"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(
            orphaned_among(&stores, Duration::from_millis(100), &ids).await,
            vec![ids[0], ids[1], ids[3]],
            "{check}: not the held nor the ended task, oldest first"
        );
        let one = stores.leases.orphaned(Duration::ZERO, 1).await.unwrap();
        assert_eq!(one.len(), 1, "{check}: limit ignored");
        assert!(
            stores
                .leases
                .orphaned(Duration::ZERO, 0)
                .await
                .unwrap()
                .is_empty(),
            "{check}: limit 0"
        );
    }
}
