//! Email over SMTP with lettre: pooled connections on tokio, TLS by rustls
//! (ring, webpki roots). Each message is multipart/alternative: the plain
//! text and the HTML the templates rendered.
//!
//! Replies map to failure kinds the way RFC 5321 and RFC 3463 describe
//! them: a 4xx is worth retrying; a 5xx about the recipient's mailbox will
//! not improve with another provider; any other 5xx refuses this provider
//! only. The server's own words go into the reason with every address in
//! them masked, and never the code.

use std::{fmt, net::IpAddr, time::Duration};

use lettre::{
    Address, AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor,
    message::{
        Mailbox, MultiPart,
        header::{HeaderName, HeaderValue},
    },
    transport::smtp::{
        PoolConfig,
        authentication::Credentials,
        client::{Tls, TlsParameters},
    },
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::message::{Content, FailureKind, Message, Receipt, SendError};
use crate::{domain::Destination, secret::Secret};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text, for a relay on the same host or pod network only.
    None,
    /// Plain text first, then STARTTLS, which is required: a server that
    /// does not offer it gets nothing, credentials included.
    #[default]
    Starttls,
    /// TLS from the first byte ("SMTPS").
    Implicit,
}

impl SmtpTls {
    pub fn default_port(self) -> u16 {
        match self {
            Self::None => 25,
            Self::Starttls => 587,
            Self::Implicit => 465,
        }
    }
}

/// `[providers.NAME]` with `kind = "smtp"`. Checked by [`SmtpSender::new`]
/// at startup.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// The relay's host name (checked against its certificate) or IP.
    pub host: String,
    /// Defaults by `tls`: 25 for none, 587 for starttls, 465 for implicit.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    /// Best set through `VERIFYD_PROVIDERS__<NAME>__PASSWORD_FILE`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The sender: `no-reply@example.com` or `Acme <no-reply@example.com>`.
    pub from: String,
    #[serde(default)]
    pub reply_to: Option<String>,
    /// The most connections kept open to the relay.
    #[serde(default = "default_pool_max_size")]
    pub pool_max_size: u32,
    /// The longest one exchange with the relay (connect, each command) may
    /// take; the delivery attempt timeout bounds the whole send as well.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_pool_max_size() -> u32 {
    10
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for SmtpConfig {
    /// Empty `host` and `from`, which [`SmtpSender::new`] refuses: a base
    /// for struct update syntax.
    fn default() -> Self {
        Self {
            host: String::new(),
            port: None,
            tls: SmtpTls::default(),
            username: None,
            password: None,
            from: String::new(),
            reply_to: None,
            pool_max_size: default_pool_max_size(),
            timeout: default_timeout(),
        }
    }
}

