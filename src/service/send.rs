//! What a start and a resend share: the gates before anything is reserved,
//! the budgets other users share, and the send with its record.
//!
//! The order: the delivery's policy
//! (channel, voice mode), then the refusals that write nothing (the fraud
//! screen, a prefix block) and the IP budget, then the budgets other users
//! share (number prefix, country, and the tenant's own sends across every
//! channel and country), which are given back if a destination block or
//! the store step refuses or nothing is sent, so refused starts cannot
//! trip a prefix block on numbers that were never sent to.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::{Verifier, errors::StartError, risk::Screening};
use crate::{
    delivery::{Dispatch, FailureKind, Message},
    domain::{
        Channel, Code, CodeHash, DeliveryStatus, Destination, Locale, Policy, SendAttempt,
        SendOutcome, Status, TenantId, Verification, country,
        destination::PhoneNumber,
        limit::{Budget, Limit},
        verification::Delivery,
        voice::{CallToken, VoiceCall},
    },
    ratelimit::LimitError,
    store::{Blocked, CompletedSend},
};

/// Kept back from the caller's deadline for recording the send, so the
/// answer reaches the caller before it gives up.
const RECORDING_MARGIN: Duration = Duration::from_millis(50);

/// The caller's deadline, less the time recording the send takes.
pub(super) fn leave_time_to_record(deadline: Option<Instant>) -> Option<Instant> {
    deadline.map(|d| d.checked_sub(RECORDING_MARGIN).unwrap_or(d))
}

pub(super) fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default()
}

/// What the gates let through.
pub(super) struct Gate {
    /// The destination's start budget, for the store to take from in its
    /// own step.
    pub(super) start_budget: Budget,
    pub(super) shared: SharedCells,
    /// The language the number's country reads, for a send that names no
    /// locale ([`Delivery::or_locale`]).
    pub(super) locale: Option<Locale>,
}

/// The cells taken from the budgets other users share, to give back if
/// nothing is sent: a number prefix's and its country's, and the tenant's
/// own send budget.
#[derive(Debug)]
pub(super) struct SharedCells {
    phone: Option<(String, u16)>,
    /// The tenant's own budgets a cell was taken from.
    tenant: &'static [Limit],
}

/// The tenant's own budgets a send spends: every send, a new
/// verification's, an email's.
fn tenant_limits(first: bool, channel: Channel) -> &'static [Limit] {
    use Limit::{EmailsPerTenant, SendsPerTenant, StartsPerTenant};
    match (first, channel) {
        (true, Channel::Email) => &[SendsPerTenant, StartsPerTenant, EmailsPerTenant],
        (true, Channel::Sms | Channel::Voice) => &[SendsPerTenant, StartsPerTenant],
        (false, Channel::Email) => &[SendsPerTenant, EmailsPerTenant],
        (false, Channel::Sms | Channel::Voice) => &[SendsPerTenant],
    }
}

impl SharedCells {
    /// The cells a send that went nowhere gives back: all but the new
    /// verification's (`starts_per_tenant`), which was created and stays
    /// stored (FAILED) for its retention, so it keeps its cell.
    fn of_a_send_that_went_nowhere(self) -> Self {
        use Limit::{EmailsPerTenant, SendsPerTenant};
        let tenant: &'static [Limit] = match self.tenant {
            [_, Limit::StartsPerTenant, EmailsPerTenant] => &[SendsPerTenant, EmailsPerTenant],
            [_, Limit::StartsPerTenant] => &[SendsPerTenant],
            other => other,
        };
        Self { tenant, ..self }
    }
}

/// One send to make on a verification whose send is reserved.
pub(super) struct SendPlan<'a> {
    pub(super) tenant: &'a TenantId,
    pub(super) verification: Verification,
    pub(super) delivery: &'a Delivery,
    pub(super) shared: SharedCells,
    /// The verification's first send (a start), not a resend.
    pub(super) first: bool,
    /// A fallback step's send: the previous step's code stays checkable.
    pub(super) fallback_step: bool,
    pub(super) deadline: Option<Instant>,
}

