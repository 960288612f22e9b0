//! Checking a code: one store step takes a cell of the destination's
//! failed-check budget, compares the code's HMAC and approves at most once.

use super::{Verifier, errors::CheckError};
use crate::{
    domain::{CheckOutcome, Code, Status, TenantId, Verification, VerificationId},
    store::BudgetedCheck,
    telemetry::metrics::CheckCount,
};

impl Verifier {
    /// Checks a code. A wrong code is `Ok((false, _))` with one attempt
    /// fewer; only a pending, unexpired verification ever approves.
    #[tracing::instrument(level = "debug", skip_all, fields(%tenant, verification = %id))]
    pub async fn check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        code: &Code,
    ) -> Result<(bool, Verification), CheckError> {
        let checked = self.check_code(tenant, id, code).await;
        let outcome = match &checked {
            Ok((true, _)) => CheckCount::Approved,
            Ok((false, _)) => CheckCount::Rejected,
            Err(CheckError::NotPending(_)) => CheckCount::NotPending,
            Err(CheckError::NotFound) => CheckCount::NotFound,
            Err(CheckError::RateLimited(_)) => CheckCount::RateLimited,
            Err(CheckError::Store(_)) => CheckCount::Unavailable,
        };
        self.settings.metrics.check(tenant, outcome);
        checked
    }

    async fn check_code(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        code: &Code,
    ) -> Result<(bool, Verification), CheckError> {
        self.limits.request(tenant)?;
        let now = self.clock.now();
        let candidates = self.keys.candidates(tenant, id, code);
        // The store reads, takes from the destination's budget and compares
        // in one step: one script in Redis, one lookup in memory.
        let budget = self.limits.check_budget(tenant);
        match self
            .store
            .check_within_budget(tenant, id, &candidates, budget, now)
            .await?
            .ok_or(CheckError::NotFound)?
        {
            BudgetedCheck::Checked(outcome, v) => {
                return self.checked(outcome, v, Status::Pending);
            }
            BudgetedCheck::Limited(limited) => {
                return Err(self.refused_by_store(tenant, limited).into());
            }
            BudgetedCheck::Unbudgeted => {}
        }
        let (status, to) = self
            .store
            .status_and_destination(tenant, id, now)
            .await?
            .ok_or(CheckError::NotFound)?;
        if status.is_terminal() {
            return Err(CheckError::NotPending(status));
        }
        self.limits.check(tenant, &to).await?;
        let (outcome, v) = self
            .store
            .check(tenant, id, &candidates, now)
            .await?
            .ok_or(CheckError::NotFound)?;
        self.checked(outcome, v, status)
    }

    /// What a compared code leads to, `from` being the status before.
    fn checked(
        &self,
        outcome: CheckOutcome,
        v: Verification,
        from: Status,
    ) -> Result<(bool, Verification), CheckError> {
        let approved = match outcome {
            CheckOutcome::Approved => true,
            CheckOutcome::Rejected => false,
            // Nothing was compared: it had already ended.
            CheckOutcome::NotPending(status) => return Err(CheckError::NotPending(status)),
        };
        self.status_changed(&v, Some(from), "code checked");
        if v.status.is_terminal() {
            // Approved, or out of attempts: a call still ringing can no
            // longer do anything.
            self.end_live_call(&v);
        }
        tracing::debug!(
            outcome = if approved { "approved" } else { "rejected" },
            attempts_remaining = v.checks_remaining,
            status = v.status.as_str(),
            "verification checked"
        );
        Ok((approved, v))
    }
}