#[derive(Clone)]
pub struct SmtpSender {
    name: String,
    host: String,
    port: u16,
    tls: SmtpTls,
    from: Mailbox,
    reply_to: Option<Mailbox>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

impl fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpSender")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl SmtpSender {
    /// Checks the configuration and sets up the connection pool; connects
    /// only when the first message goes out. The error is one line, naming
    /// the key.
    ///
    /// Call it inside a Tokio runtime: the pool starts its idle-connection
    /// reaper there.
    pub fn new(name: &str, config: &SmtpConfig) -> Result<Self, String> {
        let host = config.host.trim();
        if host.is_empty() {
            return Err("host is required".to_owned());
        }
        if !is_host(host) {
            return Err(
                "host must be a host name or IP address, without scheme or port (set port separately)"
                    .to_owned(),
            );
        }
        let port = config.port.unwrap_or(config.tls.default_port());
        if port == 0 {
            return Err("port must be 1 to 65535".to_owned());
        }
        let from = parse_mailbox(&config.from).map_err(|problem| format!("from {problem}"))?;
        let reply_to = config
            .reply_to
            .as_deref()
            .map(parse_mailbox)
            .transpose()
            .map_err(|problem| format!("reply_to {problem}"))?;
        if !(1..=100).contains(&config.pool_max_size) {
            return Err("pool_max_size must be 1 to 100".to_owned());
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(300)).contains(&config.timeout) {
            return Err("timeout must be 100ms to 5m".to_owned());
        }
        let credentials = credentials(name, config, host)?;

        if tokio::runtime::Handle::try_current().is_err() {
            return Err("the SMTP sender must be set up inside a Tokio runtime".to_owned());
        }
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls | SmtpTls::Implicit => {
                let params = TlsParameters::new(host.to_owned())
                    .map_err(|e| format!("cannot set up TLS: {e}"))?;
                if config.tls == SmtpTls::Starttls {
                    Tls::Required(params)
                } else {
                    Tls::Wrapper(params)
                }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .tls(tls)
            .timeout(Some(config.timeout))
            .pool_config(PoolConfig::new().max_size(config.pool_max_size));
        if let Some(credentials) = credentials {
            builder = builder.credentials(credentials);
        }
        Ok(Self {
            name: name.to_owned(),
            host: host.to_owned(),
            port,
            tls: config.tls,
            from,
            reply_to,
            transport: builder.build(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub async fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        let Content::Email {
            subject,
            text,
            html,
        } = content
        else {
            return Err(self.failure(FailureKind::Rejected, "SMTP sends email only".to_owned()));
        };
        let Destination::Email(address) = &message.to else {
            return Err(self.failure(FailureKind::Destination, "not an email address".to_owned()));
        };
        let to: Address = address.as_str().parse().map_err(|_| {
            self.failure(
                FailureKind::Destination,
                format!(
                    "{} is not an address the mail library accepts",
                    message.to.masked()
                ),
            )
        })?;
        let message_id = format!(
            "<{}@{}>",
            hex::encode(rand::rng().random::<[u8; 16]>()),
            self.from.email.domain()
        );
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(subject.as_str())
            .message_id(Some(message_id.clone()))
            // RFC 3834: no vacation replies to an automatic message.
            .raw_header(HeaderValue::new(
                HeaderName::new_from_ascii_str("Auto-Submitted"),
                "auto-generated".to_owned(),
            ));
        if let Some(reply_to) = &self.reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        let email = builder
            .multipart(MultiPart::alternative_plain_html(
                text.clone(),
                html.clone(),
            ))
            .map_err(|e| {
                self.failure(
                    FailureKind::Rejected,
                    scrub(&format!("cannot build the message: {e}"), message),
                )
            })?;
        match self.transport.send(email).await {
            Ok(_) => Ok(Receipt {
                provider: self.name.clone(),
                reference: Some(message_id),
                code_withheld: false,
            }),
            Err(e) => Err(self.failure(kind_of(&e), reason_of(&e, message))),
        }
    }

    fn failure(&self, kind: FailureKind, reason: String) -> SendError {
        SendError::new(&self.name, kind, reason)
    }
}
/// The login, if any: a username and a password together, never in clear
/// text across the network. `name` is the provider's, for the secret's
/// variable.
fn credentials(name: &str, config: &SmtpConfig, host: &str) -> Result<Option<Credentials>, String> {
    let secret_var = format!(
        "VERIFYD_PROVIDERS__{}__PASSWORD_FILE",
        name.to_ascii_uppercase()
    );
    match (&config.username, &config.password) {
        (None, None) => Ok(None),
        (Some(user), Some(password)) => {
            if user.is_empty() {
                return Err("username is empty".to_owned());
            }
            if password.expose().is_empty() {
                return Err(format!("password is empty (check {secret_var})"));
            }
            if config.tls == SmtpTls::None && !is_loopback(host) {
                return Err(
                    "username and password would cross the network in clear text: set tls = \"starttls\" or \"implicit\""
                        .to_owned(),
                );
            }
            Ok(Some(Credentials::new(
                user.clone(),
                password.expose().to_owned(),
            )))
        }
        (Some(_), None) => Err(format!(
            "username is set but password is not (set {secret_var} to a file holding it)"
        )),
        (None, Some(_)) => Err("password is set but username is not".to_owned()),
    }
}

/// A DNS name (underscores allowed: container runtimes hand them out) or an
/// IP address.
fn is_host(host: &str) -> bool {
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    host.parse::<IpAddr>().is_ok() || host.split('.').all(label)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The address is the operator's own, but stays out of the error like any
/// other.
fn parse_mailbox(input: &str) -> Result<Mailbox, String> {
    if input.trim().is_empty() {
        return Err("is required".to_owned());
    }
    input.trim().parse::<Mailbox>().map_err(|_| {
        "is not a valid mailbox: write an address, or a name and an address as Name <address>"
            .to_owned()
    })
}

fn kind_of(e: &lettre::transport::smtp::Error) -> FailureKind {
    match e.status() {
        Some(code) if e.is_permanent() => {
            let text = server_text(e);
            permanent_kind(code.to_string().parse().unwrap_or(554), &text)
        }
        // A 4xx reply: the command it answers, the message's end included,
        // was not taken, for now.
        Some(_) => FailureKind::Unsent,
        // A client error is lettre refusing before it sends (no STARTTLS
        // on offer, a non-ASCII address the relay cannot take); a TLS error
        // is a certificate or protocol mismatch. Retrying will not help;
        // another provider might.
        None if e.is_client() || e.is_tls() || rustls_error(e).is_some() => FailureKind::Rejected,
        // The relay was never reached: nothing was sent.
        None if never_connected(e) => FailureKind::Unsent,
        // Timeouts, dropped connections, garbled replies: the message may
        // have been taken before the reply was lost.
        None => FailureKind::Transient,
    }
}

/// Whether the connection to the relay never came up: refused, or no
/// route to it. lettre has no kind for it that it makes public; the I/O
/// error inside says it.
fn never_connected(e: &lettre::transport::smtp::Error) -> bool {
    use std::io::ErrorKind::{
        AddrNotAvailable, ConnectionRefused, HostUnreachable, NetworkUnreachable,
    };
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused | HostUnreachable | NetworkUnreachable | AddrNotAvailable
            )
        {
            return true;
        }
        source = err.source();
    }
    false
}

/// lettre reports a failed TLS handshake (a certificate that does not
/// check out, a server that does not speak TLS) as a connection error; the
/// rustls error inside tells it from a network fault.
fn rustls_error(e: &lettre::transport::smtp::Error) -> Option<&rustls::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // io::Error's own `source` skips the error it wraps.
        if let Some(tls) = err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls);
        }
        source = err.source();
    }
    None
}