impl Verifier {
    /// The delivery a request may have: a channel the tenant may use and
    /// the server has providers for, and for a call, the mode asked for
    /// (else the tenant's default) within the tenant's voice policy. Checked
    /// before anything is looked up or spent.
    pub(super) fn settle_delivery(
        &self,
        tenant: &TenantId,
        asked: &Delivery,
    ) -> Result<Delivery, StartError> {
        let settings = self.settings.tenants.get(tenant);
        if !settings.allows(asked.channel) {
            return Err(StartError::ChannelNotAllowed(asked.channel));
        }
        if self.dispatcher.route(asked.channel).is_none() {
            return Err(StartError::ChannelDisabled(asked.channel));
        }
        let voice_mode = match asked.channel {
            Channel::Voice => Some(
                settings
                    .voice
                    .mode_policy()
                    .resolve(asked.voice_mode)
                    .map_err(StartError::VoiceModeNotAllowed)?,
            ),
            Channel::Sms | Channel::Email => None,
        };
        Ok(Delivery {
            voice_mode,
            ..asked.clone()
        })
    }

    /// Everything a send to `to` on `channel` must pass before the store
    /// is asked for it; `first` for a new verification's (a start).
    pub(super) async fn pass_gates(
        &self,
        screening: Screening<'_>,
        ip: Option<std::net::IpAddr>,
        first: bool,
    ) -> Result<Gate, StartError> {
        let Screening {
            tenant,
            to,
            channel,
            now,
            ..
        } = screening;
        // Countries and number types that must never get a code.
        let plan = self.settings.fraud.screen(channel, to)?;
        let locale = plan.as_ref().and_then(country::locale_for);
        // A safe-listed number skips what guards a whole range (the
        // prefix's block and budget, the country's): that is what the
        // safe-list is for. Its own limits below still hold.
        let phone = match (plan, to) {
            (Some(plan), Destination::Phone(phone))
                if !self
                    .safe_lists
                    .contains(&self.store, tenant, to, now)
                    .await? =>
            {
                self.refuse_blocked_prefix(tenant, phone, now).await?;
                Some((phone, plan.calling_code))
            }
            _ => None,
        };
        let start_budget = self.limits.start(tenant, ip).await?;
        let phone = match phone {
            Some((phone, calling_code)) => {
                self.take_phone_start(tenant, phone, calling_code, now)
                    .await?
            }
            None => None,
        };
        let shared = SharedCells { phone, tenant: &[] };
        // Last of the budgets other users share: the tenant's own, across
        // every destination.
        let limits = tenant_limits(first, channel);
        if let Err(refused) = self.limits.tenant(tenant, limits).await {
            self.give_back(tenant, shared).await;
            return Err(refused.into());
        }
        let shared = SharedCells {
            tenant: limits,
            ..shared
        };
        // A destination whose user reported a call as fraud gets nothing
        // more for a while. A start meets the block in the store step that
        // creates, with the least gap and the destination's budget, and is
        // refused as they refuse (the shared cells given back, the IP's
        // kept): nothing tells them apart. A resend's caller holds the
        // verification, and is told here.
        if !first {
            let refused = match self
                .store
                .blocked_until(tenant, Blocked::Destination(to), now)
                .await
            {
                Ok(None) => None,
                Ok(Some(blocked_until)) => Some(StartError::Blocked {
                    retry_after: until(blocked_until, now),
                }),
                Err(error) => Some(error.into()),
            };
            if let Some(refused) = refused {
                self.give_back(tenant, shared).await;
                return Err(refused);
            }
        }
        // Last: the one gate that may cost money.
        if let Err(refused) = self.screen_by_lookup(screening, start_budget).await {
            self.give_back(tenant, shared).await;
            return Err(refused);
        }
        Ok(Gate {
            start_budget,
            shared,
            locale,
        })
    }

    /// The wait a start refused by a block is told: a wait that counts down
    /// within the longest least gap (4 minutes by default; a minute when
    /// the gap is off), so that it reads as a gap or a budget refilling.
    /// A caller that retries then is refused again. A resend's caller
    /// holds the verification and is told the block's whole time.
    pub(super) fn start_wait(&self, policy: &Policy, left: Duration) -> Duration {
        let cycle = policy.resend_wait(u32::MAX).max(Duration::from_secs(60));
        countdown_within(left, cycle)
    }

    async fn refuse_blocked_prefix(
        &self,
        tenant: &TenantId,
        phone: &PhoneNumber,
        now: SystemTime,
    ) -> Result<(), StartError> {
        match self
            .store
            .blocked_until(tenant, Blocked::Prefix(phone.prefix()), now)
            .await?
        {
            Some(blocked_until) => Err(StartError::PrefixBlocked {
                retry_after: until(blocked_until, now),
            }),
            None => Ok(()),
        }
    }

