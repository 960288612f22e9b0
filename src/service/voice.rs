//! The voice call's webhooks as use cases: what a call says next, what the
//! keys do, and what the provider reports about the call.
//!
//! Each step returns a [`CallStep`] (what to say, then what to ask); the
//! webhook layer turns it into the provider's call instructions.

use tracing::Instrument as _;
use zeroize::Zeroizing;

use super::{
    Verifier,
    errors::CallError,
    send::until,
    voice_settings::{UnknownAnswer, VoiceSettings},
};
use crate::{
    delivery::CallPrompt,
    domain::{
        Channel, Code, DeliveryReport, Status, TenantId, Verification, VerificationId, VoiceMode,
        call::CallKey,
        voice::{AnsweredBy, CallStep, KeyOutcome, KeyPress, Menu, Next},
    },
    store::Blocked,
};

/// Whether no person is listening, by the tenant's reading of an answer
/// detection could not tell.
fn is_machine(answered_by: AnsweredBy, unknown: UnknownAnswer) -> bool {
    match answered_by {
        AnsweredBy::Machine => true,
        AnsweredBy::Unknown => unknown == UnknownAnswer::Machine,
        AnsweredBy::Person => false,
    }
}

/// The step the call's next gather is: the presses acted on so far.
fn next_step(v: &Verification) -> u8 {
    v.call.as_ref().map_or(0, |call| call.presses)
}

impl Verifier {
    /// Reads the verification and checks the webhook belongs to its live call.
    async fn live_call(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        call: &CallKey,
    ) -> Result<Verification, CallError> {
        let v = self
            .store
            .get(tenant, id, self.clock.now())
            .await?
            .ok_or(CallError::NotFound)?;
        let admitted = v
            .call
            .as_ref()
            .is_some_and(|live| live.admits(&call.token, &call.call_sid));
        if !admitted {
            tracing::warn!(verification = %id, "call webhook refused: token or CallSid does not match");
            return Err(CallError::Forbidden);
        }
        Ok(v)
    }

    /// The tenant's voice settings: its own, else the server's.
    fn voice(&self, tenant: &TenantId) -> &VoiceSettings {
        &self.settings.tenants.get(tenant).voice
    }

    fn say(&self, v: &Verification, prompt: CallPrompt) -> Result<String, CallError> {
        let locale = v.delivery.locale.as_ref().map(|l| l.as_str());
        let tenant = self.settings.tenants.get(&v.tenant);
        Ok(tenant.templates(&self.dispatcher.templates).render_call(
            locale,
            v.purpose,
            &tenant.app_name,
            tenant.policy.for_channel(Channel::Voice).code_ttl,
            prompt,
        )?)
    }

    fn step(&self, v: &Verification, say: Vec<Zeroizing<String>>, next: Next) -> CallStep {
        CallStep {
            locale: v.delivery.locale.as_ref().map(|l| l.as_str().to_owned()),
            say,
            next,
        }
    }

    /// Asks the main question again, opening with `prompt`.
    fn ask(&self, v: &Verification, prompt: CallPrompt) -> Result<CallStep, CallError> {
        let mode = v.delivery.voice_mode.unwrap_or_default();
        Ok(self.step(
            v,
            Vec::new(),
            Next::Gather {
                menu: Menu::Main,
                step: next_step(v),
                one_key: mode != VoiceMode::Match,
                prompt: self.say(v, prompt)?,
                goodbye: self.say(v, CallPrompt::Goodbye)?,
                timeout_secs: self.voice(&v.tenant).gather_timeout_secs,
            },
        ))
    }

    fn hangup(&self, v: &Verification, prompt: Option<CallPrompt>) -> Result<CallStep, CallError> {
        let say = prompt
            .map(|p| self.say(v, p))
            .transpose()?
            .map(Zeroizing::new)
            .into_iter()
            .collect();
        Ok(self.step(v, say, Next::Hangup))
    }

    /// The call was answered and the provider asks what to say.
    #[tracing::instrument(skip_all, fields(%tenant, verification = %id))]
    pub async fn call_answered(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        call: &CallKey,
        answered_by: Option<AnsweredBy>,
    ) -> Result<CallStep, CallError> {
        let v = self.live_call(tenant, id, call).await?;
        if v.status != Status::Pending {
            return self.hangup(&v, None);
        }
        if let Some(answered_by) = answered_by
            && is_machine(answered_by, self.voice(tenant).unknown_answer)
        {
            tracing::info!(?answered_by, "call answered by a machine: hanging up");
            let report = DeliveryReport {
                reference: call.call_sid.clone(),
                status: DeliveryReport::ANSWERED_BY_MACHINE.to_owned(),
                error_code: None,
            };
            self.record_delivery(tenant, id, &report).await?;
            return self.hangup(&v, None);
        }
        let mode = v.delivery.voice_mode.unwrap_or_default();
        self.ask(&v, CallPrompt::Ask(mode))
    }

