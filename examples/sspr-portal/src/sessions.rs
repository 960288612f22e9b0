//! Server-side sessions: the browser holds only a random id in a cookie;
//! everything else (who is signed in, the pending verification's id, the
//! reset step) stays here. In memory, like the accounts: a demo.

mod csrf;

use std::{
    collections::HashMap,
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use rand::Rng as _;

pub use csrf::CsrfToken;

/// Signed-in or not, a session unused this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Sessions kept at most; a new one past this evicts the least recently
/// used, so a flood of new sessions costs memory up to here and no more.
pub const MAX_SESSIONS: usize = 10_000;

/// 32 random bytes, hex: the session id, the CSRF token, idempotency
/// prefixes. From the thread-local CSPRNG (ChaCha, seeded from the OS).
pub fn random_hex() -> String {
    hex::encode(rand::rng().random::<[u8; 32]>())
}

/// A session id. Never logged: it is the session.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionId(String);

impl SessionId {
    fn new() -> Self {
        SessionId(random_hex())
    }

    /// The id a cookie carries, if it has the shape of one.
    pub fn parse(value: &str) -> Option<Self> {
        (value.len() == 64
            && value
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| SessionId(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(<redacted>)")
    }
}

/// One session: its CSRF token, and the application's data `T`.
#[derive(Debug)]
pub struct Entry<T> {
    pub csrf: CsrfToken,
    /// Prefixes every idempotency key this session sends to verifyd. A key
    /// is only unique per session if no other session can send it: the form
    /// carries only the random suffix, and a suffix copied from another
    /// session's page makes a different key here.
    pub idempotency_prefix: String,
    last_seen: Instant,
    pub data: T,
}

/// The sessions, keyed by id.
#[derive(Debug)]
pub struct Sessions<T> {
    map: Mutex<HashMap<SessionId, Entry<T>>>,
    idle_timeout: Duration,
    max: usize,
}

impl<T: Default> Sessions<T> {
    pub fn new(idle_timeout: Duration, max: usize) -> Self {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle_timeout,
            max: max.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry<T>>> {
        // A panic while holding the lock leaves plain data behind, nothing
        // half-written that matters more than a lost session: carry on.
        self.map
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the session is live; marks it used. An idle one is removed.
    pub fn touch(&self, id: &SessionId, now: Instant) -> bool {
        let mut map = self.lock();
        match map.get_mut(id) {
            Some(entry) if now.duration_since(entry.last_seen) <= self.idle_timeout => {
                entry.last_seen = now;
                true
            }
            Some(_) => {
                map.remove(id);
                false
            }
            None => false,
        }
    }

    /// A new, empty session.
    pub fn create(&self, now: Instant) -> SessionId {
        let id = SessionId::new();
        let entry = Entry {
            csrf: CsrfToken::new(),
            idempotency_prefix: random_hex(),
            last_seen: now,
            data: T::default(),
        };
        let mut map = self.lock();
        self.make_room(&mut map, now);
        map.insert(id.clone(), entry);
        id
    }

    /// Drops idle sessions, then, if still full, the least recently used.
    /// A scan: fine for a demo's ten thousand; a real store expires keys.
    fn make_room(&self, map: &mut HashMap<SessionId, Entry<T>>, now: Instant) {
        if map.len() < self.max {
            return;
        }
        map.retain(|_, e| now.duration_since(e.last_seen) <= self.idle_timeout);
        while map.len() >= self.max {
            let oldest = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => map.remove(&id),
                None => break,
            };
        }
    }

    /// Runs `f` on the session, if it exists.
    pub fn with<R>(&self, id: &SessionId, f: impl FnOnce(&mut Entry<T>) -> R) -> Option<R> {
        self.lock().get_mut(id).map(f)
    }

    /// Moves the session to a new id with a new CSRF token, against session
    /// fixation: an id someone planted or saw before the user signed in (or
    /// passed a reset check) is worth nothing after it. The idempotency
    /// prefix changes too: verifyd answers a repeated key with the first
    /// start's verification as it stands now, approved perhaps, so a form
    /// sent again after the step must not name that verification.
    pub fn rotate(&self, id: &SessionId) -> Option<SessionId> {
        let mut map = self.lock();
        let mut entry = map.remove(id)?;
        entry.csrf = CsrfToken::new();
        entry.idempotency_prefix = random_hex();
        let new_id = SessionId::new();
        map.insert(new_id.clone(), entry);
        Some(new_id)
    }

    pub fn remove(&self, id: &SessionId) {
        self.lock().remove(id);
    }

    /// Ends every session whose data matches, e.g. every session signed in
    /// to an account whose password was just reset.
    pub fn remove_where(&self, matches: impl Fn(&T) -> bool) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, e| !matches(&e.data));
        before - map.len()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(max: usize) -> Sessions<u32> {
        Sessions::new(IDLE_TIMEOUT, max)
    }

    #[test]
    fn an_idle_session_is_gone() {
        let sessions = store(10);
        let t0 = Instant::now();
        let id = sessions.create(t0);
        assert!(sessions.touch(&id, t0 + Duration::from_secs(60)));
        assert!(sessions.touch(&id, t0 + Duration::from_secs(60) + IDLE_TIMEOUT));
        assert!(!sessions.touch(&id, t0 + Duration::from_secs(61) + 2 * IDLE_TIMEOUT));
        assert!(sessions.is_empty());
    }

    #[test]
    fn the_least_recently_used_is_evicted_at_the_cap() {
        let sessions = store(2);
        let t0 = Instant::now();
        let a = sessions.create(t0);
        let b = sessions.create(t0 + Duration::from_secs(1));
        assert!(sessions.touch(&a, t0 + Duration::from_secs(2)));
        let c = sessions.create(t0 + Duration::from_secs(3));
        assert_eq!(sessions.len(), 2);
        let now = t0 + Duration::from_secs(4);
        assert!(sessions.touch(&a, now));
        assert!(!sessions.touch(&b, now));
        assert!(sessions.touch(&c, now));
    }

    #[test]
    fn rotation_moves_the_data_and_changes_the_token_and_prefix() {
        let sessions = store(10);
        let id = sessions.create(Instant::now());
        let (token, prefix) = sessions
            .with(&id, |e| {
                e.data = 7;
                (e.csrf.clone(), e.idempotency_prefix.clone())
            })
            .expect("live");
        let new_id = sessions.rotate(&id).expect("live");
        assert_ne!(id, new_id);
        assert_eq!(sessions.with(&id, |e| e.data), None);
        assert_eq!(sessions.with(&new_id, |e| e.data), Some(7));
        assert_eq!(
            sessions.with(&new_id, |e| e.csrf.matches(token.as_str())),
            Some(false)
        );
        assert_eq!(
            sessions.with(&new_id, |e| e.idempotency_prefix == prefix),
            Some(false)
        );
    }

    #[test]
    fn remove_where_ends_matching_sessions() {
        let sessions = store(10);
        let now = Instant::now();
        let ids: Vec<_> = (0..4).map(|_| sessions.create(now)).collect();
        for (n, id) in (0u32..).zip(&ids) {
            sessions.with(id, |e| e.data = n % 2);
        }
        assert_eq!(sessions.remove_where(|d| *d == 1), 2);
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn ids_are_checked_for_shape() {
        let id = SessionId::new();
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(SessionId::parse("abc"), None);
        assert_eq!(SessionId::parse(&id.as_str().to_uppercase()), None);
        assert!(!format!("{id:?}").contains(id.as_str()));
    }
}
