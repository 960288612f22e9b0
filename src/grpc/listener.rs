//! The gRPC listener's accept loop, for plaintext and TLS alike.
//!
//! tonic's own loop tries again at once after a failed accept. When the
//! process is out of file descriptors (EMFILE) every try fails at once, and
//! the loop spins a core until a connection closes. Here such a failure
//! waits before the next try, 5 ms doubling to 1 s, as hyper's and axum's
//! loops do; a failure that concerns one connection only (it was reset
//! before it was accepted) does not.
//!
//! TLS handshakes run concurrently, so a slow client holds up nobody, but at
//! most `server.tls.max_handshakes` at a time: past that, connections wait
//! in the kernel's backlog until a handshake ends (each is bounded by
//! [`HANDSHAKE_TIMEOUT`]), instead of each holding a task and a handshake's
//! state however many a client opens.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::ServerConfig;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::{clock::Clock, telemetry::LogThrottle};

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after the first failed accept; it doubles with each failure
/// in a row, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Where connections come from: a TCP listener, or a test's stand-in.
pub trait Listener: Send + 'static {
    type Connection: Send + 'static;

    fn accept(&mut self)
    -> impl Future<Output = io::Result<(Self::Connection, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Connection = TcpStream;

    async fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        let (tcp, peer) = TcpListener::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, peer))
    }
}

/// A listener whose failed accepts wait before the next try.
#[derive(Debug)]
pub struct Acceptor<L> {
    listener: L,
    clock: Clock,
    pause: Duration,
    /// A failed accept is logged at most once a minute: it can repeat as
    /// fast as the pauses allow, for as long as descriptors run out.
    failures: LogThrottle,
}

impl<L: Listener> Acceptor<L> {
    pub fn new(listener: L, clock: Clock) -> Self {
        Self {
            listener,
            clock,
            pause: FIRST_PAUSE,
            failures: LogThrottle::new(Duration::from_secs(60)),
        }
    }

    /// The next connection, however many accepts fail first.
    pub async fn accept(&mut self) -> (L::Connection, SocketAddr) {
        loop {
            let error = match self.listener.accept().await {
                Ok(accepted) => {
                    self.pause = FIRST_PAUSE;
                    return accepted;
                }
                Err(error) => error,
            };
            if is_connection_error(&error) {
                tracing::debug!(%error, "a connection ended before it was accepted");
                continue;
            }
            let pause = self.pause;
            self.pause = (pause * 2).min(LONGEST_PAUSE);
            if let Some(held_back) = self.failures.admit(self.clock.now()) {
                tracing::warn!(
                    %error,
                    pause_ms = pause.as_millis(),
                    failures_not_logged = held_back,
                    "accepting a gRPC connection failed; trying again after a pause"
                );
            }
            self.clock.sleep_until(later(self.clock.now(), pause)).await;
        }
    }
}

fn later(now: SystemTime, by: Duration) -> SystemTime {
    now.checked_add(by).unwrap_or(now)
}

