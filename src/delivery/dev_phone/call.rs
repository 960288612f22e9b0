//! One call on the simulated phone, as a person sees it: it rings, is
//! answered or not, says things, waits for keys, and ends. Pure: the
//! phone ([`super::DevPhone`]) does the HTTP and feeds the answers in.

use std::time::SystemTime;

use zeroize::Zeroizing;

use super::twiml::{Gather, Instruction};

/// Where a call stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Ringing,
    /// Waiting for verifyd's next instructions.
    Connecting,
    /// Connected: saying things, or waiting for keys when a gather is open.
    Connected,
    Ended(End),
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The person hung up.
    HungUp,
    /// verifyd ended it through the provider's API (decided, canceled,
    /// superseded, resent, expired).
    EndedByVerifyd,
    /// The person declined it: Twilio reports `busy`.
    Declined,
    /// Nobody picked up: `no-answer`.
    NotAnswered,
    /// The instructions hung up (or ran out).
    Finished,
    /// A webhook failed; the reason, with no secret in it.
    Failed(String),
}

impl End {
    /// The `CallStatus` Twilio reports for a call that ended so.
    pub fn call_status(&self) -> &'static str {
        match self {
            Self::Declined => "busy",
            Self::NotAnswered => "no-answer",
            Self::Failed(_) => "failed",
            Self::HungUp | Self::EndedByVerifyd | Self::Finished => "completed",
        }
    }
}

/// One line of what happened on the call, for the phone's screen.
#[derive(Clone, PartialEq, Eq)]
pub enum Line {
    /// What the call said. It may be a code: no `Debug`.
    Said(Zeroizing<String>),
    /// Keys the person sent.
    Pressed(String),
}

impl std::fmt::Debug for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Said(text) => write!(f, "Said(<{} bytes>)", text.len()),
            Self::Pressed(keys) => write!(f, "Pressed({} keys)", keys.len()),
        }
    }
}

/// What a call says once answered.
#[derive(Clone, PartialEq, Eq)]
pub enum Script {
    /// verifyd's instructions, fetched from its webhooks.
    Webhooks(Webhooks),
    /// Words that came with the call (`verifyd send-test`).
    Inline(Zeroizing<String>),
}

/// The URLs carry the call's token, and the words may be anything: not
/// shown.
impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Webhooks(_) => "Webhooks(<redacted>)",
            Self::Inline(_) => "Inline(<redacted>)",
        })
    }
}

/// Where a call's webhooks go, as the Calls API request gave them.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhooks {
    /// `Url`: where the call fetches what to say once answered.
    pub instructions: String,
    /// `StatusCallback`.
    pub status: Option<String>,
}

/// The URLs carry the call's token: not shown.
impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Webhooks(<redacted>)")
    }
}

/// The keys a person sent, and where they go.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    pub action: String,
    pub digits: String,
}

/// The action URL carries the call's token, and the keys may be digits
/// shown on screen: neither is shown.
impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(<{} keys>)", self.digits.len())
    }
}

#[derive(Clone)]
pub struct Call {
    pub sid: String,
    pub to: String,
    pub placed_at: SystemTime,
    pub script: Script,
    pub state: State,
    pub transcript: Vec<Line>,
    /// The gather waiting for keys, when one is.
    gather: Option<Gather>,
    /// What the instructions do when the gather gets no keys in time.
    after_gather: Vec<Instruction>,
    /// Keys typed into a gather that waits for `#`.
    typed: String,
}

/// The most keys a gather takes before it is sent regardless, as Twilio's
/// `Digits` carries (verifyd reads at most 16).
const MAX_TYPED: usize = 16;

/// What a call said may be a code, and its URLs carry its token.
impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("sid", &self.sid)
            .field("state", &self.state)
            .field("lines", &self.transcript.len())
            .finish_non_exhaustive()
    }
}

impl Call {
    pub fn ringing(sid: String, to: String, placed_at: SystemTime, script: Script) -> Self {
        Self {
            sid,
            to,
            placed_at,
            script,
            state: State::Ringing,
            transcript: Vec::new(),
            gather: None,
            after_gather: Vec::new(),
            typed: String::new(),
        }
    }

    pub fn is_live(&self) -> bool {
        !matches!(self.state, State::Ended(_))
    }

    /// Whether a gather waits for keys.
    pub fn waits_for_keys(&self) -> bool {
        self.state == State::Connected && self.gather.is_some()
    }

    /// The keys typed so far into a gather that waits for `#`.
    pub fn typed(&self) -> &str {
        &self.typed
    }

    /// Ends the call, unless it has already ended; says whether it did.
    pub fn end(&mut self, how: End) -> bool {
        if !self.is_live() {
            return false;
        }
        self.state = State::Ended(how);
        self.gather = None;
        self.after_gather.clear();
        self.typed.clear();
        true
    }

