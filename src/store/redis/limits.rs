//! Blocks (block.lua) and the budgets every replica shares (gcra*.lua):
//! the store port's budget operations.

use std::time::{Duration, SystemTime};

use super::{
    RedisStore,
    record::millis,
    scripts::{Invocation, SCRIPTS, period_millis, quota_args},
};
use crate::{
    domain::{TenantId, limit::Quota},
    store::port::{Blocked, BudgetKey, StoreError},
};

impl RedisStore {
    pub(in crate::store) async fn block(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        until: SystemTime,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.block);
        invocation
            .key(self.inner.keys.block(tenant, what))
            .arg(millis(until))
            .arg(millis(now));
        // Waited for like any change a user is told of; one the replicas
        // did not acknowledge still stands (and is counted in the store
        // metrics): the user has been told the report is taken.
        self.run_durably::<u8>("block", invocation).await.map(drop)
    }

    /// Lifts a block: `true` when one was in force.
    pub(in crate::store) async fn unblock(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let until = self.blocked_until(tenant, what, now).await?;
        let mut del = redis::cmd("DEL");
        del.arg(self.inner.keys.block(tenant, what));
        let _: u32 = self.query("unblock", &del).await?;
        Ok(until.is_some())
    }

    /// Makes a budget full again: its key goes.
    pub(in crate::store) async fn refill_budget(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
    ) -> Result<(), StoreError> {
        let mut del = redis::cmd("DEL");
        del.arg(self.budget_key(tenant, key));
        let _: u32 = self.query("refill_budget", &del).await?;
        Ok(())
    }

    pub(in crate::store) async fn blocked_until(
        &self,
        tenant: &TenantId,
        what: Blocked<'_>,
        now: SystemTime,
    ) -> Result<Option<SystemTime>, StoreError> {
        let mut get = redis::cmd("GET");
        get.arg(self.inner.keys.block(tenant, what));
        let until: Option<u64> = self.query("blocked_until", &get).await?;
        Ok(until
            .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
            .filter(|until| *until > now))
    }

    pub(in crate::store) async fn take_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<Option<Duration>, StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.gcra);
        invocation
            .key(self.budget_key(tenant, key))
            .arg(millis(now));
        quota_args(&mut invocation, Some(quota));
        let wait: u64 = self.run("gcra", invocation).await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    pub(in crate::store) async fn cell_wait(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<Duration, StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.gcra_wait);
        invocation
            .key(self.budget_key(tenant, key))
            .arg(millis(now));
        quota_args(&mut invocation, Some(quota));
        let wait: u64 = self.run("gcra_wait", invocation).await?;
        Ok(Duration::from_millis(wait))
    }

    /// Cells of several of the tenant's own budgets, all or none, in one
    /// script: `Some((i, wait))` when `cells[i]` is spent.
    pub(in crate::store) async fn take_cells(
        &self,
        tenant: &TenantId,
        cells: &[(BudgetKey<'_>, Quota)],
        now: SystemTime,
    ) -> Result<Option<(usize, Duration)>, StoreError> {
        debug_assert!(
            cells
                .iter()
                .all(|(key, _)| matches!(key, BudgetKey::Tenant(_))),
            "one script takes only budgets of one slot: the tenant's own"
        );
        let mut invocation = Invocation::of(&SCRIPTS.gcra_all);
        for (key, _) in cells {
            invocation.key(self.budget_key(tenant, *key));
        }
        invocation.arg(millis(now));
        for (_, quota) in cells {
            quota_args(&mut invocation, Some(*quota));
        }
        let (refused, wait): (usize, u64) = self.run("gcra_all", invocation).await?;
        Ok(refused
            .checked_sub(1)
            .map(|i| (i, Duration::from_millis(wait))))
    }

    pub(in crate::store) async fn give_back_cell(
        &self,
        tenant: &TenantId,
        key: BudgetKey<'_>,
        quota: Quota,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let mut invocation = Invocation::of(&SCRIPTS.gcra_return);
        invocation
            .key(self.budget_key(tenant, key))
            .arg(millis(now))
            .arg(period_millis(quota.period));
        self.run::<u8>("gcra_return", invocation).await.map(|_| ())
    }

    /// A budget's key: a destination's in its verifications' slot (the
    /// one the create, resend and check scripts take from), the others
    /// each in its own.
    fn budget_key(&self, tenant: &TenantId, key: BudgetKey<'_>) -> String {
        let keys = &self.inner.keys;
        let name = key.name();
        match key {
            BudgetKey::Destination(_, to) => keys.destination_budget(name, tenant, to),
            BudgetKey::Ip(block) => keys.budget(name, tenant, &block.to_string()),
            BudgetKey::Prefix(prefix) | BudgetKey::PrefixSends(prefix) => {
                keys.budget(name, tenant, prefix)
            }
            BudgetKey::Country(code) => keys.budget(name, tenant, &code.to_string()),
            BudgetKey::Tenant(_) => keys.tenant_budget(name, tenant),
        }
    }
}
