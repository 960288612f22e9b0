//! What the browser talks to, all on loopback: verifyd in dev mode (one
//! `[tenants.portal]` API key, email through a real SMTP server), the
//! portal, and the SMTP server.

use std::{
    io::{self, BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use verifyd::{
    app::{Application, Overrides},
    clock::Clock,
    config::Config,
    delivery::ConsoleSender,
};

const API_KEY: &str = "portal-demo-key-0123456789abcdef";
const SINK_HINT: &str = "the browser tests send email to a real SMTP server, aiosmtpd: run ./scripts/test once (it creates target/test-venv), or set SMTP_SINK_PYTHON to a python that has aiosmtpd==1.4.6";

/// What verifyd's console printed: the texts, codes included.
#[derive(Clone, Default)]
pub struct Console(Arc<Mutex<String>>);

impl io::Write for Console {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .expect("console")
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub struct Stack {
    /// The portal, `http://127.0.0.1:PORT`.
    pub portal: String,
    /// The simulated phone's page.
    pub phone: String,
    /// verifyd's clock: a journey moves it past the least gap between
    /// two verifications of one number, rather than waiting.
    pub clock: Clock,
    console: Console,
    sink: SmtpSink,
    stop: CancellationToken,
}

impl Stack {
    pub async fn start() -> Self {
        let sink = SmtpSink::start();
        let config = Config::from_toml_str(&format!(
            r#"
dev_mode = true
app_name = "Contoso"

[server]
grpc_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"

[webhooks]
addr = "127.0.0.1:0"

[tenants.portal]
api_key_sha256 = ["{digest}"]

[providers.mail]
kind = "smtp"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "Contoso <no-reply@contoso.example>"

[delivery]
email = ["mail"]
"#,
            digest = hex::encode(Sha256::digest(API_KEY)),
            port = sink.port,
        ))
        .expect("verifyd's config");
        let console = Console::default();
        let clock = Clock::manual(std::time::SystemTime::now());
        let app = Application::build_with(
            config,
            Overrides {
                clock: Some(clock.clone()),
                console: Some(ConsoleSender::to_writer(console.clone())),
            },
        )
        .await
        .expect("verifyd builds");
        let grpc = app.grpc_addr();
        let phone = app
            .dev_phone()
            .expect("dev mode's phone")
            .page()
            .to_string();
        let stop = app.shutdown_token();
        tokio::spawn(async move { app.run_until_stopped().await.expect("verifyd runs") });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the portal");
        let addr = listener.local_addr().expect("addr");
        let portal_stop = stop.clone();
        tokio::spawn(async move {
            sspr_portal::serve(
                sspr_portal::Config::new(addr, format!("http://{grpc}"), Some(API_KEY.to_owned())),
                listener,
                portal_stop.cancelled_owned(),
            )
            .await
            .expect("the portal runs");
        });
        Self {
            portal: format!("http://{addr}"),
            phone,
            clock,
            console,
            sink,
            stop,
        }
    }

    /// The code in the `nth` (from 1) text to `to`, as verifyd's console
    /// shows it.
    pub async fn texted_code(&self, to: &str, nth: usize) -> String {
        let needle = format!(" to={to} ");
        wait_for("a text", || {
            let console = self.console.0.lock().expect("console");
            let line = console
                .lines()
                .filter(|l| l.contains("channel=sms") && l.contains(&needle))
                .nth(nth - 1)?;
            let code = line.split(" code=").nth(1)?.split_whitespace().next()?;
            Some(code.to_owned())
        })
        .await
    }

    /// How many texts went to `to`.
    pub fn texts_to(&self, to: &str) -> usize {
        let needle = format!(" to={to} ");
        let console = self.console.0.lock().expect("console");
        console
            .lines()
            .filter(|l| l.contains("channel=sms") && l.contains(&needle))
            .count()
    }

    /// The code in the `nth` (from 1) email to `to`.
    pub async fn emailed_code(&self, to: &str, nth: usize) -> String {
        wait_for("an email", || {
            let text = self.sink.texts_to(to).into_iter().nth(nth - 1)?;
            first_code(&text)
        })
        .await
    }

    pub fn stop(self) {
        self.stop.cancel();
    }
}

/// The first run of exactly six digits: the code (its lifetime, "10
/// minutes", is shorter).
fn first_code(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| run.len() == 6)
        .map(str::to_owned)
}

async fn wait_for<T>(what: &str, mut find: impl FnMut() -> Option<T>) -> T {
    let began = Instant::now();
    loop {
        if let Some(found) = find() {
            return found;
        }
        assert!(
            began.elapsed() < Duration::from_secs(20),
            "no {what} arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `tests/support/smtp_sink.py` (aiosmtpd) in a child process, writing
/// each message it takes into a directory as JSON.
struct SmtpSink {
    port: u16,
    child: Child,
    /// Closing it stops the sink.
    stdin: Option<ChildStdin>,
    dir: PathBuf,
}

impl SmtpSink {
    fn start() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = std::env::var_os("SMTP_SINK_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/test-venv/bin/python"));
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "browser-mail-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut child = Command::new(&python)
            .arg(root.join("tests/support/smtp_sink.py"))
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {SINK_HINT}", python.display()));
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("the sink's port");
        let port = first
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the SMTP sink did not start; {SINK_HINT}"));
        Self {
            port,
            stdin: child.stdin.take(),
            child,
            dir,
        }
    }

    /// The text parts of the messages to `to`, in arrival order.
    fn texts_to(&self, to: &str) -> Vec<String> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|path| {
                let json: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
                let sent_to = json["rcpt_tos"].as_array()?.iter().any(|r| r == to);
                let text = json["parts"]
                    .as_array()?
                    .iter()
                    .find(|p| p["content_type"] == "text/plain")?["text"]
                    .as_str()?
                    .to_owned();
                sent_to.then_some(text)
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
