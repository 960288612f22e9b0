//! Message wording. Placeholder: English only, no overrides. Localized,
//! overridable templates replace this.

use std::path::Path;

use super::{Content, Message};
use crate::domain::{Channel, Purpose, VoiceMode};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name}: {problem}")]
pub struct TemplateError {
    pub name: String,
    pub problem: String,
}

/// The message templates.
#[derive(Debug, Default)]
pub struct Templates {
    webotp_domain: Option<String>,
}

impl Templates {
    /// The built-in templates, with any in `overrides` taking their place.
    pub fn load(
        overrides: Option<&Path>,
        webotp_domain: Option<String>,
    ) -> Result<Self, TemplateError> {
        let _ = overrides;
        Ok(Self { webotp_domain })
    }

    pub fn render(&self, message: &Message) -> Result<Content, TemplateError> {
        let app = &message.app_name;
        let code = message.code.expose();
        let minutes = message.valid_for.as_secs().div_ceil(60);
        let reason = match message.purpose {
            Purpose::Enrollment => "to confirm this contact method",
            Purpose::PasswordReset => "to reset your password",
            Purpose::MethodUpdate => "to update your security details",
        };
        let text = format!(
            "Your {app} verification code is {code}. Use it {reason}; it expires in {minutes} minutes. Don't share it with anyone."
        );
        Ok(
            match (message.delivery.channel, message.delivery.voice_mode) {
                (Channel::Voice, Some(VoiceMode::Confirm) | None) => Content::Speech(format!(
                    "This is {app}. Someone asked {reason}. If it was you, press the pound key."
                )),
                (Channel::Voice, Some(VoiceMode::Match)) => Content::Speech(format!(
                    "This is {app}. Someone asked {reason}. Key in the digits shown on your screen, then press the pound key."
                )),
                (Channel::Voice, Some(VoiceMode::Code)) => {
                    let spaced = code.chars().map(String::from).collect::<Vec<_>>().join(" ");
                    Content::Speech(format!(
                        "This is {app}. Your verification code is {spaced}. Again: {spaced}."
                    ))
                }
                (Channel::Sms, _) => Content::Text(match &self.webotp_domain {
                    Some(domain) => format!("{text}\n\n@{domain} #{code}"),
                    None => text,
                }),
                (Channel::Email, _) => Content::Email {
                    subject: format!("Your {app} verification code"),
                    html: format!("<p>{text}</p>"),
                    text,
                },
            },
        )
    }
}