/// Errors that belong to one connection, not to the listener.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Plaintext connections, for tonic. Ends when `stop` is cancelled or the
/// receiver goes away.
pub fn plaintext(
    listener: TcpListener,
    clock: Clock,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TcpStream>> {
    let mut acceptor = Acceptor::new(listener, clock);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                accepted = acceptor.accept() => accepted,
            };
            if tx.send(Ok(tcp)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// TLS connections, for tonic, at most `max_handshakes` handshaking at
/// once. Failed handshakes are dropped. Ends when `stop` is cancelled or
/// the receiver goes away.
pub fn tls(
    listener: TcpListener,
    server_config: Arc<ServerConfig>,
    max_handshakes: usize,
    clock: Clock,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(server_config);
    handshaken(
        Acceptor::new(listener, clock),
        move |tcp| acceptor.accept(tcp),
        max_handshakes,
        stop,
    )
}

/// Connections from `acceptor` once `handshake` completed them, with at
/// most `max_handshakes` under way at once.
pub fn handshaken<L, H, F, S>(
    mut acceptor: Acceptor<L>,
    handshake: H,
    max_handshakes: usize,
    stop: CancellationToken,
) -> ReceiverStream<io::Result<S>>
where
    L: Listener,
    H: Fn(L::Connection) -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(max_handshakes));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // A slot first: without one, the next connection stays in the
            // kernel's backlog.
            let slot = tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let (connection, peer) = tokio::select! {
                () = stop.cancelled() => return,
                () = tx.closed() => return,
                accepted = acceptor.accept() => accepted,
            };
            let handshake = handshake(connection);
            let tx = tx.clone();
            tokio::spawn(async move {
                let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
                drop(slot);
                match done {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use tokio::sync::oneshot;
    use tokio_stream::StreamExt as _;

    use super::*;

    /// Hands out what the test queued, one accept at a time; waits (as a
    /// listener with nobody connecting does) when the queue is empty.
    #[derive(Clone, Default)]
    struct Queued {
        queue: Arc<Mutex<VecDeque<io::Result<u32>>>>,
        accepts: Arc<AtomicUsize>,
        arrived: Arc<tokio::sync::Notify>,
    }

    impl Queued {
        fn push(&self, next: io::Result<u32>) {
            self.queue.lock().expect("lock").push_back(next);
            self.arrived.notify_one();
        }

        fn waiting(&self) -> usize {
            self.queue.lock().expect("lock").len()
        }

        fn accepts(&self) -> usize {
            self.accepts.load(Ordering::SeqCst)
        }
    }

    impl Listener for Queued {
        type Connection = u32;

        async fn accept(&mut self) -> io::Result<(u32, SocketAddr)> {
            loop {
                let next = self.queue.lock().expect("lock").pop_front();
                if let Some(next) = next {
                    self.accepts.fetch_add(1, Ordering::SeqCst);
                    return next.map(|n| (n, SocketAddr::from(([127, 0, 0, 1], 1))));
                }
                self.arrived.notified().await;
            }
        }
    }

    fn out_of_descriptors() -> io::Error {
        io::Error::from_raw_os_error(24) // EMFILE
    }

    /// Lets the loop run as far as it can without the clock moving.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn failed_accepts_wait_longer_each_time_and_a_success_resets_the_pause() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000));
        let listener = Queued::default();
        for _ in 0..4 {
            listener.push(Err(out_of_descriptors()));
        }
        listener.push(Ok(7));
        let mut acceptor = Acceptor::new(listener.clone(), clock.clone());
        let accepted = tokio::spawn(async move { (acceptor.accept().await.0, acceptor) });

        // Without a pause, all five accepts would happen at once.
        settle().await;
        assert_eq!(listener.accepts(), 1, "the first failure pauses");
        for (pause_ms, accepts) in [(5, 2), (10, 3), (20, 4), (40, 5)] {
            clock.advance(Duration::from_millis(pause_ms - 1));
            settle().await;
            assert_eq!(listener.accepts(), accepts - 1, "{pause_ms} ms not yet up");
            clock.advance(Duration::from_millis(1));
            settle().await;
            assert_eq!(listener.accepts(), accepts, "after {pause_ms} ms");
        }
        let (first, mut acceptor) = accepted.await.expect("task");
        assert_eq!(first, 7);

        // After a success, the next failure pauses 5 ms again, not 80.
        listener.push(Err(out_of_descriptors()));
        listener.push(Ok(8));
        let accepted = tokio::spawn(async move { acceptor.accept().await.0 });
        settle().await;
        assert_eq!(listener.accepts(), 6);
        clock.advance(Duration::from_millis(5));
        assert_eq!(accepted.await.expect("task"), 8);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_reset_before_its_accept_is_passed_over_at_once() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH);
        let listener = Queued::default();
        listener.push(Err(io::ErrorKind::ConnectionAborted.into()));
        listener.push(Ok(1));
        let mut acceptor = Acceptor::new(listener, clock);
        assert_eq!(acceptor.accept().await.0, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_more_handshakes_than_the_cap_are_under_way_at_once() {
        let clock = Clock::manual(SystemTime::UNIX_EPOCH);
        let listener = Queued::default();
        // Each handshake finishes when the test says so.
        let finish: Arc<Mutex<Vec<oneshot::Sender<()>>>> = Arc::default();
        let handshake = {
            let finish = Arc::clone(&finish);
            move |n: u32| {
                let (tx, rx) = oneshot::channel();
                finish.lock().expect("lock").push(tx);
                async move {
                    rx.await.map_err(|_| io::Error::other("dropped"))?;
                    Ok(n)
                }
            }
        };
        let mut done = handshaken(
            Acceptor::new(listener.clone(), clock),
            handshake,
            2,
            CancellationToken::new(),
        );
        for n in 1..=3 {
            listener.push(Ok(n));
        }
        settle().await;
        assert_eq!(listener.accepts(), 2, "two slots, two handshakes");
        assert_eq!(listener.waiting(), 1, "the third waits in the backlog");

        let first = finish.lock().expect("lock").remove(0);
        first.send(()).expect("handshake waiting");
        assert_eq!(done.next().await.expect("open").expect("ok"), 1);
        settle().await;
        assert_eq!(listener.accepts(), 3, "a slot freed, the third is taken");
        assert_eq!(listener.waiting(), 0);
    }
}
