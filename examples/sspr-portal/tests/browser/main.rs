//! The SSPR journey in a real browser: headless Chromium (Debian's
//! `chromium`, driven through `chromium-driver` over WebDriver) uses the
//! portal, which calls a real verifyd in dev mode with an API key. Texts
//! are read off verifyd's console, email arrives at a real SMTP server on
//! loopback, and calls ring dev mode's simulated phone, answered in a
//! second browser window. Each step's screenshot lands in
//! `target/browser-tests/`.
//!
//! Without Chromium, its driver or Python's aiosmtpd the tests fail and
//! say what to install (`./scripts/test` installs all three).

mod browser;
mod journeys;
mod stack;
