//! Reads and the transitions a caller or a provider asks for: a check of
//! a code, a cancel, a delivery report, keys pressed on a call.

use std::time::SystemTime;

use super::{MemoryStore, Written, check_state_written};
use crate::{
    domain::{
        CheckOutcome, CodeHash, DeliveryReport, Destination, Policy, Status, TenantId,
        Verification, VerificationId,
        limit::Budget,
        voice::{KeyOutcome, KeyPress},
    },
    store::port::{BudgetedCheck, StoreError},
};

impl MemoryStore {
    pub(in crate::store) fn check(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        now: SystemTime,
    ) -> Result<Option<(CheckOutcome, Verification)>, StoreError> {
        Ok(self.apply(tenant, id, |v, record, names| {
            let before = (v.status, v.checks_remaining);
            let outcome = v.check(record.code_matches(candidates, names), now);
            (outcome, check_state_written(before, v))
        }))
    }

    /// [`Self::check`], first taking one cell of the destination's
    /// failed-check budget (`budget`), in the same step: one lookup where
    /// reading the destination, then checking, takes two. Not pending
    /// (expired included): nothing is taken or written.
    pub(in crate::store) fn check_within_budget(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        candidates: &[CodeHash],
        budget: Budget,
        now: SystemTime,
    ) -> Option<BudgetedCheck> {
        let (checked, v) = self.apply(tenant, id, |v, record, names| {
            let status = v.status_at(now);
            if status.is_terminal() {
                return (Ok(CheckOutcome::NotPending(status)), Written::Nothing);
            }
            if let Some(wait) = self.take_destination_cell(tenant, &v.to, budget, now) {
                return (Err(wait), Written::Nothing);
            }
            let before = (v.status, v.checks_remaining);
            let outcome = v.check(record.code_matches(candidates, names), now);
            (Ok(outcome), check_state_written(before, v))
        })?;
        Some(match checked {
            Ok(outcome) => BudgetedCheck::Checked(outcome, v),
            Err(wait) => BudgetedCheck::Limited(budget.refused(wait)),
        })
    }

    pub(in crate::store) fn get(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<Verification>, StoreError> {
        let updated = self.apply(tenant, id, |v, _, _| {
            let written = if v.settle(now) {
                Written::CheckState
            } else {
                Written::Nothing
            };
            ((), written)
        });
        Ok(updated.map(|((), v)| v))
    }

    pub(in crate::store) fn status_and_destination(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Option<(Status, Destination)> {
        let state = self.state();
        let table = &state.verifications;
        let record = table.get(table.find(tenant, id.to_bits())?);
        Some((record.status_at(now), record.to.clone()))
    }

    pub(in crate::store) fn cancel(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        now: SystemTime,
    ) -> Result<Option<(Verification, bool)>, StoreError> {
        let updated = self.apply(tenant, id, |v, _, _| {
            let before = (v.status, v.checks_remaining);
            let canceled = v.cancel(now).is_ok();
            (canceled, check_state_written(before, v))
        });
        Ok(updated.map(|(canceled, v)| (v, canceled)))
    }

    pub(in crate::store) fn record_delivery(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        report: &DeliveryReport,
        policy: &Policy,
        now: SystemTime,
    ) -> Result<Option<(bool, Verification)>, StoreError> {
        Ok(self.apply(tenant, id, |v, _, _| {
            let changed = v.record_delivery(report) && {
                v.hasten_fallback(report, policy, now);
                true
            };
            let written = if changed {
                Written::Everything
            } else {
                Written::Nothing
            };
            (changed, written)
        }))
    }

    /// Applies keys pressed on a verification's live call, if the webhook's
    /// token and CallSid belong to that call. A press that reveals a code
    /// swaps in the code the press carries, in the same step.
    pub(in crate::store) fn press(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        press: KeyPress<'_>,
        now: SystemTime,
    ) -> Result<Option<(Option<KeyOutcome>, Verification)>, StoreError> {
        let KeyPress {
            call,
            menu,
            digits,
            max_reprompts,
            step,
            reveal,
        } = press;
        Ok(self.apply(tenant, id, |v, record, names| {
            // This call's, answering the gather it waits for: a replayed
            // press answers one it has moved past.
            let admitted = v
                .call
                .as_ref()
                .is_some_and(|live| live.admits(&call.token, &call.call_sid) && live.expects(step));
            if !admitted {
                return (None, Written::Nothing);
            }
            let seen = |v: &Verification| {
                (
                    v.status,
                    v.checks_remaining,
                    v.call.as_ref().map(|c| (c.reprompts, c.presses)),
                )
            };
            let before = seen(v);
            let outcome = v.press(menu, digits, max_reprompts, now);
            if outcome == KeyOutcome::Reveal {
                record.reveal_code(reveal.clone(), names);
            }
            let written = if seen(v) == before {
                Written::Nothing
            } else {
                Written::Everything
            };
            (Some(outcome), written)
        }))
    }
}
