//! [`FnWorker`]: a [`Worker`] made of an async function, for roles that need
//! no type of their own ([`TroupeBuilder::worker_fn`](crate::TroupeBuilder::worker_fn)).

use async_trait::async_trait;

use super::{Job, WorkError, WorkOutput, Worker, WorkerContext};

/// A worker that calls `f` with a copy of each job and its context.
///
/// ```
/// use troupe::worker::{FnWorker, WorkOutput, WorkError};
///
/// let shout = FnWorker::new(|job, _ctx| async move {
///     Ok::<_, WorkError>(WorkOutput::text(job.instruction.to_uppercase()))
/// });
/// # let _ = shout;
/// ```
pub struct FnWorker<F> {
    f: F,
}

impl<F> FnWorker<F> {
    /// A worker that runs `f`.
    pub fn new<Fut>(f: F) -> Self
    where
        F: Fn(Job, WorkerContext) -> Fut + Send + Sync,
        Fut: Future<Output = Result<WorkOutput, WorkError>> + Send,
    {
        Self { f }
    }
}

impl<F> std::fmt::Debug for FnWorker<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnWorker").finish_non_exhaustive()
    }
}

#[async_trait]
impl<F, Fut> Worker for FnWorker<F>
where
    F: Fn(Job, WorkerContext) -> Fut + Send + Sync,
    Fut: Future<Output = Result<WorkOutput, WorkError>> + Send,
{
    async fn run(&self, job: &Job, ctx: &WorkerContext) -> Result<WorkOutput, WorkError> {
        (self.f)(job.clone(), ctx.clone()).await
    }
}
