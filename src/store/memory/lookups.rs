//! The lookup cache: each tenant's numbers' signals, for `[lookup]`'s
//! `cache_ttl`, under a lock of its own. Bounded per tenant (its share of
//! the store): past it the tenant's expired entries go first, and if none
//! have, nothing more is cached for it (a lookup then costs a call, not
//! memory). Entries come only from paid lookups, so the tenant's lookup
//! budget paces how fast its share can fill.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::SystemTime,
};

use crate::domain::{Destination, TenantId, lookup::Signals};

type Entries = HashMap<Destination, (Signals, SystemTime)>;

#[derive(Debug, Default)]
pub(super) struct Lookups(Mutex<HashMap<TenantId, Entries>>);

impl Lookups {
    pub(super) fn get(
        &self,
        tenant: &TenantId,
        to: &Destination,
        now: SystemTime,
    ) -> Option<Signals> {
        let cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .get(tenant)?
            .get(to)
            .filter(|(_, until)| *until > now)
            .map(|(signals, _)| *signals)
    }

    pub(super) fn put(
        &self,
        tenant: &TenantId,
        to: &Destination,
        signals: Signals,
        until: SystemTime,
        now: SystemTime,
        share: usize,
    ) {
        let mut cache = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entries = cache.entry(tenant.clone()).or_default();
        if entries.len() >= share && !entries.contains_key(to) {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= share {
                return;
            }
        }
        entries.insert(to.clone(), (signals, until));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::domain::lookup::LineKind;

    #[test]
    fn signals_are_kept_per_tenant_until_they_expire_and_the_cache_is_bounded() {
        let cache = Lookups::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let a = TenantId::default_tenant();
        let b = TenantId::parse("other").expect("valid");
        let to = |n: u8| Destination::parse(&format!("+1415555010{n}")).expect("valid");
        let signals = Signals {
            line: Some(LineKind::Mobile),
            ..Signals::none(false, t0)
        };
        cache.put(&a, &to(0), signals, t0 + Duration::from_secs(60), t0, 2);
        assert_eq!(cache.get(&a, &to(0), t0), Some(signals));
        assert_eq!(cache.get(&b, &to(0), t0), None, "another tenant's");
        assert_eq!(
            cache.get(&a, &to(0), t0 + Duration::from_secs(60)),
            None,
            "expired"
        );
        cache.put(&a, &to(1), signals, t0 + Duration::from_secs(60), t0, 2);
        cache.put(&a, &to(2), signals, t0 + Duration::from_secs(60), t0, 2);
        assert_eq!(cache.get(&a, &to(2), t0), None, "full: not cached");
        let later = t0 + Duration::from_secs(61);
        cache.put(
            &a,
            &to(2),
            signals,
            later + Duration::from_secs(60),
            later,
            2,
        );
        assert_eq!(
            cache.get(&a, &to(2), later),
            Some(signals),
            "the expired made room"
        );
    }
}
