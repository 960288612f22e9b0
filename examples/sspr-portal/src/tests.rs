//! The portal served for real on a loopback port and driven over HTTP/1.1:
//! the security headers, the cookie, the CSRF check, session rotation, and
//! the reset flow's answers for an account that does not exist. verifyd's
//! address is a closed port: the flows tested here never call it (a call
//! would show "We couldn't reach the messaging service").

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    thread,
};

use tokio::sync::oneshot;

use crate::{Config, serve};

struct Portal {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

fn start() -> Portal {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let config = Config::new(addr, "http://127.0.0.1:9", None);
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(config, listener, shutdown).await.expect("serve");
        });
    });
    Portal { addr, _stop: stop }
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A hidden field's value, e.g. `csrf`.
    fn field(&self, name: &str) -> String {
        let marker = format!(r#"name="{name}" value=""#);
        let start = self.body.find(&marker).map(|i| i + marker.len());
        start
            .and_then(|s| self.body[s..].split('"').next())
            .unwrap_or_default()
            .to_owned()
    }

    fn element(&self, id: &str) -> Option<&str> {
        let start = self.body.find(&format!(r#"id="{id}""#))?;
        let open = self.body[start..].find('>')? + start + 1;
        let close = self.body[open..].find("</")? + open;
        Some(&self.body[open..close])
    }
}

/// A browser with one cookie.
struct Browser {
    addr: SocketAddr,
    cookie: Option<String>,
}

impl Browser {
    fn new(portal: &Portal) -> Self {
        Browser {
            addr: portal.addr,
            cookie: None,
        }
    }

    fn send(&mut self, method: &str, path: &str, form: &[(&str, &str)]) -> Reply {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let body = body.join("&");
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        if let Some(cookie) = &self.cookie {
            request.push_str(&format!("Cookie: __Host-sspr-session={cookie}\r\n"));
        }
        if method == "POST" {
            request.push_str(&format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        stream.write_all(request.as_bytes()).expect("write");
        let mut raw = String::new();
        stream.read_to_string(&mut raw).expect("read");
        let reply = parse(&raw);
        if let Some(set) = reply.header("set-cookie") {
            let value = set
                .strip_prefix("__Host-sspr-session=")
                .and_then(|v| v.split(';').next())
                .unwrap_or_default();
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        reply
    }

    fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, &[])
    }

    /// Posts `form` with the CSRF token of the page `page` shows.
    fn post(&mut self, page: &Reply, path: &str, form: &[(&str, &str)]) -> Reply {
        let csrf = page.field("csrf");
        let mut fields = form.to_vec();
        fields.push(("csrf", &csrf));
        self.send("POST", path, &fields)
    }
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse(raw: &str) -> Reply {
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

const PASSWORD: &str = "correct horse battery";

fn register(browser: &mut Browser, name: &str) -> Reply {
    let page = browser.get("/register");
    browser.post(
        &page,
        "/register",
        &[
            ("account", name),
            ("password", PASSWORD),
            ("password2", PASSWORD),
        ],
    )
}

#[test]
fn every_response_carries_the_security_headers() {
    let portal = start();
    let mut browser = Browser::new(&portal);
    let login = browser.get("/login");
    let replies = [
        browser.get("/"),
        browser.get("/static/site.css"),
        browser.get("/static/verify.js"),
        browser.get("/no/such/page"),
        browser.get("/verify"),
        browser.send("POST", "/login", &[("account", "a")]),
        login,
    ];
    for reply in &replies {
        let csp = reply.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
            "{reply:?}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(reply.header("referrer-policy"), Some("no-referrer"));
        assert_eq!(reply.header("cache-control"), Some("no-store"));
    }
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200, 200, 404, 303, 403, 200]);
}

#[test]
fn a_post_needs_its_sessions_token() {
    let portal = start();
    let mut browser = Browser::new(&portal);
    let page = browser.get("/login");
    let set = page.header("set-cookie").expect("a session for the form");
    assert!(
        set.ends_with("; Path=/; Secure; HttpOnly; SameSite=Strict"),
        "{set}"
    );
    let forged = browser.send(
        "POST",
        "/register",
        &[("account", "mallory"), ("csrf", "0")],
    );
    assert_eq!(forged.status, 403);
    assert_eq!(
        forged.element("error"),
        Some("This form has expired. Go back and try again.")
    );
    // Without a session at all.
    let mut stranger = Browser::new(&portal);
    let token = page.field("csrf");
    let replayed = stranger.send("POST", "/logout", &[("csrf", &token)]);
    assert_eq!(replayed.status, 403);
    // The right token passes.
    assert_eq!(browser.post(&page, "/logout", &[]).status, 303);
}

#[test]
fn signing_in_rotates_the_session() {
    let portal = start();
    let mut browser = Browser::new(&portal);
    browser.get("/register");
    let before = browser.cookie.clone().expect("a session");
    let mut planted = Browser {
        addr: portal.addr,
        cookie: Some(before.clone()),
    };
    // The form page before was fetched with the same session.
    let page = browser.get("/register");
    let done = browser.post(
        &page,
        "/register",
        &[
            ("account", "Alice"),
            ("password", PASSWORD),
            ("password2", PASSWORD),
        ],
    );
    assert_eq!(done.status, 303);
    assert_eq!(done.header("location"), Some("/register/phone"));
    assert_ne!(browser.cookie.as_deref(), Some(before.as_str()));
    // The old id signs no one in.
    assert_eq!(planted.get("/account").header("location"), Some("/login"));
    let account = browser.get("/account");
    assert_eq!(account.element("signed-in"), Some("Signed in as alice"));

    // Taken, whatever the case; the name is kept, the password is not.
    let mut other = Browser::new(&portal);
    let taken = register(&mut other, "ALICE");
    assert_eq!(taken.status, 422);
    assert_eq!(
        taken.element("error-account"),
        Some("this account name is taken")
    );
    assert!(taken.body.contains(r#"value="alice""#));
    assert!(!taken.body.contains(PASSWORD));

    // Wrong passwords and unknown accounts answer alike.
    let login = other.get("/login");
    let wrong = other.post(
        &login,
        "/login",
        &[("account", "alice"), ("password", "not the password")],
    );
    let login = other.get("/login");
    let unknown = other.post(
        &login,
        "/login",
        &[("account", "nobody"), ("password", "not the password")],
    );
    assert_eq!(
        wrong.element("error"),
        Some("Wrong account name or password.")
    );
    assert_eq!(unknown.element("error"), wrong.element("error"));
}

/// Runs the reset flow for `name` up to a code check, and answers the
/// method page and the check.
fn reset_to_check(portal: &Portal, name: &str) -> (Reply, Reply, Reply) {
    let mut browser = Browser::new(portal);
    let page = browser.get("/reset");
    let question = page
        .element("challenge-question")
        .expect("a question")
        .to_owned();
    let words: Vec<&str> = question.split(' ').collect();
    let sum: u32 = words[2].parse::<u32>().expect("a")
        + words[4].trim_end_matches('?').parse::<u32>().expect("b");
    let next = browser.post(
        &page,
        "/reset",
        &[("account", name), ("challenge", &sum.to_string())],
    );
    assert_eq!(next.header("location"), Some("/reset/method"));
    let methods = browser.get("/reset/method");
    let idem = methods.field("idem");
    let sent = browser.post(
        &methods,
        "/reset/method",
        &[
            ("method", "sms"),
            ("confirm", "+1 202 555 0100"),
            ("idem", &idem),
        ],
    );
    assert_eq!(sent.header("location"), Some("/verify"));
    let verify = browser.get("/verify");
    let checked = browser.post(&verify, "/verify", &[("code", "123456")]);
    (methods, verify, checked)
}

#[test]
fn a_reset_tells_nothing_about_the_account() {
    let portal = start();
    register(&mut Browser::new(&portal), "known");
    let (known_methods, known_verify, known_check) = reset_to_check(&portal, "known");
    let (unknown_methods, unknown_verify, unknown_check) = reset_to_check(&portal, "unknown");
    for methods in [&known_methods, &unknown_methods] {
        assert!(methods.body.contains(r#"id="method-sms""#));
        assert!(methods.body.contains(r#"id="method-voice""#));
    }
    // The same visit twice shows the same decoys.
    let (again, _, _) = reset_to_check(&portal, "unknown");
    assert_eq!(
        again.element("method-sms"),
        unknown_methods.element("method-sms")
    );
    for verify in [&known_verify, &unknown_verify] {
        let sent = verify.element("sent-to").expect("sent-to");
        assert!(
            sent.starts_with("If this matches our records, we&#x27;ve sent a code to +"),
            "{sent}"
        );
    }
    for check in [&known_check, &unknown_check] {
        assert_eq!(
            check.element("error"),
            Some("That code isn&#x27;t right. 4 tries left.")
        );
    }
    assert_eq!(known_check.status, unknown_check.status);
}
