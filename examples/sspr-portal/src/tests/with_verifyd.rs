//! Flows that call verifyd, against a real one in dev mode in this process
//! (its console sender's texts, codes included, are read off a buffer):
//! a form sent again after its verification was approved, and the end of
//! the session a password reset leaves behind.

use std::{
    io,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant, SystemTime},
};

use tokio_util::sync::CancellationToken;
use verifyd::{
    app::{Application, Overrides},
    clock::Clock,
    config::Config as VerifydConfig,
    delivery::ConsoleSender,
};

use super::{Browser, PASSWORD, Portal, Reply, register, reset_account, start_with};

const NATIONAL: &str = "4155550142";
const PHONE: &str = "+14155550142";
const NEW_PASSWORD: &str = "staple mountain river";

/// What verifyd's console printed.
#[derive(Clone, Default)]
struct Console(Arc<Mutex<String>>);

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

/// verifyd in dev mode (no tenants: every caller is `default`), on a
/// runtime of its own, with a clock the test moves.
struct Verifyd {
    url: String,
    console: Console,
    clock: Clock,
    stop: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Verifyd {
    fn start() -> Self {
        let config = VerifydConfig::from_toml_str(
            r#"
dev_mode = true

[server]
grpc_addr = "127.0.0.1:0"
admin_addr = "127.0.0.1:0"

[webhooks]
addr = "127.0.0.1:0"
"#,
        )
        .expect("verifyd's config");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let console = Console::default();
        let clock = Clock::manual(SystemTime::now());
        let overrides = Overrides {
            clock: Some(clock.clone()),
            console: Some(ConsoleSender::to_writer(console.clone())),
        };
        let app = runtime
            .block_on(Application::build_with(config, overrides))
            .expect("verifyd builds");
        let url = format!("http://{}", app.grpc_addr());
        let stop = app.shutdown_token();
        runtime.spawn(async move { app.run_until_stopped().await.expect("verifyd runs") });
        Verifyd {
            url,
            console,
            clock,
            stop,
            _runtime: runtime,
        }
    }

    /// The code in the `nth` (from 1) text to `to`.
    fn texted_code(&self, to: &str, nth: usize) -> String {
        let needle = format!(" to={to} ");
        let began = Instant::now();
        loop {
            let found = {
                let console = self.console.0.lock().expect("console");
                console
                    .lines()
                    .filter(|l| l.contains("channel=sms") && l.contains(&needle))
                    .nth(nth - 1)
                    .and_then(|line| line.split(" code=").nth(1)?.split_whitespace().next())
                    .map(str::to_owned)
            };
            if let Some(code) = found {
                return code;
            }
            assert!(began.elapsed() < Duration::from_secs(20), "no text arrived");
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Verifyd {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Registers `name` and enrolls the test phone by text; answers the phone
/// form's page and the form sent, for sending it again.
fn enrolled(verifyd: &Verifyd, portal: &Portal, name: &str) -> (Browser, Reply, String) {
    let mut browser = Browser::new(portal);
    assert_eq!(
        register(&mut browser, name).header("location"),
        Some("/register/phone")
    );
    let page = browser.get("/register/phone");
    let idem = page.field("idem");
    let form = [
        ("region", "US"),
        ("number", NATIONAL),
        ("channel", "sms"),
        ("idem", &idem),
    ];
    let sent = browser.post(&page, "/register/phone", &form);
    assert_eq!(sent.header("location"), Some("/verify"));
    let verify = browser.get("/verify");
    let code = verifyd.texted_code(PHONE, 1);
    let done = browser.post(&verify, "/verify", &[("code", &code)]);
    assert_eq!(done.header("location"), Some("/register/email"));
    (browser, page, idem)
}

#[test]
fn a_form_sent_again_does_not_take_its_approved_verification() {
    let verifyd = Verifyd::start();
    let portal = start_with(&verifyd.url);
    let (mut browser, page, idem) = enrolled(&verifyd, &portal, "alice");
    // The same form, the same `idem` (the back button, a late double
    // submit): verifyd answers the first start's verification, approved.
    let form = [
        ("region", "US"),
        ("number", NATIONAL),
        ("channel", "sms"),
        ("idem", &idem),
    ];
    let again = browser.post(&page, "/register/phone", &form);
    assert_eq!(again.status, 422);
    assert_eq!(
        again.element("error"),
        Some("This form was already sent. Start again.")
    );
    // Nothing was kept: there is no verification to finish.
    assert_eq!(browser.get("/verify").header("location"), Some("/"));
}

#[test]
fn a_reset_ends_its_session() {
    let verifyd = Verifyd::start();
    let portal = start_with(&verifyd.url);
    let (mut browser, _, _) = enrolled(&verifyd, &portal, "alice");
    // Past the least gap between two verifications of one number.
    verifyd.clock.advance(Duration::from_secs(3600));
    reset_account(&mut browser, "alice");
    let methods = browser.get("/reset/method");
    let idem = methods.field("idem");
    let form = [
        ("method", "sms"),
        ("confirm", "+1 415 555 0142"),
        ("idem", &idem),
    ];
    let sent = browser.post(&methods, "/reset/method", &form);
    assert_eq!(sent.header("location"), Some("/verify"));
    let verify = browser.get("/verify");
    assert!(
        verify
            .element("sent-to")
            .is_some_and(|s| s.ends_with("a code to +•••••••••42.")),
        "{verify:?}"
    );
    let code = verifyd.texted_code(PHONE, 2);
    let approved = browser.post(&verify, "/verify", &[("code", &code)]);
    assert_eq!(approved.header("location"), Some("/reset/password"));
    let page = browser.get("/reset/password");
    let before = browser.cookie.clone();
    let new = [("password", NEW_PASSWORD), ("password2", NEW_PASSWORD)];
    let reset = browser.post(&page, "/reset/password", &new);
    assert_eq!(reset.header("location"), Some("/reset/done"));
    // A new, empty session: signed out, nothing left of the reset.
    assert_ne!(browser.cookie, before);
    assert_eq!(browser.get("/account").header("location"), Some("/login"));
    assert_eq!(
        browser.get("/reset/password").header("location"),
        Some("/reset")
    );
    // The forms of the session that reset are dead, the method form too.
    assert_eq!(browser.post(&page, "/reset/password", &new).status, 403);
    assert_eq!(browser.post(&methods, "/reset/method", &form).status, 403);
    let mut old = Browser {
        addr: portal.addr,
        cookie: before,
    };
    assert_eq!(
        old.get("/reset/password").header("location"),
        Some("/reset")
    );
    // The new password signs in; the old one does not.
    let login = browser.get("/login");
    let wrong = browser.post(
        &login,
        "/login",
        &[("account", "alice"), ("password", PASSWORD)],
    );
    assert_eq!(wrong.status, 422);
    let login = browser.get("/login");
    let right = browser.post(
        &login,
        "/login",
        &[("account", "alice"), ("password", NEW_PASSWORD)],
    );
    assert_eq!(right.header("location"), Some("/account"));
}
