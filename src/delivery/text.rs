//! Message wording. English only for now; localized templates replace this.

use super::Message;
use crate::domain::{Channel, Purpose, VoiceMode};

/// The text a user receives or hears.
pub fn render(message: &Message) -> String {
    let app = &message.app_name;
    let code = message.code.expose();
    let minutes = message.valid_for.as_secs().div_ceil(60);
    let reason = match message.purpose {
        Purpose::Enrollment => "to confirm this contact method",
        Purpose::PasswordReset => "to reset your password",
        Purpose::MethodUpdate => "to update your security details",
    };
    match (message.delivery.channel, message.delivery.voice_mode) {
        (Channel::Voice, Some(VoiceMode::Confirm) | None) => {
            format!("This is {app}. Someone asked {reason}. If it was you, press the pound key.")
        }
        (Channel::Voice, Some(VoiceMode::Match)) => format!(
            "This is {app}. Someone asked {reason}. Key in the digits shown on your screen, then press the pound key."
        ),
        (Channel::Voice, Some(VoiceMode::Code)) => format!(
            "This is {app}. Your verification code is {}. Again: {}.",
            spaced(code),
            spaced(code)
        ),
        (Channel::Sms | Channel::Email, _) => format!(
            "Your {app} verification code is {code}. Use it {reason}; it expires in {minutes} minutes. Don't share it with anyone."
        ),
    }
}

/// Digits read one at a time by a text-to-speech engine.
fn spaced(code: &str) -> String {
    code.chars().map(String::from).collect::<Vec<_>>().join(" ")
}