    /// SMS pumping: a number range (prefix) or a country getting more
    /// starts than any real user base would. A prefix that trips its budget
    /// with sends that may have gone out is blocked for `fraud.prefix_block`,
    /// and the security team hears of it; one whose budget is held by
    /// starts still waiting on their providers is only refused for now.
    async fn take_phone_start(
        &self,
        tenant: &TenantId,
        phone: &PhoneNumber,
        calling_code: u16,
        now: SystemTime,
    ) -> Result<Option<(String, u16)>, StartError> {
        let prefix = phone.prefix();
        match self.limits.phone_start(tenant, prefix, calling_code).await {
            Ok(()) => Ok(Some((prefix.to_owned(), calling_code))),
            Err(LimitError::Limited(limited)) if limited.limit == Limit::StartsPerPrefix => {
                if !self.limits.prefix_sends_spent(tenant, prefix).await? {
                    return Err(limited.into());
                }
                let block = self.settings.fraud.prefix_block;
                self.settings.metrics.prefix_blocked(tenant);
                self.store
                    .block(tenant, Blocked::Prefix(prefix), now + block, now)
                    .await?;
                tracing::warn!(
                    target: "verifyd::audit",
                    event = "prefix_blocked",
                    %tenant,
                    calling_code,
                    prefix = %mask_prefix(prefix),
                    blocked_for_secs = block.as_secs(),
                    "a number prefix exceeded its start budget (suspected SMS pumping); it is blocked"
                );
                Err(limited.into())
            }
            Err(other) => Err(other.into()),
        }
    }

    /// Returns cells taken for a send that did not happen. Best effort: a
    /// store that cannot take them back leaves the budget a cell short
    /// until it refills.
    pub(super) async fn give_back(&self, tenant: &TenantId, cells: SharedCells) {
        if let Some((prefix, calling_code)) = cells.phone
            && let Err(error) = self
                .limits
                .give_back_phone_start(tenant, &prefix, calling_code)
                .await
        {
            tracing::warn!(%error, "could not give back a start's prefix and country cells");
        }
        if let Err(error) = self.limits.give_back_tenant(tenant, cells.tenant).await {
            tracing::warn!(%error, "could not give back a start's tenant cells");
        }
    }

    /// Counts a send that may have gone out against its prefix, for the
    /// prefix block. Best effort: a count the store misses only delays a
    /// block.
    async fn count_prefix_send(&self, tenant: &TenantId, cells: &SharedCells) {
        let Some((prefix, _)) = &cells.phone else {
            return;
        };
        if let Err(error) = self.limits.prefix_sent(tenant, prefix).await {
            tracing::warn!(%error, "could not count a send against its prefix");
        }
    }

    /// Draws a code, hands the message to the channel's providers and
    /// records how it went: only the code's HMAC is kept, and only once a
    /// provider accepted the send.
    pub(super) async fn send(&self, send: SendPlan<'_>) -> Result<Verification, StartError> {
        let SendPlan {
            tenant,
            verification: v,
            delivery,
            shared,
            first,
            fallback_step,
            deadline,
        } = send;
        let policy = self.policy(tenant, delivery.channel);
        let code = Code::generate(policy.code_length);
        let hash = self.keys.hash(tenant, &v.id, &code);
        let call_token = (delivery.channel == Channel::Voice).then(CallToken::generate);
        let message = self.message(
            tenant,
            &v,
            delivery,
            policy.code_ttl,
            code,
            call_token.clone(),
        );
        let budget = deadline.map_or(self.settings.send_timeout, |d| {
            d.saturating_duration_since(Instant::now())
                .min(self.settings.send_timeout)
        });
        let carries_code = message.carries_code();
        let dispatch = self.dispatch(&message, budget).await;
        // The plaintext code goes no further than the providers.
        drop(message);
        if may_have_sent(&dispatch) {
            self.count_prefix_send(tenant, &shared).await;
        } else {
            self.give_back(tenant, shared.of_a_send_that_went_nowhere())
                .await;
        }
        let completed = CompletedSend {
            fallback_step,
            ..completed_send(
                delivery,
                &dispatch,
                kept_code(carries_code, delivery.channel, &dispatch).then_some(hash),
                call_token.as_ref(),
            )
        };
        let completed_outcome = completed.outcome;
        if completed_outcome == SendOutcome::Unknown {
            tracing::warn!(
                verification = %v.id,
                "a send's outcome is unknown: the verification stays pending, and its code checks beside the last accepted one"
            );
        }
        let recorded = self
            .store
            .complete_send(tenant, &v.id, completed, &policy, self.clock.now())
            .await?
            .unwrap_or(v);
        self.after_recorded(&recorded, &dispatch, call_token.is_some(), first);
        let may_have_sent = completed_outcome == SendOutcome::Unknown;
        sent(recorded, dispatch, first, may_have_sent)
    }

