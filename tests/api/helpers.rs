//! `spawn_app`: the real server on ephemeral ports, driven by a manual
//! clock, with the console sender writing into an [`Outbox`] the test reads
//! codes from.
//!
//! One suite, two stores: with `API_TEST_STORE=redis` (as `scripts/test`
//! runs it the second time) every app gets a real redis-server of its own;
//! otherwise the in-memory store. A test that is about one store names it
//! in its config, and that wins.

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, SystemTime},
};

use crate::redis_server::RedisServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;
use verifyd::{
    app::{Application, Overrides},
    clock::Clock,
    config::Config,
    delivery::{ConsoleSender, config::CONSOLE_PROVIDER, dev_phone::DevPhone},
    proto::{self, verification_service_client::VerificationServiceClient},
    secret::Secret,
    store::StoreBackend,
};

pub const TEST_KEY: &str = "test-hmac-key-0123456789abcdef-0123456789";
pub const TEST_INDEX_KEY: &str = "test-index-key-0123456789abcdef-012345678";

/// What the console sender wrote, line by line. Can be told to fail, the
/// way a closed stdout fails, to exercise failed sends.
#[derive(Clone, Default)]
pub struct Outbox {
    text: Arc<Mutex<String>>,
    failing: Arc<AtomicBool>,
}

impl io::Write for Outbox {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.text
            .lock()
            .expect("outbox lock")
            .push_str(std::str::from_utf8(buf).expect("utf-8"));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Outbox {
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn lines_for(&self, id: &str) -> Vec<String> {
        let needle = format!("verification={id} ");
        self.text
            .lock()
            .expect("outbox lock")
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_owned)
            .collect()
    }

    /// The code in the latest message for verification `id`.
    pub fn code_for(&self, id: &str) -> String {
        let lines = self.lines_for(id);
        let line = lines
            .last()
            .unwrap_or_else(|| panic!("no message for {id}"));
        field(line, "code").unwrap_or_else(|| panic!("no code in {line}"))
    }

    pub fn sent_count(&self, id: &str) -> usize {
        self.lines_for(id).len()
    }

    /// Every message sent so far, whatever its verification.
    pub fn total_sent(&self) -> usize {
        self.text.lock().expect("outbox lock").lines().count()
    }
}

pub fn field(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    Some(line[start..].split_whitespace().next()?.to_owned())
}

pub struct TestApp {
    pub client: VerificationServiceClient<Channel>,
    pub channel: Channel,
    pub clock: Clock,
    pub outbox: Outbox,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// The public webhook listener, when `webhooks.public_base_url` is set.
    pub webhook_addr: Option<SocketAddr>,
    /// The operator API's listener, when `[admin_api]` is on.
    pub admin_api_addr: Option<SocketAddr>,
    /// Dev mode's simulated phone, when it takes the calls.
    pub phone: Option<DevPhone>,
    pub shutdown: CancellationToken,
    pub server: JoinHandle<()>,
    /// The app's own Redis, when the suite runs against Redis.
    pub redis: Option<RedisServer>,
}

/// Which store the suite runs against: `API_TEST_STORE=redis`, else
/// memory. (Not a `VERIFYD_` variable: those are verifyd configuration.)
pub fn suite_uses_redis() -> bool {
    match std::env::var("API_TEST_STORE").as_deref() {
        Ok("redis") => true,
        Ok("memory") | Err(_) => false,
        Ok(other) => panic!("API_TEST_STORE must be memory or redis, not {other}"),
    }
}

/// Points `config` at a Redis, with a command timeout short enough for
/// the fault tests.
pub fn use_redis(config: &mut Config, urls: &[String]) {
    config.store.backend = StoreBackend::Redis;
    config.store.redis.index_key = Some(Secret::new(TEST_INDEX_KEY));
    match urls {
        [url] => config.store.redis.url = Some(url.clone()),
        _ => config.store.redis.cluster = urls.to_vec(),
    }
    config.store.redis.timeout = Duration::from_millis(300);
    config.store.redis.connect_timeout = Duration::from_millis(300);
}

