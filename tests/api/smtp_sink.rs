//! A real SMTP server for the email tests: `tests/support/smtp_sink.py`
//! (aiosmtpd) in a child process on an ephemeral loopback port, writing
//! each message it accepts into a temporary directory, parsed by Python's
//! email package.
//!
//! The interpreter is `SMTP_SINK_PYTHON` (set by `scripts/test`, which
//! creates `target/test-venv`), else that venv if it exists, else `python3`.
//! Without Python or aiosmtpd the tests fail, saying what to install.

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use tokio::io::AsyncWriteExt as _;

use serde_json::Value;
use verifyd::delivery::{
    config::ProviderConfig,
    smtp::{SmtpConfig, SmtpTls},
};

const INSTALL_HINT: &str = "the email tests need Python 3.11+ with aiosmtpd: run ./scripts/test once (it installs python3 and python3-venv if missing and creates target/test-venv from tests/support/smtp-sink-requirements.txt), or set SMTP_SINK_PYTHON to a python that has aiosmtpd==1.4.6";

pub struct SmtpSink {
    pub port: u16,
    child: Child,
    /// Closing it tells the sink to stop.
    stdin: Option<ChildStdin>,
    dir: tempfile::TempDir,
}

/// One message as the sink received and parsed it.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    pub json: Value,
    pub raw: String,
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("SMTP_SINK_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

impl SmtpSink {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra arguments for the sink, e.g. `["--auth", "user:password"]`.
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        let python = python();
        // A file, not a pipe nobody drains: aiosmtpd's warnings must never
        // block it.
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(dir.path().join("mail"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", python.display()));
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut first)
            .expect("read the sink's port");
        let Ok(port) = first.trim().parse() else {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!(
                "the SMTP sink ({} {}) did not start: {}; {INSTALL_HINT}",
                python.display(),
                script.display(),
                stderr.trim()
            );
        };
        let stdin = child.stdin.take();
        Self {
            port,
            child,
            stdin,
            dir,
        }
    }

    /// The messages received so far, in arrival order.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mail = self.dir.path().join("mail");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&mail)
            .map(|entries| {
                entries
                    .map(|e| e.expect("dir entry").path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|json| ReceivedMail {
                json: serde_json::from_str(&std::fs::read_to_string(&json).expect("read json"))
                    .expect("sink json"),
                raw: String::from_utf8_lossy(
                    &std::fs::read(json.with_extension("eml")).expect("read eml"),
                )
                .into_owned(),
            })
            .collect()
    }

    /// The only message received; fails if there is not exactly one.
    pub fn single(&self) -> ReceivedMail {
        let mut all = self.messages();
        assert_eq!(all.len(), 1, "expected one message, got {all:#?}");
        all.remove(0)
    }

    /// A provider config that sends to this sink in plain text.
    pub fn provider(&self) -> ProviderConfig {
        ProviderConfig::Smtp(self.config())
    }

    pub fn config(&self) -> SmtpConfig {
        smtp_config(self.port)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

pub fn smtp_provider(port: u16) -> ProviderConfig {
    ProviderConfig::Smtp(smtp_config(port))
}

/// Plain text to `127.0.0.1:port`, from Acme.
pub fn smtp_config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".to_owned(),
        port: Some(port),
        tls: SmtpTls::None,
        from: "Acme Security <no-reply@acme.example>".to_owned(),
        reply_to: Some("support@acme.example".to_owned()),
        ..SmtpConfig::default()
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// A relay that tarpits: it greets, then never answers a command, the way
/// a tarpit stalls senders it distrusts. Each connection is held open until
/// the tarpit is dropped.
pub struct SmtpTarpit {
    pub port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpTarpit {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                // A greeting, then silence.
                let _ = socket.write_all(b"220 tarpit.example ESMTP\r\n").await;
                held.push(socket);
            }
        });
        Self {
            port,
            connections,
            task,
        }
    }

    /// The connections the relay has accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for SmtpTarpit {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReceivedMail {
    pub fn rcpt_tos(&self) -> Vec<String> {
        strings(&self.json["rcpt_tos"])
    }

    /// A header's values, decoded.
    pub fn header(&self, name: &str) -> Vec<String> {
        strings(&self.json["headers"][name.to_ascii_lowercase()])
    }

    pub fn subject(&self) -> String {
        self.header("subject").concat()
    }

    /// The leaf MIME parts' content types, in order.
    pub fn part_types(&self) -> Vec<String> {
        self.parts()
            .iter()
            .map(|p| p["content_type"].as_str().expect("type").to_owned())
            .collect()
    }

    /// The decoded text of the part with this content type.
    pub fn part(&self, content_type: &str) -> String {
        let part = self
            .parts()
            .into_iter()
            .find(|p| p["content_type"] == content_type)
            .unwrap_or_else(|| panic!("no {content_type} part in {:#}", self.json));
        assert_eq!(part["charset"], "utf-8", "{part:#}");
        part["text"].as_str().expect("text").to_owned()
    }

    fn parts(&self) -> Vec<Value> {
        self.json["parts"].as_array().expect("parts").clone()
    }

    /// The first run of exactly `len` digits in the plain-text part.
    pub fn code(&self, len: usize) -> String {
        let text = self.part("text/plain");
        text.split(|c: char| !c.is_ascii_digit())
            .find(|run| run.len() == len)
            .unwrap_or_else(|| panic!("no {len}-digit code in {text}"))
            .to_owned()
    }
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}
