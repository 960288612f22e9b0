//! The session cookie and the per-request handle on the session.
//!
//! A session is made only when a page needs one (a form, a flow's state),
//! never for a bare visit. Its id goes out in `__Host-sspr-session`:
//! `__Host-` makes the browser refuse it unless it is Secure, has no Domain
//! and has Path=/, so no subdomain can plant one; HttpOnly keeps it from
//! scripts; SameSite=Strict keeps it off requests other sites start.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use axum::{
    extract::{Request, State},
    http::{
        HeaderMap, HeaderValue,
        header::{COOKIE, SET_COOKIE},
    },
    middleware::Next,
    response::Response,
};

use crate::{
    AppState,
    flow::SessionData,
    sessions::{SessionId, Sessions},
};

pub const COOKIE_NAME: &str = "__Host-sspr-session";
const ATTRIBUTES: &str = "Path=/; Secure; HttpOnly; SameSite=Strict";

/// This request's session, if it has one, and the means to make, rotate
/// or end it. The cookie is set from it once the handler has answered.
#[derive(Debug, Clone)]
pub struct Session {
    store: Arc<Sessions<SessionData>>,
    id: Arc<Mutex<Option<SessionId>>>,
}

impl Session {
    /// A handle on the session `id` of `store`, or on none yet.
    pub fn new(store: Arc<Sessions<SessionData>>, id: Option<SessionId>) -> Self {
        Session {
            store,
            id: Arc::new(Mutex::new(id)),
        }
    }

    fn id(&self) -> MutexGuard<'_, Option<SessionId>> {
        self.id
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn current(&self) -> Option<SessionId> {
        self.id().clone()
    }

    /// Makes the session if there is none yet.
    pub fn ensure(&self) {
        let mut id = self.id();
        if id.is_none() {
            *id = Some(self.store.create(Instant::now()));
        }
    }

    /// Runs `f` on the session's data, if there is a session.
    pub fn with<R>(&self, f: impl FnOnce(&mut SessionData) -> R) -> Option<R> {
        let id = self.current()?;
        self.store.with(&id, |entry| f(&mut entry.data))
    }

    /// The CSRF token to put in forms (making the session if needed).
    pub fn csrf_token(&self) -> String {
        self.ensure();
        let id = self.current();
        id.and_then(|id| self.store.with(&id, |e| e.csrf.as_str().to_owned()))
            .unwrap_or_default()
    }

    pub fn csrf_matches(&self, given: &str) -> bool {
        self.current()
            .and_then(|id| self.store.with(&id, |e| e.csrf.matches(given)))
            .unwrap_or(false)
    }

    /// The idempotency key for a form's random `idem` value: this
    /// session's own prefix and the value, so another session's page can
    /// never name this session's verification. None for a value that is
    /// not the 32 hex digits the form was given.
    pub fn idempotency_key(&self, idem: &str) -> Option<String> {
        let well_formed = idem.len() == 32 && idem.bytes().all(|b| b.is_ascii_hexdigit());
        if !well_formed {
            return None;
        }
        let id = self.current()?;
        self.store
            .with(&id, |e| format!("{}-{idem}", e.idempotency_prefix))
    }

    /// The signed-in account's name.
    pub fn account(&self) -> Option<String> {
        self.with(|d| d.account.clone()).flatten()
    }

    /// A new id for the same session (sign-in, registration, a passed
    /// reset check): whatever id anyone saw before is worth nothing now.
    pub fn rotate(&self) {
        let mut id = self.id();
        if let Some(old) = id.as_ref() {
            *id = self.store.rotate(old);
        }
    }

    /// Ends the session; the cookie is cleared.
    pub fn end(&self) {
        if let Some(old) = self.id().take() {
            self.store.remove(&old);
        }
    }

    /// Ends the session and starts a new, empty one under a new id: after a
    /// password reset nothing of the flow (its approval, its verification,
    /// whoever was signed in) outlives it.
    pub fn restart(&self) {
        self.end();
        self.ensure();
    }
}

fn cookie_id(headers: &HeaderMap) -> Option<Option<SessionId>> {
    let value = headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .find_map(|pair| pair.trim().strip_prefix(COOKIE_NAME)?.strip_prefix('='))?;
    Some(SessionId::parse(value))
}

/// Finds the request's session (an idle or unknown id counts as none),
/// hands the handler a `Session`, and sets or clears the cookie if the
/// handler made, rotated or ended it.
pub async fn session_layer(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let sent = cookie_id(request.headers());
    let incoming = sent
        .clone()
        .flatten()
        .filter(|id| app.sessions.touch(id, Instant::now()));
    let session = Session::new(Arc::clone(&app.sessions), incoming.clone());
    request.extensions_mut().insert(session.clone());
    let mut response = next.run(request).await;
    let outgoing = session.current();
    let cookie = match &outgoing {
        Some(id) if outgoing != incoming => {
            Some(format!("{COOKIE_NAME}={}; {ATTRIBUTES}", id.as_str()))
        }
        // Ended, or the browser sent one that is no longer valid.
        None if sent.is_some() => Some(format!("{COOKIE_NAME}=; {ATTRIBUTES}; Max-Age=0")),
        _ => None,
    };
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others() {
        let id = "ab".repeat(32);
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_str(&format!("theme=dark; {COOKIE_NAME}={id}; x=1")).expect("ascii"),
        );
        assert_eq!(
            cookie_id(&headers).flatten().map(|i| i.as_str().to_owned()),
            Some(id)
        );
        let mut bad = HeaderMap::new();
        bad.insert(COOKIE, HeaderValue::from_static("__Host-sspr-session=zz"));
        assert!(matches!(cookie_id(&bad), Some(None)));
        assert!(cookie_id(&HeaderMap::new()).is_none());
    }
}