/// A 5xx reply: about the recipient's mailbox (no provider will do
/// better), or anything else (this provider refused). The enhanced status
/// code (RFC 3463), when the server gives one, says which; without it, the
/// basic codes for a mailbox problem (RFC 5321: 550, 551, 553) decide.
fn permanent_kind(code: u16, text: &str) -> FailureKind {
    let about_recipient = match enhanced_status(text) {
        // X.1.1 bad mailbox, X.1.2 bad domain, X.1.3 bad syntax, X.1.4
        // ambiguous, X.1.6 moved, X.1.10 null MX; X.2.1 disabled, X.2.2
        // full. X.1.7 and X.1.8 are about the sender.
        Some((1, detail)) => matches!(detail, 1 | 2 | 3 | 4 | 6 | 10),
        Some((2, detail)) => matches!(detail, 1 | 2),
        Some(_) => false,
        None => matches!(code, 550 | 551 | 553),
    };
    if about_recipient {
        FailureKind::Destination
    } else {
        FailureKind::Rejected
    }
}

/// `5.1.1 <a@b>: unknown` → `(1, 1)`: the subject and detail of a leading
/// enhanced status code.
fn enhanced_status(text: &str) -> Option<(u16, u16)> {
    let token = text.split_whitespace().next()?;
    let mut parts = token.split('.');
    let class = parts.next()?;
    let subject = parts.next()?.parse().ok()?;
    let detail = parts.next()?.parse().ok()?;
    (matches!(class, "2" | "4" | "5") && parts.next().is_none()).then_some((subject, detail))
}

/// What the server said, as lettre kept it.
fn server_text(e: &lettre::transport::smtp::Error) -> String {
    std::error::Error::source(e)
        .map(ToString::to_string)
        .unwrap_or_default()
}

fn reason_of(e: &lettre::transport::smtp::Error, message: &Message) -> String {
    let reason = match e.status() {
        Some(code) => format!("SMTP {code}: {}", server_text(e)),
        None if e.is_timeout() => "timed out".to_owned(),
        None => match rustls_error(e) {
            Some(tls) => format!("TLS handshake failed: {tls}"),
            None => e.to_string(),
        },
    };
    scrub(&reason, message)
}

/// Longer server texts are cut: the reason is for people, not a log dump.
const MAX_REASON_CHARS: usize = 300;