    /// The message a send hands its providers: the only place the
    /// plaintext code travels.
    fn message(
        &self,
        tenant: &TenantId,
        v: &Verification,
        delivery: &Delivery,
        valid_for: Duration,
        code: Code,
        call_token: Option<CallToken>,
    ) -> Message {
        Message {
            tenant: tenant.clone(),
            verification_id: v.id.clone(),
            to: v.to.clone(),
            // Only a call dials it; a resend on another channel is refused
            // before it gets here.
            extension: v
                .extension
                .clone()
                .filter(|_| delivery.channel == Channel::Voice),
            purpose: v.purpose,
            delivery: delivery.clone(),
            code,
            match_digits: v.match_digits.clone(),
            call_token,
            valid_for,
            app_name: self.settings.tenants.get(tenant).app_name.clone(),
        }
    }

    /// What follows a recorded send: a call placed for a verification that
    /// ended meanwhile is ended; a first send announces the start.
    fn after_recorded(
        &self,
        recorded: &Verification,
        dispatch: &Dispatch,
        placed_a_call: bool,
        first: bool,
    ) {
        if recorded.status != Status::Pending
            && let (Ok(receipt), true) = (&dispatch.result, placed_a_call)
        {
            // The verification ended while its call was being placed
            // (superseded, canceled): nothing stored names the call, so it
            // is ended from the send's own receipt.
            if let Some(sid) = &receipt.reference {
                self.end_call(&receipt.provider, sid, &recorded.id);
            }
        }
        if first {
            // A verification that something else ended while its first
            // send ran (superseded, canceled) was started pending; whoever
            // ended it recorded that.
            if matches!(recorded.status, Status::Pending | Status::Failed) {
                self.status_changed(recorded, None, "started");
            } else {
                let started = Verification {
                    status: Status::Pending,
                    ..recorded.clone()
                };
                self.status_changed(&started, None, "started");
            }
        }
    }

    /// Renders the message and hands it to the channel's route.
    async fn dispatch(&self, message: &Message, budget: Duration) -> Dispatch {
        let channel = message.delivery.channel;
        let Some(route) = self.dispatcher.route(channel) else {
            // Checked before anything was reserved; kept total for safety.
            return Dispatch::failed(
                "none",
                FailureKind::Rejected,
                "channel disabled",
                self.clock.now(),
            );
        };
        let templates = self
            .settings
            .tenants
            .get(&message.tenant)
            .templates(&self.dispatcher.templates);
        match templates.render(message) {
            Ok(content) => route.send(message, &content, budget).await,
            Err(error) => {
                tracing::error!(%error, "cannot render the message");
                Dispatch::failed(
                    "templates",
                    FailureKind::Rejected,
                    "message template failed",
                    self.clock.now(),
                )
            }
        }
    }
}

/// The record of a send: each provider's try, the new code's hash if the
/// message carried one, and the call a provider placed.
fn completed_send(
    delivery: &Delivery,
    dispatch: &Dispatch,
    new_hash: Option<CodeHash>,
    call_token: Option<&CallToken>,
) -> CompletedSend {
    let attempts = dispatch
        .attempts
        .iter()
        .map(|a| SendAttempt {
            channel: delivery.channel,
            status: match a.result {
                Ok(_) => DeliveryStatus::Accepted,
                Err(_) => DeliveryStatus::Failed,
            },
            provider: a.provider.clone(),
            at: a.at,
            error_reason: a.result.as_ref().err().map(|e| e.reason.clone()),
            reference: a.result.as_ref().ok().and_then(|r| r.reference.clone()),
            provider_status: None,
        })
        .collect();
    CompletedSend {
        delivery: delivery.clone(),
        attempts,
        outcome: outcome(dispatch),
        new_hash,
        call: match (&dispatch.result, call_token) {
            (Ok(receipt), Some(token)) => {
                let mut call = VoiceCall::new(token);
                call.call_sid.clone_from(&receipt.reference);
                Some(call)
            }
            _ => None,
        },
        fallback_step: false,
    }
}

/// What a send answers: the verification as recorded, or why no provider
/// took it.
fn sent(
    recorded: Verification,
    dispatch: Dispatch,
    first: bool,
    may_have_sent: bool,
) -> Result<Verification, StartError> {
    match dispatch.result {
        Ok(receipt) => {
            // The audit event says it started; metrics count sends.
            tracing::debug!(
                verification = %recorded.id,
                provider = receipt.provider,
                tries = dispatch.attempts.len(),
                resend = !first,
                "code sent"
            );
            Ok(recorded)
        }
        Err(error) => {
            tracing::warn!(
                verification = %recorded.id,
                %error,
                tries = dispatch.attempts.len(),
                status = recorded.status.as_str(),
                "send failed"
            );
            Err(StartError::Delivery {
                error,
                verification: recorded.id,
                may_have_sent,
            })
        }
    }
}

