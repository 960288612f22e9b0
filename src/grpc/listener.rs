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
//! state however many a client opens. One address may hold at most
//! `server.tls.max_handshakes_per_ip` of those slots; a connection past that
//! is closed at once. Otherwise a single client that opens connections and
//! never says hello would hold every slot, and with them the listener.
//!
//! Both streams end when tonic drops them, once it stops serving: ending
//! them on the shutdown signal too would race tonic's own, and tonic could
//! start draining before it marks the server NOT_SERVING.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use rustls::ServerConfig;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;

use crate::{clock::Clock, telemetry::LogThrottle};

/// How long a client may take to finish its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause after the first failed accept; it doubles with each failure
/// in a row, up to [`LONGEST_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// How many handshakes may run at once, in all and from one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeLimits {
    pub total: usize,
    pub per_ip: usize,
}

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
                    not_logged_since_last = held_back,
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

/// Errors that belong to one connection, not to the listener: Linux's
/// accept(2) passes on the network errors of the connection it dequeues.
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::NetworkDown
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::HostUnreachable
    )
}

/// Plaintext connections, for tonic, until it drops the stream.
pub fn plaintext(listener: TcpListener, clock: Clock) -> ReceiverStream<io::Result<TcpStream>> {
    let mut acceptor = Acceptor::new(listener, clock);
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = tokio::select! {
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

/// TLS connections, for tonic, until it drops the stream. Failed
/// handshakes are dropped.
pub fn tls(
    listener: TcpListener,
    server_config: Arc<ServerConfig>,
    limits: HandshakeLimits,
    clock: Clock,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let acceptor = TlsAcceptor::from(server_config);
    handshaken(
        Acceptor::new(listener, clock),
        move |tcp| acceptor.accept(tcp),
        limits,
    )
}

/// Connections from `acceptor` once `handshake` completed them, within
/// `limits`.
fn handshaken<L, H, F, S>(
    mut acceptor: Acceptor<L>,
    handshake: H,
    limits: HandshakeLimits,
) -> ReceiverStream<io::Result<S>>
where
    L: Listener,
    H: Fn(L::Connection) -> F + Send + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
    S: Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.total));
    let per_ip = Arc::new(PerIp::new(limits.per_ip));
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // A slot first: without one, the next connection stays in the
            // kernel's backlog.
            let slot = tokio::select! {
                () = tx.closed() => return,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { return };
            let (connection, peer) = tokio::select! {
                () = tx.closed() => return,
                accepted = acceptor.accept() => accepted,
            };
            let Some(peer_slot) = PerIp::take(&per_ip, peer.ip()) else {
                // Closed at once: its address holds its share of the slots.
                tracing::debug!(%peer, "TLS handshakes from one address at the cap: connection closed");
                continue;
            };
            let handshake = handshake(connection);
            let tx = tx.clone();
            tokio::spawn(async move {
                let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await;
                drop((slot, peer_slot));
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

/// Handshakes under way per peer address.
#[derive(Debug)]
struct PerIp {
    cap: usize,
    under_way: Mutex<HashMap<IpAddr, usize>>,
}

/// One handshake's place in its address's count, given back on drop.
#[derive(Debug)]
struct PeerSlot {
    of: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            under_way: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more handshake from `ip`, unless it is at the cap.
    fn take(this: &Arc<Self>, ip: IpAddr) -> Option<PeerSlot> {
        let ip = ip.to_canonical();
        let mut under_way = this
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = under_way.entry(ip).or_default();
        if *count >= this.cap {
            return None;
        }
        *count += 1;
        Some(PeerSlot {
            of: Arc::clone(this),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut under_way = self
            .of
            .under_way
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // The map holds addresses with handshakes under way only, so it is
        // bounded by the global cap.
        if let Some(count) = under_way.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                under_way.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use tokio::sync::oneshot;
    use tokio_stream::StreamExt as _;

    use super::*;

    /// What an accept gives: connection `n` from an address, or an error.
    type Accepted = io::Result<(u32, SocketAddr)>;

    /// Hands out what the test queued, one accept at a time; waits (as a
    /// listener with nobody connecting does) when the queue is empty.
    #[derive(Clone, Default)]
    struct Queued {
        queue: Arc<Mutex<VecDeque<Accepted>>>,
        accepts: Arc<AtomicUsize>,
        arrived: Arc<tokio::sync::Notify>,
    }

    impl Queued {
        /// Connection `n`, from an address of its own.
        fn push(&self, next: io::Result<u32>) {
            self.enqueue(next.map(|n| (n, SocketAddr::from(([10, 0, 0, n as u8], 40_000)))));
        }

        fn push_from(&self, n: u32, ip: [u8; 4]) {
            self.enqueue(Ok((n, SocketAddr::from((ip, 40_000 + n as u16)))));
        }

        fn enqueue(&self, next: Accepted) {
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

        async fn accept(&mut self) -> Accepted {
            loop {
                let next = self.queue.lock().expect("lock").pop_front();
                if let Some(next) = next {
                    self.accepts.fetch_add(1, Ordering::SeqCst);
                    return next;
                }
                self.arrived.notified().await;
            }
        }
    }

    /// Handshakes that finish when the test says so, and the connections
    /// they were started for.
    #[derive(Clone, Default)]
    struct Handshakes {
        started: Arc<Mutex<Vec<u32>>>,
        finish: Arc<Mutex<HashMap<u32, oneshot::Sender<()>>>>,
    }

    type Handshake = std::pin::Pin<Box<dyn Future<Output = io::Result<u32>> + Send>>;

    impl Handshakes {
        fn begin(&self) -> impl Fn(u32) -> Handshake + Send + 'static {
            let this = self.clone();
            move |n| {
                let (tx, rx) = oneshot::channel();
                this.started.lock().expect("lock").push(n);
                this.finish.lock().expect("lock").insert(n, tx);
                Box::pin(async move { rx.await.map(|()| n).map_err(io::Error::other) })
            }
        }

        fn started(&self) -> Vec<u32> {
            self.started.lock().expect("lock").clone()
        }

        fn finish(&self, n: u32) {
            let tx = self.finish.lock().expect("lock").remove(&n);
            tx.expect("under way").send(()).expect("waiting");
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
        // The manual clock never moves: a pause would never end.
        let clock = Clock::manual(SystemTime::UNIX_EPOCH);
        let listener = Queued::default();
        listener.push(Err(io::ErrorKind::ConnectionAborted.into()));
        listener.push(Ok(1));
        let mut acceptor = Acceptor::new(listener, clock);
        let accepted = tokio::time::timeout(Duration::from_secs(10), acceptor.accept())
            .await
            .expect("no pause after a connection's own error");
        assert_eq!(accepted.0, 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn no_more_handshakes_than_the_cap_are_under_way_at_once() {
        let listener = Queued::default();
        let handshakes = Handshakes::default();
        let limits = HandshakeLimits {
            total: 2,
            per_ip: 2,
        };
        let acceptor = Acceptor::new(listener.clone(), Clock::manual(SystemTime::UNIX_EPOCH));
        let mut done = handshaken(acceptor, handshakes.begin(), limits);
        for n in 1..=3 {
            listener.push(Ok(n));
        }
        settle().await;
        assert_eq!(handshakes.started(), [1, 2], "two slots, two handshakes");
        assert_eq!(listener.waiting(), 1, "the third waits in the backlog");

        handshakes.finish(1);
        assert_eq!(done.next().await.expect("open").expect("ok"), 1);
        settle().await;
        assert_eq!(
            handshakes.started(),
            [1, 2, 3],
            "a slot freed, the third is taken"
        );
        assert_eq!(listener.waiting(), 0);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_address_cannot_take_every_slot() {
        let listener = Queued::default();
        let handshakes = Handshakes::default();
        let limits = HandshakeLimits {
            total: 4,
            per_ip: 2,
        };
        let acceptor = Acceptor::new(listener.clone(), Clock::manual(SystemTime::UNIX_EPOCH));
        let mut done = handshaken(acceptor, handshakes.begin(), limits);
        let (attacker, user) = ([192, 0, 2, 1], [198, 51, 100, 7]);
        for n in 1..=3 {
            listener.push_from(n, attacker);
        }
        listener.push_from(4, user);
        settle().await;
        assert_eq!(
            handshakes.started(),
            [1, 2, 4],
            "the attacker's third connection is closed unhandshaken; the user's is served"
        );
        assert_eq!(listener.waiting(), 0);

        // Its share comes back as its handshakes end.
        handshakes.finish(1);
        assert_eq!(done.next().await.expect("open").expect("ok"), 1);
        listener.push_from(5, attacker);
        settle().await;
        assert_eq!(handshakes.started(), [1, 2, 4, 5]);
    }
}
