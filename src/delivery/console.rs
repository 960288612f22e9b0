//! The dev-only sender: writes each message to stdout (logs go to stderr),
//! marked as not a real delivery. This is the one place a code may appear,
//! and it is used only in dev mode or where configured explicitly.

use std::{
    fmt,
    io::Write,
    sync::{Arc, Mutex, PoisonError},
};

use super::{Content, FailureKind, Message, Receipt, SendError};

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
        // Press-# and number-matching calls have no code to show.
        let code = if message.carries_code() {
            format!(" code={}", message.code.expose())
        } else {
            String::new()
        };
        let line = format!(
            "[verifyd dev-only console sender, not a real delivery] channel={} to={} verification={}{code}{} | {}\n",
            message.delivery.channel.as_str(),
            message.to.as_str(),
            message.verification_id,
            message
                .match_digits
                .as_ref()
                .filter(|_| message.delivery.voice_mode == Some(crate::domain::VoiceMode::Match))
                .map(|d| format!(" match_digits={}", d.as_str()))
                .unwrap_or_default(),
            content.text().replace('\n', " "),
        );
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.write_all(line.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| {
                SendError::new(Self::PROVIDER, FailureKind::Transient, e.kind().to_string())
            })?;
        Ok(Receipt {
            provider: Self::PROVIDER.to_owned(),
            reference: None,
        })
    }
}