    /// Says the code a read-aloud call's press swapped in, then offers a
    /// new one while the call may say another. A code said spends nothing
    /// of the verification's window, so the call says how much of it is
    /// left. (Templates are checked when they load, so the rendering that
    /// follows the store step does not fail in practice.)
    fn reveal(&self, v: &Verification, code: &Code) -> Result<CallStep, CallError> {
        let tenant = self.settings.tenants.get(&v.tenant);
        let speech = tenant
            .templates(&self.dispatcher.templates)
            .render_code_call(
                v.delivery.locale.as_ref().map(|l| l.as_str()),
                v.purpose,
                &tenant.app_name,
                until(v.expires_at, self.clock.now()),
                code,
            )?;
        let voice = self.voice(&v.tenant);
        let next = if v.may_reveal_again(voice.max_reprompts) {
            Next::Gather {
                menu: Menu::Main,
                step: next_step(v),
                one_key: true,
                prompt: self.say(v, CallPrompt::CodeAgain)?,
                // The prompt says goodbye itself.
                goodbye: String::new(),
                timeout_secs: voice.gather_timeout_secs,
            }
        } else {
            Next::Hangup
        };
        Ok(self.step(v, vec![speech], next))
    }

    /// The user pressed keys in answer to `menu`, asked at the call's
    /// `step` (a replayed press answers a step the call has moved past, and
    /// is refused).
    #[tracing::instrument(skip_all, fields(%tenant, verification = %id))]
    pub async fn call_keys(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        call: &CallKey,
        (menu, step): (Menu, u8),
        digits: &str,
    ) -> Result<CallStep, CallError> {
        // The code a read-aloud call says if this press reveals one: drawn
        // now, so that the store swaps its hash in within the press's own
        // step, and wiped when this returns. A press on another call draws
        // one for nothing (the mode is known only in that step).
        let code = Code::generate(self.policy(tenant, Channel::Voice).code_length);
        let reveal = self.keys.hash(tenant, id, &code);
        let (outcome, v) = self
            .store
            .press(
                tenant,
                id,
                KeyPress {
                    call,
                    menu,
                    digits,
                    max_reprompts: self.voice(tenant).max_reprompts,
                    step,
                    reveal: &reveal,
                },
                self.clock.now(),
            )
            .await?
            .ok_or(CallError::NotFound)?;
        let Some(outcome) = outcome else {
            tracing::warn!("call keys refused: token, CallSid or step does not match");
            return Err(CallError::Forbidden);
        };
        tracing::info!(outcome = ?outcome, status = v.status.as_str(), "call keys");
        // Keys act on a pending verification only.
        self.status_changed(&v, Some(Status::Pending), "keys pressed on the call");
        let guessed = menu == Menu::Main
            && v.delivery.voice_mode == Some(VoiceMode::Match)
            && matches!(outcome, KeyOutcome::WrongDigits | KeyOutcome::Hangup);
        if guessed {
            // A wrong guess at the digits spends the destination's shared
            // failed-check budget too, as a wrong code does; the
            // verification's own attempts already bound this call.
            let _ = self.limits.check(tenant, &v.to).await;
        }
        let read_aloud = v.delivery.voice_mode == Some(VoiceMode::Code);
        match outcome {
            KeyOutcome::Reveal => self.reveal(&v, &code),
            // A read-aloud call that may say no more codes just ends: it
            // asked to confirm nothing.
            KeyOutcome::Hangup if read_aloud => self.hangup(&v, None),
            KeyOutcome::Approved => self.hangup(&v, Some(CallPrompt::Approved)),
            KeyOutcome::Reprompt => match v.delivery.voice_mode.unwrap_or_default() {
                VoiceMode::Confirm => self.ask(&v, CallPrompt::Retry),
                // No key at all: the question again.
                mode => self.ask(&v, CallPrompt::Ask(mode)),
            },
            KeyOutcome::WrongDigits => self.ask(&v, CallPrompt::WrongDigits),
            // Any key asks the store again (press.lua).
            KeyOutcome::Unacknowledged => self.ask(&v, CallPrompt::PressAgain),
            KeyOutcome::BackToMain => self.ask(
                &v,
                CallPrompt::Ask(v.delivery.voice_mode.unwrap_or_default()),
            ),
            KeyOutcome::Hangup => self.hangup(&v, Some(CallPrompt::Goodbye)),
            KeyOutcome::NotPending(_) => self.hangup(&v, None),
            KeyOutcome::FraudMenu => Ok(self.step(
                &v,
                Vec::new(),
                Next::Gather {
                    menu: Menu::Fraud,
                    step: next_step(&v),
                    one_key: true,
                    prompt: self.say(&v, CallPrompt::FraudMenu)?,
                    goodbye: self.say(&v, CallPrompt::Goodbye)?,
                    timeout_secs: self.voice(&v.tenant).gather_timeout_secs,
                },
            )),
            KeyOutcome::Denied => {
                let fraud_block = self.voice(tenant).fraud_block;
                let until = self.clock.now() + fraud_block;
                self.store
                    .block(tenant, Blocked::Destination(&v.to), until, self.clock.now())
                    .await?;
                tracing::warn!(
                    target: "verifyd::audit",
                    event = "fraud_reported",
                    %tenant,
                    verification = %id,
                    to = %v.masked_destination(),
                    blocked_for_secs = fraud_block.as_secs(),
                    "the user reported a verification call as fraud; the destination is blocked"
                );
                self.hangup(&v, Some(CallPrompt::FraudReported))
            }
        }
    }

