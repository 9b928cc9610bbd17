//! [`TaskEvents`]: one task's progress entries as a stream that loses none.
//!
//! The store has every entry; the stream reads it page by page, in step
//! order, from where the reader is. Once caught up it waits: for an entry
//! this process stores (announced on an in-process channel, handed over at
//! once when it is the next step), or, for a task another coordinator
//! drives, for the next look at the store ([`REMOTE_POLL`]). A reader that
//! falls behind the channel, or sees a gap, reads the store again: it may be
//! late, never short. The stream ends after the task's last entry
//! (`task_completed`, `task_failed` or `task_cancelled`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use troupe_core::TaskId;
use troupe_core::ledger::ProgressEntry;
use troupe_core::store::{ProgressStore, StoreError, Stores, TaskStore};

use crate::error::TroupeError;
use crate::orchestrator::recorder::Recorder;

/// How often a caught-up stream looks at the store for entries another
/// process wrote (entries this process writes arrive at once).
pub const REMOTE_POLL: Duration = Duration::from_millis(500);

/// Entries read from the store at a time.
const PAGE: usize = 256;

/// Where entries are read from and announced; cheap to clone.
#[derive(Clone)]
pub(crate) struct Feed {
    tasks: Arc<dyn TaskStore>,
    progress: Arc<dyn ProgressStore>,
    recorder: Recorder,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl Feed {
    pub(crate) fn new(stores: &Stores, recorder: Recorder) -> Self {
        Self {
            tasks: stores.tasks.clone(),
            progress: stores.progress.clone(),
            recorder,
        }
    }

    /// The entries of `task` after step `after` (0: from the first).
    pub(crate) fn events(&self, task: TaskId, after: u64) -> TaskEvents {
        // Listen before the first read, so that nothing stored between the
        // two is missed.
        let cursor = Cursor {
            task,
            next: after.saturating_add(1),
            feed: self.clone(),
            announced: Some(self.recorder.subscribe()),
            page: VecDeque::new(),
            known: false,
            done: false,
        };
        TaskEvents {
            inner: Box::pin(futures::stream::unfold(cursor, Cursor::advance)),
        }
    }
}

/// A task's progress entries, in step order, from the store and as they are
/// stored, without loss; it ends after the task's last entry. An item is an
/// error (and the last one) when the store fails or the task does not exist.
///
/// ```
/// use std::sync::Arc;
/// use futures::StreamExt as _;
/// use troupe::Troupe;
/// use troupe::core::ledger::EventKind;
/// use troupe_llm::mock::MockLlm;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let troupe = Troupe::builder().llm(MockLlm::builtin()).build().await.unwrap();
/// let task = troupe.submit("Write a haiku about rust").await.unwrap();
/// let steps: Vec<_> = task.events().map(|e| e.unwrap()).collect().await;
/// assert_eq!(steps.first().unwrap().event, EventKind::TaskSubmitted);
/// assert_eq!(steps.last().unwrap().event, EventKind::TaskCompleted);
/// assert!(steps.windows(2).all(|w| w[1].step == w[0].step + 1));
/// troupe.shutdown().await;
/// # });
/// ```
pub struct TaskEvents {
    inner: Pin<Box<dyn Stream<Item = Result<ProgressEntry, TroupeError>> + Send>>,
}

impl std::fmt::Debug for TaskEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskEvents").finish_non_exhaustive()
    }
}

impl Stream for TaskEvents {
    type Item = Result<ProgressEntry, TroupeError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Where a stream is.
struct Cursor {
    task: TaskId,
    /// The step to give next.
    next: u64,
    feed: Feed,
    /// Entries as this process stores them (`None` once the channel closed).
    announced: Option<broadcast::Receiver<ProgressEntry>>,
    /// Entries read from the store, not yet given.
    page: VecDeque<ProgressEntry>,
    /// Whether the task is known to exist.
    known: bool,
    done: bool,
}

/// What a caught-up stream woke for.
enum Woken {
    /// The next entry, as it was stored here.
    Next(ProgressEntry),
    /// Time to read the store (an entry from elsewhere, a gap, a lag).
    Read,
    /// Time to read the store and see whether the task ended elsewhere.
    Look,
}

impl Cursor {
    async fn advance(mut self) -> Option<(Result<ProgressEntry, TroupeError>, Self)> {
        if self.done {
            return None;
        }
        loop {
            if let Some(entry) = self.take_from_page() {
                return Some((Ok(entry), self));
            }
            match self.read().await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
            }
            match self.wait().await {
                Woken::Next(entry) => return Some((Ok(self.give(entry)), self)),
                Woken::Read => {}
                Woken::Look => match self.ended_elsewhere().await {
                    Ok(false) => {}
                    Ok(true) => return None,
                    Err(e) => {
                        self.done = true;
                        return Some((Err(e), self));
                    }
                },
            }
        }
    }

    fn take_from_page(&mut self) -> Option<ProgressEntry> {
        while let Some(entry) = self.page.pop_front() {
            if entry.step >= self.next {
                return Some(self.give(entry));
            }
        }
        None
    }

    fn give(&mut self, entry: ProgressEntry) -> ProgressEntry {
        self.next = entry.step + 1;
        self.done = entry.ends_task();
        entry
    }

    /// Reads the next page from the store; false when there is nothing new.
    async fn read(&mut self) -> Result<bool, TroupeError> {
        let page = self
            .feed
            .progress
            .entries(self.task, self.next - 1, PAGE)
            .await?;
        if !page.is_empty() {
            self.known = true;
            self.page = page.into();
            return Ok(true);
        }
        if !self.known {
            match self.feed.tasks.get_task(self.task).await? {
                Some(_) => self.known = true,
                None => return Err(StoreError::NotFound(self.task).into()),
            }
        }
        Ok(false)
    }

    /// Whether the task ended with no last entry left to give (its end was
    /// stored without one): then the stream ends too.
    async fn ended_elsewhere(&mut self) -> Result<bool, TroupeError> {
        if self.read().await? {
            return Ok(false);
        }
        let ended = self
            .feed
            .tasks
            .get_task(self.task)
            .await?
            .is_some_and(|t| t.status.is_terminal());
        // One more read: the last entry may have landed just before the end.
        Ok(ended && !self.read().await?)
    }

    async fn wait(&mut self) -> Woken {
        let Some(announced) = self.announced.as_mut() else {
            tokio::time::sleep(REMOTE_POLL).await;
            return Woken::Look;
        };
        let look = tokio::time::sleep(REMOTE_POLL);
        tokio::pin!(look);
        loop {
            tokio::select! {
                received = announced.recv() => match received {
                    Ok(entry) if entry.task_id != self.task || entry.step < self.next => {}
                    Ok(entry) if entry.step == self.next => return Woken::Next(entry),
                    // A gap (an entry written elsewhere) or a lag: the store has them all.
                    Ok(_) | Err(RecvError::Lagged(_)) => return Woken::Read,
                    Err(RecvError::Closed) => {
                        self.announced = None;
                        return Woken::Read;
                    }
                },
                () = &mut look => return Woken::Look,
            }
        }
    }
}