/// Retries `request` until it is served, within `limit` (a dependency
/// coming back: Redis restarted, a failover); every answer before that
/// must be UNAVAILABLE, failing closed.
pub async fn once_served<T, F: Future<Output = Result<T, tonic::Status>>>(
    limit: Duration,
    mut request: impl FnMut() -> F,
) -> T {
    let began = std::time::Instant::now();
    loop {
        match request().await {
            Ok(answer) => return answer,
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::Unavailable, "fail closed: {e:?}");
                assert!(
                    began.elapsed() < limit,
                    "not served within {limit:?}: {e:?}"
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next verification a watch stream sends, within `limit`.
pub async fn next_status_within(
    limit: Duration,
    stream: &mut tonic::Streaming<proto::WatchVerificationResponse>,
) -> proto::Verification {
    use tokio_stream::StreamExt as _;
    tokio::time::timeout(limit, stream.next())
        .await
        .expect("the change arrives without polling")
        .expect("stream open")
        .expect("ok")
        .verification
        .expect("verification")
}

/// A round start time keeps timestamps readable in failures.
pub fn test_clock() -> Clock {
    Clock::manual(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
}

/// A production-shaped config (not dev mode) on ephemeral loopback ports.
pub fn test_config() -> Config {
    let mut config = Config {
        app_name: "Acme".to_owned(),
        ..Config::default()
    };
    config.hmac.key = Some(Secret::new(TEST_KEY));
    config.delivery.sms = vec![CONSOLE_PROVIDER.to_owned()];
    config.delivery.voice = vec![CONSOLE_PROVIDER.to_owned()];
    config.delivery.email = vec![CONSOLE_PROVIDER.to_owned()];
    config.server.grpc_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.admin_addr = "127.0.0.1:0".parse().expect("addr");
    config.server.shutdown_grace = Duration::from_secs(5);
    // Retries stay real, only quick.
    config.delivery.retry.backoff = Duration::from_millis(1);
    // Test numbers share a prefix (+1415555…), so the anti-pumping budgets
    // would trip in tests about other things; tests/api/fraud.rs sets its
    // own.
    config.limits.starts_per_prefix.burst = 10_000;
    config.limits.starts_per_country.burst = 10_000;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config();
    let redis = suite_uses_redis().then(RedisServer::start);
    if let Some(redis) = &redis {
        use_redis(&mut config, &[redis.url()]);
    }
    configure(&mut config);
    let mut app = spawn(config, test_clock()).await;
    app.redis = redis;
    app
}

/// The app for `config` on `clock`; replicas of one service share both.
pub async fn spawn(config: Config, clock: Clock) -> TestApp {
    config.validate().expect("test config is valid");
    let outbox = Outbox::default();
    let tls = config.server.tls.is_some();
    let app = Application::build_with(
        config,
        Overrides {
            clock: Some(clock.clone()),
            console: Some(ConsoleSender::to_writer(outbox.clone())),
        },
    )
    .await
    .expect("the application builds");
    let grpc_addr = app.grpc_addr();
    let admin_addr = app.admin_addr();
    let webhook_addr = app.webhook_addr();
    let admin_api_addr = app.admin_api_addr();
    let phone = app.dev_phone().cloned();
    let shutdown = app.shutdown_token();
    let server = tokio::spawn(async move {
        app.run_until_stopped().await.expect("server runs");
    });
    let endpoint = Channel::from_shared(format!("http://{grpc_addr}")).expect("uri");
    // A TLS listener takes no plaintext: the test makes its own TLS
    // channel, and this one only connects if used.
    let channel = if tls {
        endpoint.connect_lazy()
    } else {
        endpoint.connect().await.expect("connect to the server")
    };
    TestApp {
        client: VerificationServiceClient::new(channel.clone()),
        channel,
        clock,
        outbox,
        grpc_addr,
        admin_addr,
        webhook_addr,
        admin_api_addr,
        phone,
        shutdown,
        server,
        redis: None,
    }
}

pub fn sms_to(to: &str) -> proto::StartVerificationRequest {
    proto::StartVerificationRequest {
        to: to.to_owned(),
        channel: proto::Channel::Sms.into(),
        purpose: proto::Purpose::PasswordReset.into(),
        ..Default::default()
    }
}

/// A resend of `id` on `channel`.
pub fn resend_on(id: &str, channel: proto::Channel) -> proto::ResendVerificationRequest {
    proto::ResendVerificationRequest {
        id: id.to_owned(),
        channel: channel.into(),
        ..Default::default()
    }
}

impl TestApp {
    pub async fn resend(
        &self,
        req: proto::ResendVerificationRequest,
    ) -> Result<proto::ResendVerificationResponse, tonic::Status> {
        self.client
            .clone()
            .resend_verification(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Resends and returns the verification, which must succeed.
    pub async fn resent(&self, req: proto::ResendVerificationRequest) -> proto::Verification {
        self.resend(req)
            .await
            .expect("resend succeeds")
            .verification
            .expect("verification")
    }

    pub async fn start(
        &self,
        req: proto::StartVerificationRequest,
    ) -> Result<proto::StartVerificationResponse, tonic::Status> {
        self.client
            .clone()
            .start_verification(req)
            .await
            .map(tonic::Response::into_inner)
    }

    /// Starts and returns the verification, which must succeed.
    pub async fn started(&self, req: proto::StartVerificationRequest) -> proto::Verification {
        self.start(req)
            .await
            .expect("start succeeds")
            .verification
            .expect("verification")
    }

    pub async fn check(
        &self,
        id: &str,
        code: &str,
    ) -> Result<proto::CheckVerificationResponse, tonic::Status> {
        self.client
            .clone()
            .check_verification(proto::CheckVerificationRequest {
                id: id.to_owned(),
                code: code.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn get(&self, id: &str) -> Result<proto::Verification, tonic::Status> {
        self.client
            .clone()
            .get_verification(proto::GetVerificationRequest { id: id.to_owned() })
            .await
            .map(|r| r.into_inner().verification.expect("verification"))
    }

    pub async fn cancel(&self, id: &str) -> Result<proto::Verification, tonic::Status> {
        self.client
            .clone()
            .cancel_verification(proto::CancelVerificationRequest { id: id.to_owned() })
            .await
            .map(|r| r.into_inner().verification.expect("verification"))
    }

    pub async fn watch(
        &self,
        id: &str,
    ) -> Result<tonic::Streaming<proto::WatchVerificationResponse>, tonic::Status> {
        self.client
            .clone()
            .watch_verification(proto::WatchVerificationRequest { id: id.to_owned() })
            .await
            .map(tonic::Response::into_inner)
    }

    /// The Prometheus exposition from the admin listener's `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let response =
            crate::server::http_response(&format!("http://{}/metrics", self.admin_addr)).await;
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/openmetrics-text"),
            "{head}"
        );
        Metrics(body.to_owned())
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task");
    }
}

pub fn status(v: &proto::Verification) -> proto::VerificationStatus {
    proto::VerificationStatus::try_from(v.status).expect("known status")
}

/// A code that is not `code`.
pub fn wrong(code: &str) -> String {
    code.chars()
        .map(|c| {
            if c == '9' {
                '0'
            } else {
                char::from(c as u8 + 1)
            }
        })
        .collect()
}

/// The fields named in a status's BadRequest details.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub fn retry_after(status: &tonic::Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

/// A `/metrics` page.
#[derive(Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The value of the sample `series` (name and labels exactly as
    /// exposed, e.g. `verifyd_ready` or `verifyd_checks_total{tenant="a",outcome="approved"}`).
    pub fn value(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            // OpenMetrics may follow the value with a timestamp or exemplar.
            value.split(' ').next()?.parse().ok()
        })
    }

    /// Like `value`, 0 when the series is not there yet.
    pub fn count(&self, series: &str) -> f64 {
        self.value(series).unwrap_or(0.0)
    }
}