    /// Runs verifyd's instructions as Twilio would: says each `Say`, stops
    /// at a gather (keeping what follows it for a timeout), and ends the
    /// call at a `Hangup` or when the instructions run out. A call that
    /// ended meanwhile (verifyd hung up) ignores them.
    pub fn follow(&mut self, instructions: Vec<Instruction>) {
        if !self.is_live() {
            return;
        }
        self.state = State::Connected;
        let mut instructions = instructions.into_iter();
        while let Some(instruction) = instructions.next() {
            match instruction {
                Instruction::Say(text) => self.transcript.push(Line::Said(text)),
                Instruction::Gather(mut gather) => {
                    self.transcript
                        .extend(gather.prompt.drain(..).map(Line::Said));
                    self.gather = Some(gather);
                    self.after_gather = instructions.collect();
                    return;
                }
                Instruction::Hangup => break,
            }
        }
        self.end(End::Finished);
    }

    /// A key pressed: the keys to send once the gather has them all (its
    /// `numDigits`, or its finishing key, which is not sent), else `None`.
    pub fn press(&mut self, key: char) -> Option<Keys> {
        if !self.waits_for_keys() || !is_key(key) {
            return None;
        }
        let gather = self.gather.as_ref()?;
        let finished = if gather.finish_on_key == Some(key) {
            true
        } else {
            self.typed.push(key);
            gather.num_digits.is_some_and(|n| self.typed.len() >= n)
                || self.typed.len() >= MAX_TYPED
        };
        if !finished {
            return None;
        }
        let gather = self.gather.take()?;
        let digits = std::mem::take(&mut self.typed);
        if digits.is_empty() {
            // `#` alone: Twilio sends nothing and goes on as on a timeout.
            self.gather = Some(gather);
            self.time_out();
            return None;
        }
        self.transcript.push(Line::Pressed(digits.clone()));
        self.after_gather.clear();
        self.state = State::Connecting;
        Some(Keys {
            action: gather.action,
            digits,
        })
    }

    /// The gather waited in vain: what follows it runs (verifyd's goodbye).
    pub fn time_out(&mut self) {
        if self.gather.take().is_none() {
            return;
        }
        self.typed.clear();
        let after = std::mem::take(&mut self.after_gather);
        self.follow(after);
    }
}

/// A phone's keypad.
pub fn is_key(key: char) -> bool {
    key.is_ascii_digit() || key == '#' || key == '*'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn say(text: &str) -> Instruction {
        Instruction::Say(Zeroizing::new(text.to_owned()))
    }

    fn gather(num_digits: Option<usize>, finish_on_key: Option<char>) -> Instruction {
        Instruction::Gather(Gather {
            action: "http://127.0.0.1/gather".to_owned(),
            num_digits,
            finish_on_key,
            prompt: vec![Zeroizing::new("Press pound.".to_owned())],
        })
    }

    fn answered(instructions: Vec<Instruction>) -> Call {
        let script = Script::Inline(Zeroizing::new(String::new()));
        let mut call = Call::ringing("CA1".into(), "+1".into(), SystemTime::UNIX_EPOCH, script);
        call.follow(instructions);
        call
    }

    fn said(call: &Call) -> Vec<String> {
        call.transcript
            .iter()
            .map(|line| match line {
                Line::Said(text) => text.to_string(),
                Line::Pressed(keys) => format!("[{keys}]"),
            })
            .collect()
    }

    #[test]
    fn one_key_gathers_send_pound_as_a_key() {
        let mut call = answered(vec![
            say("Hello."),
            gather(Some(1), None),
            say("Bye."),
            Instruction::Hangup,
        ]);
        assert!(call.waits_for_keys());
        let keys = call.press('#').expect("sent at once");
        assert_eq!(keys.digits, "#");
        assert_eq!(call.state, State::Connecting);
        call.follow(vec![say("Approved."), Instruction::Hangup]);
        assert_eq!(call.state, State::Ended(End::Finished));
        assert_eq!(said(&call), ["Hello.", "Press pound.", "[#]", "Approved."]);
    }

    #[test]
    fn digits_wait_for_pound_which_is_not_sent() {
        let mut call = answered(vec![gather(None, Some('#'))]);
        assert_eq!(call.press('4'), None);
        assert_eq!(call.press('2'), None);
        assert_eq!(call.typed(), "42");
        assert_eq!(call.press('#').expect("sent").digits, "42");
        assert_eq!(
            call.press('1'),
            None,
            "no gather open until verifyd answers"
        );
    }

    #[test]
    fn a_gather_that_times_out_runs_what_follows_it() {
        let mut call = answered(vec![
            gather(Some(1), None),
            say("Goodbye."),
            Instruction::Hangup,
        ]);
        call.time_out();
        assert_eq!(call.state, State::Ended(End::Finished));
        assert_eq!(said(&call), ["Press pound.", "Goodbye."]);
        assert!(!call.end(End::HungUp), "already over");
    }

    #[test]
    fn instructions_after_verifyd_hung_up_are_ignored() {
        let mut call = answered(vec![gather(Some(1), None)]);
        assert!(call.end(End::EndedByVerifyd));
        call.follow(vec![say("late")]);
        assert_eq!(call.state, State::Ended(End::EndedByVerifyd));
        assert_eq!(End::EndedByVerifyd.call_status(), "completed");
        assert_eq!(End::Declined.call_status(), "busy");
    }
}
