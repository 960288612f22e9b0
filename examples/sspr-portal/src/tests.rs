//! The portal served for real on a loopback port and driven over HTTP/1.1:
//! the security headers, the cookie, the CSRF check, session rotation, the
//! per-client limits, and the reset flow's answers when nothing is sent
//! (an unknown account, or a known one with a number that is not its
//! own). verifyd's address is a closed port: the flows tested here never
//! call it (a call would show "We couldn't reach the messaging service").
//! `with_verifyd` runs the flows that do, against a real verifyd.

mod with_verifyd;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    thread,
};

use tokio::sync::{oneshot, watch};

use crate::{App, AppState, Config, phone::Phone, run};

struct Portal {
    addr: SocketAddr,
    /// The portal's state, for seeding accounts and looking at them.
    app: AppState,
    _stop: oneshot::Sender<()>,
}

/// Serves a portal whose verifyd is `verifyd`, on a runtime of its own.
fn start_with(verifyd: &str) -> Portal {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let (ready, app) = std::sync::mpsc::channel();
    let config = Config::new(addr, verifyd, None);
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let (shut, shutting) = watch::channel(false);
            let app = Arc::new(App::new(&config, shutting).await.expect("the app"));
            ready.send(Arc::clone(&app)).expect("ready");
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let shutdown = async move {
                let _ = stopped.await;
                let _ = shut.send(true);
            };
            run(app, listener, shutdown).await.expect("serve");
        });
    });
    let app = app.recv().expect("the app");
    Portal {
        addr,
        app,
        _stop: stop,
    }
}

