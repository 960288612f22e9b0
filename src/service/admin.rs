//! What operators do by hand, through the admin API (`grpc::admin`):
//! lifting a block before it runs out, keeping a tenant's safe-list, and a
//! helpdesk's look at a destination's recent verifications. Every call is
//! audited (`admin_action`), naming the operator by its token's digest.

use super::{Verifier, send::mask_prefix};
use crate::{
    domain::{Destination, TenantId, Verification},
    store::{Blocked, BudgetKey, SafeListed, StoreError},
};

/// The most verifications a listing returns.
pub const MAX_LISTED: usize = 50;

/// A safe-list entry, as an operator names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SafeEntry {
    /// A phone number.
    Number(Destination),
    /// A number prefix: `+` and 5 to 14 digits.
    Prefix(String),
}

impl SafeEntry {
    /// The fewest digits a safe-listed prefix has: a calling code and more
    /// (`+1` would exempt a whole country from the pumping guard).
    pub const MIN_PREFIX_DIGITS: usize = 5;

    /// A prefix as the safe-list takes it: `+` and 5 to 14 digits.
    pub fn prefix(input: &str) -> Option<Self> {
        let digits = input.strip_prefix('+')?;
        ((Self::MIN_PREFIX_DIGITS..=14).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| Self::Prefix(input.to_owned()))
    }

    fn masked(&self) -> String {
        match self {
            Self::Number(to) => to.masked(),
            Self::Prefix(prefix) => mask_prefix(prefix),
        }
    }
}

/// What a block holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockScope {
    /// The destination itself, after a fraud report on a call.
    Destination,
    /// The destination's number prefix, after SMS pumping tripped its
    /// budget.
    Prefix,
}

impl BlockScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Destination => "destination",
            Self::Prefix => "prefix",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such tenant is configured")]
    UnknownTenant,
    #[error("a prefix block holds back phone numbers only")]
    NotAPhone,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Verifier {
    /// Safe-lists (`listed`) an entry for `tenant`, or takes it off.
    /// Returns whether that changed the list. This replica sees the change
    /// at once, the others within `safe_list::FRESH_FOR`.
    ///
    /// # Errors
    /// An unknown tenant, or the store.
    pub async fn set_safe_listed(
        &self,
        operator: &str,
        tenant: &TenantId,
        entry: &SafeEntry,
        listed: bool,
    ) -> Result<bool, AdminError> {
        if !self.knows_tenant(tenant) {
            return Err(AdminError::UnknownTenant);
        }
        let stored = match entry {
            SafeEntry::Number(to) => SafeListed::Number(to),
            SafeEntry::Prefix(prefix) => SafeListed::Prefix(prefix),
        };
        let changed = self.store.set_safe_listed(tenant, stored, listed).await?;
        self.safe_lists.forget(tenant);
        tracing::warn!(
            target: "verifyd::audit",
            event = "admin_action",
            action = if listed { "safe_list_add" } else { "safe_list_remove" },
            operator,
            tenant = tenant.as_str(),
            entry = entry.masked().as_str(),
            changed,
            "an operator changed a safe-list"
        );
        Ok(changed)
    }

    /// The destination's newest verifications for a helpdesk, newest
    /// first, at most `limit` ([`MAX_LISTED`]).
    ///
    /// # Errors
    /// An unknown tenant, or the store.
    pub async fn recent_verifications(
        &self,
        operator: &str,
        tenant: &TenantId,
        to: &Destination,
        limit: usize,
    ) -> Result<Vec<Verification>, AdminError> {
        if !self.knows_tenant(tenant) {
            return Err(AdminError::UnknownTenant);
        }
        let found = self
            .store
            .recent_of(tenant, to, limit.min(MAX_LISTED), self.clock.now())
            .await?;
        tracing::info!(
            target: "verifyd::audit",
            event = "admin_action",
            action = "list_verifications",
            operator,
            tenant = tenant.as_str(),
            destination = to.masked().as_str(),
            found = found.len(),
            "an operator listed a destination's verifications"
        );
        Ok(found)
    }

    /// Whether `tenant` is one this server serves: a configured tenant, or
    /// `default` on a server without tenants.
    pub fn knows_tenant(&self, tenant: &TenantId) -> bool {
        self.settings.tenants.knows(tenant)
    }

    /// Lifts `tenant`'s block on `to` (or on its number prefix). Returns
    /// whether one was in force. A prefix's start and send budgets start
    /// full again with it: the budget that tripped the block would trip it
    /// again at the next start.
    ///
    /// # Errors
    /// An unknown tenant, a prefix scope for an email address, or the
    /// store.
    pub async fn lift_block(
        &self,
        operator: &str,
        tenant: &TenantId,
        to: &Destination,
        scope: BlockScope,
    ) -> Result<bool, AdminError> {
        if !self.knows_tenant(tenant) {
            return Err(AdminError::UnknownTenant);
        }
        let now = self.clock.now();
        let lifted = match (scope, to) {
            (BlockScope::Destination, _) => {
                self.store
                    .unblock(tenant, Blocked::Destination(to), now)
                    .await?
            }
            (BlockScope::Prefix, Destination::Phone(phone)) => {
                self.store
                    .unblock(tenant, Blocked::Prefix(phone.prefix()), now)
                    .await?
            }
            (BlockScope::Prefix, Destination::Email(_)) => return Err(AdminError::NotAPhone),
        };
        // On the record before anything else can fail.
        tracing::warn!(
            target: "verifyd::audit",
            event = "admin_action",
            action = "lift_block",
            operator,
            tenant = tenant.as_str(),
            scope = scope.as_str(),
            destination = to.masked().as_str(),
            lifted,
            "an operator lifted a block"
        );
        if let (BlockScope::Prefix, Destination::Phone(phone)) = (scope, to) {
            let prefix = phone.prefix();
            for key in [BudgetKey::Prefix(prefix), BudgetKey::PrefixSends(prefix)] {
                self.store.refill_budget(tenant, key).await?;
            }
        }
        Ok(lifted)
    }
}
