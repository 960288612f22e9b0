//! The dev-only sender: writes each message to stdout (logs go to stderr),
//! marked as not a real delivery. This is the one place a code may appear,
//! and it is used only in dev mode or where configured explicitly.

use std::{
    fmt,
    io::Write,
    sync::{Arc, Mutex, PoisonError},
};

use super::message::{Content, FailureKind, Message, Receipt, SendError};

type Output = Arc<Mutex<dyn Write + Send>>;

#[derive(Clone)]
pub struct ConsoleSender {
    out: Output,
}

impl fmt::Debug for ConsoleSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsoleSender").finish_non_exhaustive()
    }
}

impl ConsoleSender {
    pub const PROVIDER: &'static str = "console";

    pub fn stdout() -> Self {
        Self::to_writer(std::io::stdout())
    }

    /// Writes to any sink: tests pass a buffer they read codes from.
    pub fn to_writer(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Arc::new(Mutex::new(out)),
        }
    }

    pub(super) fn send(&self, message: &Message, content: &Content) -> Result<Receipt, SendError> {
        self.write(message, Shown::Secrets, content.text())?;
        Ok(Receipt {
            provider: Self::PROVIDER.to_owned(),
            reference: None,
            code_withheld: false,
        })
    }

    /// A line about `message` that is not its text, and carries no code:
    /// the simulated phone says where its call rings.
    pub(super) fn note(&self, message: &Message, note: &str) -> Result<(), SendError> {
        self.write(message, Shown::Destination, note)
    }

    fn write(&self, message: &Message, shown: Shown, text: &str) -> Result<(), SendError> {
        // One buffer, written at once: a line per send, never interleaved.
        let mut line = String::with_capacity(LINE_START.len() + 160 + text.len());
        line.push_str(LINE_START);
        for (name, value) in [
            ("channel", message.delivery.channel.as_str()),
            ("to", message.to.as_str()),
            ("verification", message.verification_id.as_str()),
        ] {
            push_field(&mut line, name, value);
        }
        if let Some(extension) = &message.extension {
            push_field(&mut line, "extension", extension.as_str());
        }
        // Press-# and number-matching calls have no code to show.
        if shown == Shown::Secrets && message.carries_code() {
            push_field(&mut line, "code", message.code.expose());
        }
        if let Some(digits) = message
            .match_digits
            .as_ref()
            .filter(|_| message.delivery.voice_mode == Some(crate::domain::VoiceMode::Match))
        {
            push_field(&mut line, "match_digits", digits.as_str());
        }
        line.push_str(" | ");
        // The message on one line.
        for (i, part) in text.split('\n').enumerate() {
            if i > 0 {
                line.push(' ');
            }
            line.push_str(part);
        }
        line.push('\n');
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            // A line that could not be written is no delivery: a developer
            // reads whole lines.
            .map_err(|e| SendError::new(Self::PROVIDER, FailureKind::Unsent, e.kind().to_string()))
    }
}

/// What a console line shows besides the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shown {
    /// The code (when the message carries one) and match digits.
    Secrets,
    /// Match digits only.
    Destination,
}

/// How every console line starts: it is no delivery.
const LINE_START: &str = "[verifyd dev-only console sender, not a real delivery]";

/// ` name=value`.
fn push_field(line: &mut String, name: &str, value: &str) {
    line.push(' ');
    line.push_str(name);
    line.push('=');
    line.push_str(value);
}