fn start() -> Portal {
    start_with("http://127.0.0.1:9")
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

    /// The body with every hidden `csrf` and `idem` value blanked: what
    /// two visits' pages may differ in.
    fn normalized(&self) -> String {
        let mut body = self.body.clone();
        for name in ["csrf", "idem"] {
            let marker = format!(r#"name="{name}" value=""#);
            let mut from = 0;
            while let Some(at) = body[from..].find(&marker) {
                let start = from + at + marker.len();
                let end = body[start..].find('"').map_or(body.len(), |e| start + e);
                body.replace_range(start..end, "");
                from = start;
            }
        }
        body
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

/// Answers the reset flow's question for `name`; the session then stands
/// at the method page.
fn reset_account(browser: &mut Browser, name: &str) -> Reply {
    let page = browser.get("/reset");
    let question = page
        .element("challenge-question")
        .expect("a question")
        .to_owned();
    let words: Vec<&str> = question.split(' ').collect();
    let sum: u32 = words[2].parse::<u32>().expect("a")
        + words[4].trim_end_matches('?').parse::<u32>().expect("b");
    browser.post(
        &page,
        "/reset",
        &[("account", name), ("challenge", &sum.to_string())],
    )
}

/// Runs the reset flow for `name` up to the verification page, choosing
/// `method` and typing `confirm`; answers the method page and that page.
fn reset_to_verify(
    browser: &mut Browser,
    name: &str,
    method: &str,
    confirm: &str,
) -> (Reply, Reply) {
    let next = reset_account(browser, name);
    assert_eq!(next.header("location"), Some("/reset/method"));
    let methods = browser.get("/reset/method");
    let idem = methods.field("idem");
    let sent = browser.post(
        &methods,
        "/reset/method",
        &[("method", method), ("confirm", confirm), ("idem", &idem)],
    );
    assert_eq!(sent.header("location"), Some("/verify"), "{sent:?}");
    let verify = browser.get("/verify");
    (methods, verify)
}

/// The reset flow for `name` by `method`, up to a wrong code (or, for a
/// call, the page after it): the method page, the code page, the check.
fn reset_to_check(portal: &Portal, name: &str, method: &str, confirm: &str) -> [Reply; 3] {
    let mut browser = Browser::new(portal);
    let (methods, verify) = reset_to_verify(&mut browser, name, method, confirm);
    let checked = browser.post(&verify, "/verify", &[("code", "123456")]);
    [methods, verify, checked]
}

/// A known account with both methods enrolled: what a reset may not tell
/// apart from an unknown name.
fn seed_known(portal: &Portal, name: &str) {
    let accounts = &portal.app.accounts;
    accounts
        .create(name, "not-a-hash".to_owned())
        .expect("a new name");
    accounts.update(name, |a| {
        a.phone = Some(Phone::parse("US", "4155550142").expect("a number"));
        a.email = Some(format!("{name}@contoso.example"));
    });
}

#[test]
fn a_reset_tells_nothing_about_the_account() {
    let portal = start();
    seed_known(&portal, "known");
    let tries = [
        ("sms", "+1 202 555 0100"),
        ("voice", "(202) 555-0100"),
        ("email", "someone@example.org"),
    ];
    for (method, confirm) in tries {
        let known = reset_to_check(&portal, "known", method, confirm);
        let unknown = reset_to_check(&portal, "unknown", method, confirm);
        // Byte for byte, but for the forms' tokens.
        for (k, u) in known.iter().zip(&unknown) {
            assert_eq!(k.status, u.status, "{method}");
            assert_eq!(k.normalized(), u.normalized(), "{method}");
        }
        let [methods, verify, _] = &known;
        // Every choice, and nothing of the account's methods.
        for id in ["method-sms", "method-voice", "method-email", "confirm"] {
            assert!(methods.body.contains(&format!(r#"id="{id}""#)), "{id}");
        }
        let page = methods.normalized();
        assert!(!page.contains('•'), "no masked method");
        assert!(!page.contains("42") && !page.contains("contoso"));
        // The code page names what the user typed, masked.
        let typed = verify
            .element("sent-to")
            .or_else(|| verify.element("call-instructions"))
            .expect("where it went");
        let expected = match method {
            "sms" => "we&#x27;ve sent a code to +•••••••••00.",
            "voice" => "we&#x27;re calling ••••••••00.",
            _ => "we&#x27;ve sent a code to s•••@example.org.",
        };
        assert!(
            typed.starts_with("If this matches our records, "),
            "{typed}"
        );
        assert!(typed.contains(expected), "{typed}");
    }
    let [_, _, checked] = reset_to_check(&portal, "unknown", "sms", "+12025550100");
    assert_eq!(
        checked.element("error"),
        Some("That code isn&#x27;t right. 4 tries left.")
    );
}

#[test]
fn the_method_form_is_judged_before_the_account_is_looked_up() {
    let portal = start();
    seed_known(&portal, "known");
    let bad = [
        (vec![("confirm", "+14155550142")], "error-method"),
        (vec![("method", "sms"), ("confirm", "")], "error-confirm"),
        (
            vec![("method", "voice"), ("confirm", "call me")],
            "error-confirm",
        ),
        (
            vec![("method", "email"), ("confirm", "nobody")],
            "error-confirm",
        ),
    ];
    for (form, error) in bad {
        let mut answers = Vec::new();
        for name in ["known", "unknown"] {
            let mut browser = Browser::new(&portal);
            reset_account(&mut browser, name);
            let methods = browser.get("/reset/method");
            let idem = methods.field("idem");
            let mut fields = form.clone();
            fields.push(("idem", &idem));
            let answer = browser.post(&methods, "/reset/method", &fields);
            assert_eq!(answer.status, 422, "{form:?}");
            assert!(answer.element(error).is_some(), "{form:?}");
            answers.push(answer.normalized());
        }
        assert_eq!(answers[0], answers[1], "{form:?}");
    }
    // A bad `idem`, even with the account's own number: refused before
    // anything is sent.
    let mut browser = Browser::new(&portal);
    reset_account(&mut browser, "known");
    let methods = browser.get("/reset/method");
    let answer = browser.post(
        &methods,
        "/reset/method",
        &[
            ("method", "sms"),
            ("confirm", "+14155550142"),
            ("idem", "x"),
        ],
    );
    assert_eq!(
        answer.element("error"),
        Some("This form has expired. Try again.")
    );
}

#[test]
fn a_code_of_the_wrong_shape_is_refused_alike() {
    let portal = start();
    seed_known(&portal, "known");
    for code in ["12345", "12345678901", "12a456"] {
        let mut answers = Vec::new();
        for name in ["known", "unknown"] {
            let mut browser = Browser::new(&portal);
            let (_, verify) = reset_to_verify(&mut browser, name, "sms", "+12025550100");
            let answer = browser.post(&verify, "/verify", &[("code", code)]);
            assert_eq!(
                answer.element("error-code"),
                Some("The code is the 6 to 10 digits we sent you."),
                "{code}"
            );
            answers.push(answer.normalized());
        }
        assert_eq!(answers[0], answers[1], "{code}");
    }
}

#[test]
fn a_password_is_not_reset_without_an_approved_verification() {
    let portal = start();
    seed_known(&portal, "known");
    let hash = || portal.app.accounts.get("known").map(|a| a.password_hash);
    let before = hash();
    let mut browser = Browser::new(&portal);
    // Before any method, and with a code page whose code never came.
    reset_account(&mut browser, "known");
    assert_eq!(
        browser.get("/reset/password").header("location"),
        Some("/reset")
    );
    let (_, verify) = reset_to_verify(&mut browser, "known", "sms", "+12025550100");
    assert_eq!(
        browser.get("/reset/password").header("location"),
        Some("/reset")
    );
    let form = [("password", PASSWORD), ("password2", PASSWORD)];
    let refused = browser.post(&verify, "/reset/password", &form);
    assert_eq!(refused.status, 303);
    assert_eq!(refused.header("location"), Some("/reset"));
    assert_eq!(hash(), before);
}

#[test]
fn completing_a_decoy_authorizes_nothing() {
    let portal = start();
    seed_known(&portal, "known");
    for name in ["known", "unknown"] {
        let mut browser = Browser::new(&portal);
        let (_, verify) = reset_to_verify(&mut browser, name, "voice", "+12025550100");
        assert!(verify.body.contains(r#"id="continue""#));
        let done = browser.post(&verify, "/verify/complete", &[]);
        assert_eq!(done.header("location"), Some("/verify"));
        let page = browser.get("/verify");
        assert_eq!(
            page.element("notice"),
            Some("We haven&#x27;t seen your answer yet.")
        );
        assert_eq!(
            browser.get("/reset/password").header("location"),
            Some("/reset")
        );
        // A GET changes nothing: it only goes back to the page.
        let get = browser.get("/verify/complete");
        assert_eq!(get.status, 303);
        assert_eq!(get.header("location"), Some("/verify"));
        assert_eq!(browser.get("/verify").element("notice"), None);
    }
}

#[test]
fn registration_and_reset_starts_are_limited_per_client() {
    let portal = start();
    let mut browser = Browser::new(&portal);
    let page = browser.get("/register");
    // Passwords that differ: refused without hashing, but counted.
    let form = [
        ("account", "someone"),
        ("password", PASSWORD),
        ("password2", "something else entirely"),
    ];
    for _ in 0..crate::limit::ATTEMPTS {
        assert_eq!(browser.post(&page, "/register", &form).status, 422);
    }
    let refused = browser.post(&page, "/register", &form);
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.element("error"),
        Some("Too many attempts. Try again in 10 minutes.")
    );
    // The reset form counts apart.
    let page = browser.get("/reset");
    let form = [("account", "someone"), ("challenge", "0")];
    for _ in 0..crate::limit::ATTEMPTS {
        assert_eq!(browser.post(&page, "/reset", &form).status, 422);
    }
    let refused = browser.post(&page, "/reset", &form);
    assert_eq!(refused.status, 429);
    assert!(refused.element("challenge-question").is_some());
}
