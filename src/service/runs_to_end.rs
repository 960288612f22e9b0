//! A future that runs to its end even if whoever awaits it goes away.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

/// Runs in the awaiting task, as any future does, with no task of its own
/// to spawn, schedule and wake when done. Dropped before it is done (the
/// caller hung up, and the RPC's future went with it), it hands what is
/// left to a task of its own, which runs it to the end. The future is
/// boxed from the start, so that hand-over moves a pointer, not the future.
pub(super) struct RunsToEnd<F>
where
    F: Future<Output: Send> + Send + 'static,
{
    /// `None` once it finished, or while it is being polled (a panic then
    /// drops it instead of handing a broken future on).
    future: Option<Pin<Box<F>>>,
}

impl<F> RunsToEnd<F>
where
    F: Future<Output: Send> + Send + 'static,
{
    pub(super) fn new(future: F) -> Self {
        Self {
            future: Some(Box::pin(future)),
        }
    }
}

impl<F> Future for RunsToEnd<F>
where
    F: Future<Output: Send> + Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let mut future = this
            .future
            .take()
            .expect("RunsToEnd polled after it finished");
        let polled = future.as_mut().poll(cx);
        if polled.is_pending() {
            this.future = Some(future);
        }
        polled
    }
}

impl<F> Drop for RunsToEnd<F>
where
    F: Future<Output: Send> + Send + 'static,
{
    fn drop(&mut self) {
        // Only a runtime shutting down leaves nowhere to run the rest.
        if let Some(rest) = self.future.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            drop(runtime.spawn(rest));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    #[tokio::test]
    async fn it_finishes_in_the_awaiting_task() {
        assert_eq!(RunsToEnd::new(async { 7 }).await, 7);
    }

    #[tokio::test]
    async fn dropped_midway_it_runs_to_the_end_in_a_task_of_its_own() {
        let finished = Arc::new(AtomicBool::new(false));
        let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
        let (done, was_done) = tokio::sync::oneshot::channel::<()>();
        let mut work = RunsToEnd::new({
            let finished = Arc::clone(&finished);
            async move {
                resumed.await.expect("resumed");
                finished.store(true, Ordering::SeqCst);
                done.send(()).expect("the test waits");
            }
        });
        // Started, then the awaiting side goes away while it waits.
        assert!(futures_poll_once(&mut work).is_pending());
        drop(work);
        assert!(!finished.load(Ordering::SeqCst));
        resume.send(()).expect("the work still runs");
        was_done.await.expect("it ran to its end");
        assert!(finished.load(Ordering::SeqCst));
    }

    fn futures_poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        Pin::new(future).poll(&mut Context::from_waker(std::task::Waker::noop()))
    }
}