    /// The provider reports the call's progress (ringing, busy, completed…).
    #[tracing::instrument(skip_all, fields(%tenant, verification = %id))]
    pub async fn call_status(
        &self,
        tenant: &TenantId,
        id: &VerificationId,
        call: &CallKey,
        report: DeliveryReport,
        answered_by: Option<AnsweredBy>,
    ) -> Result<(), CallError> {
        let v = self.live_call(tenant, id, call).await?;
        if v.status != Status::Pending {
            // Once the verification has ended, late callbacks change nothing.
            return Ok(());
        }
        // Every call fetches its instructions once detection has concluded,
        // and a machine presses no key, so none hears a code; a callback
        // that says a machine answered still ends the call, so that it
        // costs nothing more.
        let machine = answered_by.is_some_and(|a| is_machine(a, self.voice(tenant).unknown_answer));
        if machine {
            tracing::info!("call answered by a machine: ending it");
            self.end_live_call(&v);
        }
        let report = if machine {
            DeliveryReport {
                status: DeliveryReport::ANSWERED_BY_MACHINE.to_owned(),
                ..report
            }
        } else {
            report
        };
        Ok(self.record_delivery(tenant, id, &report).await?)
    }

    /// Ends the verification's call if it is still live: its outcome is
    /// decided (or a new send replaces it), and a user should not be left
    /// on a call that can no longer do anything. In the background.
    pub(super) fn end_live_call(&self, v: &Verification) {
        if let Some((provider, sid)) = live_call(v) {
            self.end_call(&provider, &sid, &v.id);
        }
    }

    /// Ends the verification's call if it is still live, and says whether
    /// that is done (no call, or the provider ended it): the expiry timer
    /// hands an expiry back only then.
    pub(super) async fn hang_up_live_call(&self, v: &Verification) -> bool {
        let Some((provider, sid)) = live_call(v) else {
            return true;
        };
        let Some(provider) = self.dispatcher.voice_provider(&provider) else {
            return true;
        };
        match provider.end_call(&sid).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(verification = %v.id, %error, "could not end the live call");
                false
            }
        }
    }

    /// Ends the call `sid` that `provider` placed for `verification`, in
    /// the background.
    pub(super) fn end_call(&self, provider: &str, sid: &str, verification: &VerificationId) {
        let Some(provider) = self.dispatcher.voice_provider(provider) else {
            return;
        };
        let (sid, verification) = (sid.to_owned(), verification.clone());
        tokio::spawn(
            async move {
                if let Err(error) = provider.end_call(&sid).await {
                    tracing::warn!(%verification, %error, "could not end the live call");
                }
            }
            .in_current_span(),
        );
    }
}

/// The provider and CallSid of the verification's call, while the call
/// may still be live (no final status reported yet).
fn live_call(v: &Verification) -> Option<(String, String)> {
    let sid = v.call.as_ref()?.call_sid.clone()?;
    let attempt = v
        .send_attempts
        .iter()
        .rev()
        .find(|a| a.reference.as_deref() == Some(sid.as_str()))?;
    let ended = attempt
        .provider_status
        .as_deref()
        .is_some_and(DeliveryReport::is_final);
    (!ended).then(|| (attempt.provider.clone(), sid))
}