/// One line, at most [`MAX_REASON_CHARS`], with the code removed and every
/// email address masked (the destination the way the rest of verifyd
/// masks it).
fn scrub(text: &str, message: &Message) -> String {
    let text = text.replace(message.code.expose(), "<code>");
    let text = text.replace(message.to.as_str(), &message.to.masked());
    let mut out: String = text
        .split_whitespace()
        .map(mask_address)
        .collect::<Vec<_>>()
        .join(" ");
    if let Some((cut, _)) = out.char_indices().nth(MAX_REASON_CHARS) {
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// `<bob@example.com>:` → `<b***@example.com>:`. Anything with an `@`
/// between other characters counts, so an address that is not quite one
/// is masked too.
fn mask_address(word: &str) -> String {
    let Some(at) = word.rfind('@') else {
        return word.to_owned();
    };
    let is_delimiter = |c: char| "<>()[]{},;:=\"'`".contains(c);
    let start = word[..at].rfind(is_delimiter).map_or(0, |i| {
        i + word[i..].chars().next().map_or(1, char::len_utf8)
    });
    let local = &word[start..at];
    if local.is_empty() || local.ends_with("***") {
        return word.to_owned();
    }
    let first = local.chars().next().map_or(0, char::len_utf8);
    format!("{}{}***{}", &word[..start], &local[..first], &word[at..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        Channel, Code, Locale, Purpose, TenantId, VerificationId, verification::Delivery,
    };

    fn config() -> SmtpConfig {
        SmtpConfig {
            host: "smtp.example.com".to_owned(),
            from: "Acme <no-reply@acme.example>".to_owned(),
            ..SmtpConfig::default()
        }
    }

    fn refused(config: &SmtpConfig) -> String {
        SmtpSender::new("mail", config).expect_err("should be refused")
    }

    fn message(to: &str) -> Message {
        Message {
            tenant: TenantId::default_tenant(),
            verification_id: VerificationId::generate(),
            to: Destination::parse(to).expect("destination"),
            extension: None,
            purpose: Purpose::PasswordReset,
            delivery: Delivery {
                channel: Channel::Email,
                voice_mode: None,
                locale: Locale::parse("en"),
            },
            code: Code::parse("583920").expect("code"),
            match_digits: None,
            call_token: None,
            valid_for: Duration::from_secs(600),
            app_name: "Acme".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_valid_config_builds_without_connecting() {
        let sender = SmtpSender::new("mail", &config()).expect("valid");
        assert_eq!(sender.name(), "mail");
        assert_eq!((sender.port, sender.tls), (587, SmtpTls::Starttls));
        for (tls, port) in [
            (SmtpTls::None, 25),
            (SmtpTls::Starttls, 587),
            (SmtpTls::Implicit, 465),
        ] {
            let sender = SmtpSender::new("mail", &SmtpConfig { tls, ..config() }).expect("valid");
            assert_eq!(sender.port, port, "{tls:?}");
        }
        let sender = SmtpSender::new(
            "mail",
            &SmtpConfig {
                port: Some(2525),
                username: Some("apikey".to_owned()),
                password: Some(Secret::new("hunter2-hunter2")),
                reply_to: Some("support@acme.example".to_owned()),
                ..config()
            },
        )
        .expect("valid");
        assert_eq!(sender.port, 2525);
        assert!(!format!("{sender:?}").contains("hunter2"), "{sender:?}");
    }

    #[tokio::test]
    async fn bad_configs_are_one_clear_line() {
        let cases = [
            (
                SmtpConfig {
                    host: " ".to_owned(),
                    ..config()
                },
                "host is required",
            ),
            (
                SmtpConfig {
                    host: "smtp://smtp.example.com".to_owned(),
                    ..config()
                },
                "without scheme or port",
            ),
            (
                SmtpConfig {
                    host: "smtp.example.com:587".to_owned(),
                    ..config()
                },
                "without scheme or port",
            ),
            (
                SmtpConfig {
                    from: String::new(),
                    ..config()
                },
                "from is required",
            ),
            (
                SmtpConfig {
                    from: "Acme no-reply-at-acme.example".to_owned(),
                    ..config()
                },
                "from is not a valid mailbox",
            ),
            (
                SmtpConfig {
                    reply_to: Some("help@".to_owned()),
                    ..config()
                },
                "reply_to is not a valid mailbox",
            ),
            (
                SmtpConfig {
                    username: Some("apikey".to_owned()),
                    ..config()
                },
                "VERIFYD_PROVIDERS__MAIL__PASSWORD_FILE",
            ),
            (
                SmtpConfig {
                    password: Some(Secret::new("hunter2")),
                    ..config()
                },
                "password is set but username is not",
            ),
            (
                SmtpConfig {
                    username: Some("apikey".to_owned()),
                    password: Some(Secret::new("hunter2")),
                    tls: SmtpTls::None,
                    ..config()
                },
                "clear text",
            ),
            (
                SmtpConfig {
                    port: Some(0),
                    ..config()
                },
                "port",
            ),
            (
                SmtpConfig {
                    pool_max_size: 0,
                    ..config()
                },
                "pool_max_size",
            ),
            (
                SmtpConfig {
                    timeout: Duration::ZERO,
                    ..config()
                },
                "timeout",
            ),
        ];
        for (config, expected) in cases {
            let problem = refused(&config);
            assert!(problem.contains(expected), "{expected}: {problem}");
            assert!(!problem.contains('\n'));
            assert!(!problem.contains("hunter2"), "{problem}");
            assert!(!problem.contains("no-reply@"), "{problem}");
        }
    }

    #[tokio::test]
    async fn credentials_in_clear_text_are_allowed_to_a_loopback_relay() {
        for host in ["localhost", "127.0.0.1", "::1"] {
            let config = SmtpConfig {
                host: host.to_owned(),
                tls: SmtpTls::None,
                username: Some("apikey".to_owned()),
                password: Some(Secret::new("hunter2")),
                ..config()
            };
            SmtpSender::new("mail", &config).expect(host);
        }
    }

    /// `[providers.NAME]` with `kind = "smtp"`, less the `kind` tag that
    /// picks this type (loading a whole file, `_FILE` secrets included, is
    /// tested in config/mod.rs).
    #[allow(clippy::result_large_err)] // figment's error, as it comes
    fn from_toml(toml: &str) -> Result<SmtpConfig, figment::Error> {
        use figment::providers::{Format as _, Toml};
        figment::Figment::from(Toml::string(toml)).extract()
    }

    #[tokio::test]
    async fn the_provider_table_deserializes_and_refuses_unknown_tls_and_keys() {
        let table = r#"
            host = "smtp.example.com"
            tls = "implicit"
            username = "apikey"
            password = "s3cret-value"
            from = "Acme <no-reply@acme.example>"
            timeout = "3s"
        "#;
        let smtp = from_toml(table).expect("valid");
        assert_eq!(smtp.tls, SmtpTls::Implicit);
        assert_eq!(smtp.timeout, Duration::from_secs(3));
        assert_eq!(
            smtp.password.as_ref().map(Secret::expose),
            Some("s3cret-value")
        );
        assert!(!format!("{smtp:?}").contains("s3cret"), "Debug redacts it");
        SmtpSender::new("mail", &smtp).expect("the sender builds");

        let err = from_toml(&table.replace(r#"tls = "implicit""#, r#"tls = "ssl""#))
            .expect_err("unknown mode");
        let line = err.to_string();
        assert_eq!(err.path, ["tls"], "{line}");
        assert!(
            line.contains("ssl") && line.contains("starttls") && line.contains("implicit"),
            "{line}"
        );

        let err = from_toml(&format!("{table}\npool_size = 4")).expect_err("unknown key");
        assert!(err.to_string().contains("pool_size"), "{err}");
    }

    #[test]
    fn mailbox_problems_end_the_send_and_others_fail_over() {
        use FailureKind::{Destination as Dest, Rejected};
        let cases = [
            (
                550,
                "5.1.1 <bob@example.com>: Recipient address rejected",
                Dest,
            ),
            (550, "Requested action not taken: mailbox unavailable", Dest),
            (553, "mailbox name not allowed", Dest),
            (552, "5.2.2 Mailbox full", Dest),
            (550, "5.7.1 Relaying denied", Rejected),
            (
                553,
                "5.1.8 <no-reply@acme.example>: Sender address rejected",
                Rejected,
            ),
            (554, "Transaction failed", Rejected),
            (535, "5.7.8 Authentication credentials invalid", Rejected),
            (552, "Message size exceeds fixed limit", Rejected),
        ];
        for (code, text, kind) in cases {
            assert_eq!(permanent_kind(code, text), kind, "{code} {text}");
        }
        assert_eq!(enhanced_status("5.1.10 null MX"), Some((1, 10)));
        assert_eq!(enhanced_status("Mailbox 5.1.1"), None);
        assert_eq!(enhanced_status("1.2.3.4 rejected"), None);
    }

    #[test]
    fn reasons_mask_every_address_and_drop_the_code() {
        let m = message("Bob.Smith@Example.com");
        let reason = scrub(
            "SMTP 550: 5.1.1 <Bob.Smith@example.com>: Recipient address rejected; from=<no-reply@acme.example> (code 583920)\r\nmore",
            &m,
        );
        assert_eq!(
            reason,
            "SMTP 550: 5.1.1 <B***@example.com>: Recipient address rejected; from=<n***@acme.example> (code <code>) more"
        );
        assert_eq!(mask_address("user=x@y.z"), "user=x***@y.z");
        assert_eq!(mask_address("@handle"), "@handle");
        assert_eq!(mask_address("plain"), "plain");
        let long = scrub(&"é".repeat(1000), &m);
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
    }
}