/// Whether a send may have reached the destination: a provider accepted it,
/// or a try ended with its outcome unknown (a timeout, a dropped
/// connection, a 5xx, an answer verifyd cannot use). Only then does it keep
/// the cells of the budgets other users share; providers not tried at all
/// (circuit open, no time left) sent nothing.
fn may_have_sent(dispatch: &Dispatch) -> bool {
    dispatch.result.is_ok()
        || dispatch
            .attempts
            .iter()
            .any(|a| matches!(&a.result, Err(e) if e.kind.may_have_sent()))
}

/// Whether a send keeps the hash of the code its message carried: only if
/// the code went out with it. Press-# and number-matching calls deliver
/// none (only the call can approve them); a read-aloud call that fetches
/// its instructions says one only once a person asks for it, drawn then
/// (`Verifier::call_keys`). A call no provider took was bound to no
/// webhook, so no one can hear a code on it: none is kept.
fn kept_code(carries_code: bool, channel: Channel, dispatch: &Dispatch) -> bool {
    match &dispatch.result {
        Ok(receipt) => carries_code && !receipt.code_withheld,
        Err(_) => carries_code && channel != Channel::Voice,
    }
}

/// How a send ended, for its record: accepted; unknown, when no provider
/// took it but some try ended in a way that may have sent it (a timeout, a
/// dropped connection, a 5xx, an answer verifyd cannot use), even if a
/// later provider refused the destination; else refused (every provider
/// refused, or none was tried). Retries and failover within the send
/// carried the one message, so an unknown send left at most one code the
/// user may hold.
fn outcome(dispatch: &Dispatch) -> SendOutcome {
    match &dispatch.result {
        Ok(_) => SendOutcome::Accepted,
        Err(_) if may_have_sent(dispatch) => SendOutcome::Unknown,
        Err(_) => SendOutcome::Refused,
    }
}

/// `left`, folded into a countdown no longer than `cycle`: it falls as
/// `left` does, from `cycle` to nothing, then starts again from `cycle`,
/// and ends when `left` does.
fn countdown_within(left: Duration, cycle: Duration) -> Duration {
    if left <= cycle || cycle.is_zero() {
        return left;
    }
    let (left_ms, cycle_ms) = (left.as_millis(), cycle.as_millis());
    let wait = (left_ms - 1) % cycle_ms + 1;
    Duration::from_millis(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// A prefix for logs: its first four characters (the country code and a
/// digit or two), the rest hidden.
pub(super) fn mask_prefix(prefix: &str) -> String {
    let shown: String = prefix.chars().take(4).collect();
    format!("{shown}{}", "*".repeat(prefix.len().saturating_sub(4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocks_wait_counts_down_within_the_cycle_as_a_gap_would() {
        let cycle = Duration::from_secs(240);
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(countdown_within(day, cycle), cycle);
        let later = countdown_within(day - Duration::from_secs(3), cycle);
        assert_eq!(later, cycle - Duration::from_secs(3), "it counts down");
        assert_eq!(
            countdown_within(day - cycle, cycle),
            cycle,
            "then starts over"
        );
        assert_eq!(
            countdown_within(Duration::from_secs(90), cycle),
            Duration::from_secs(90)
        );
        for secs in [1, 239, 241, 86_399] {
            let wait = countdown_within(Duration::from_secs(secs), cycle);
            assert!(!wait.is_zero() && wait <= cycle, "{secs}: {wait:?}");
        }
    }

    #[test]
    fn a_send_that_went_nowhere_keeps_only_its_new_verifications_cell() {
        for first in [true, false] {
            for channel in [Channel::Sms, Channel::Voice, Channel::Email] {
                let taken = tenant_limits(first, channel);
                assert_eq!(taken.contains(&Limit::StartsPerTenant), first);
                let cells = SharedCells {
                    phone: None,
                    tenant: taken,
                };
                let given_back = cells.of_a_send_that_went_nowhere().tenant;
                assert!(!given_back.contains(&Limit::StartsPerTenant), "{taken:?}");
                assert!(given_back.contains(&Limit::SendsPerTenant));
                assert_eq!(
                    given_back.contains(&Limit::EmailsPerTenant),
                    channel == Channel::Email
                );
            }
        }
    }
}
