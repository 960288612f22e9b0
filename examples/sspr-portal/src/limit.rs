//! A per-client-IP limit on the forms anyone may send over and over to
//! learn about accounts: registration must say "this account name is
//! taken", and every reset start makes a session and a decoy. verifyd
//! limits what it sends and checks, not how often these pages are used.
//!
//! In memory and per process, like the sessions: a demo. A real deployment
//! limits at its edge and in a shared store, per account name as well.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::Mutex,
    time::{Duration, Instant},
};

/// Attempts one client may make per window, on each limited form.
pub const ATTEMPTS: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// Clients tracked at most per form: past this, the oldest window goes
/// first, so a flood of addresses costs memory up to here and no more.
pub const MAX_CLIENTS: usize = 10_000;

/// Where a client's window started, and how many attempts it holds.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

/// A fixed window of attempts per client address.
#[derive(Debug)]
pub struct PerClient {
    map: Mutex<HashMap<IpAddr, Window>>,
    attempts: u32,
    window: Duration,
    max_clients: usize,
}

impl Default for PerClient {
    fn default() -> Self {
        PerClient::new(ATTEMPTS, WINDOW, MAX_CLIENTS)
    }
}

/// The key a client counts under. An IPv6 client usually holds a whole
/// /64, so that is one client; an IPv4-mapped address is its IPv4 one.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl PerClient {
    pub fn new(attempts: u32, window: Duration, max_clients: usize) -> Self {
        PerClient {
            map: Mutex::new(HashMap::new()),
            attempts,
            window,
            max_clients: max_clients.max(1),
        }
    }

    /// Counts one attempt from `ip`: Ok, or Err with how long until the
    /// client may try again. A refused attempt does not count.
    pub fn attempt(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        // A panic while holding the lock leaves counters behind, nothing
        // that matters more than a limit briefly off: carry on.
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let key = client_key(ip);
        if !map.contains_key(&key) {
            self.make_room(&mut map, now);
        }
        let window = map.entry(key).or_insert(Window {
            started: now,
            attempts: 0,
        });
        let ends = window.started + self.window;
        if now >= ends {
            *window = Window {
                started: now,
                attempts: 0,
            };
        } else if window.attempts >= self.attempts {
            return Err(ends - now);
        }
        window.attempts += 1;
        Ok(())
    }

    /// Drops windows that are over, then, if still full, the oldest. A
    /// scan, like the sessions': fine for a demo's ten thousand.
    fn make_room(&self, map: &mut HashMap<IpAddr, Window>, now: Instant) {
        if map.len() < self.max_clients {
            return;
        }
        map.retain(|_, w| now < w.started + self.window);
        while map.len() >= self.max_clients {
            let oldest = map.iter().min_by_key(|(_, w)| w.started).map(|(k, _)| *k);
            match oldest {
                Some(key) => map.remove(&key),
                None => break,
            };
        }
    }
}

/// "Too many attempts. Try again in 7 minutes." Whole minutes, rounded up.
pub fn wording(wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    let unit = if minutes == 1 { "minute" } else { "minutes" };
    format!("Too many attempts. Try again in {minutes} {unit}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn a_client_gets_its_attempts_per_window() {
        let limit = PerClient::new(3, Duration::from_secs(600), 10);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        for s in 0..3 {
            assert_eq!(limit.attempt(ip("192.0.2.1"), at(s)), Ok(()));
        }
        assert_eq!(
            limit.attempt(ip("192.0.2.1"), at(100)),
            Err(Duration::from_secs(500))
        );
        // Another client is counted apart.
        assert_eq!(limit.attempt(ip("192.0.2.2"), at(100)), Ok(()));
        // A new window, a new count.
        assert_eq!(limit.attempt(ip("192.0.2.1"), at(600)), Ok(()));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_address_its_ipv4() {
        let limit = PerClient::new(1, Duration::from_secs(600), 10);
        let now = Instant::now();
        assert_eq!(limit.attempt(ip("2001:db8:1:2::1"), now), Ok(()));
        assert!(limit.attempt(ip("2001:db8:1:2:ffff::9"), now).is_err());
        assert_eq!(limit.attempt(ip("2001:db8:1:3::1"), now), Ok(()));
        assert_eq!(limit.attempt(ip("192.0.2.7"), now), Ok(()));
        assert!(limit.attempt(ip("::ffff:192.0.2.7"), now).is_err());
    }

    #[test]
    fn the_map_is_bounded() {
        let limit = PerClient::new(1, Duration::from_secs(600), 2);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(limit.attempt(ip("192.0.2.1"), at(0)), Ok(()));
        assert_eq!(limit.attempt(ip("192.0.2.2"), at(1)), Ok(()));
        assert_eq!(limit.attempt(ip("192.0.2.3"), at(2)), Ok(()));
        let map = limit.map.lock().expect("lock");
        assert_eq!(map.len(), 2);
        // The oldest went first.
        assert!(!map.contains_key(&ip("192.0.2.1")));
    }

    #[test]
    fn the_wait_is_said_in_whole_minutes() {
        assert_eq!(
            wording(Duration::from_secs(1)),
            "Too many attempts. Try again in 1 minute."
        );
        assert_eq!(
            wording(Duration::from_secs(61)),
            "Too many attempts. Try again in 2 minutes."
        );
        assert_eq!(
            wording(Duration::from_secs(600)),
            "Too many attempts. Try again in 10 minutes."
        );
    }
}
