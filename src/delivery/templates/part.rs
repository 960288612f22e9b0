//! The parts of a message, each its own template file, and what each may
//! print.

use crate::domain::Purpose;

/// The purposes a template may be written for (`{locale}/{purpose}/...`).
pub(super) const PURPOSES: [Purpose; 3] = [
    Purpose::Enrollment,
    Purpose::PasswordReset,
    Purpose::MethodUpdate,
];

/// One piece of a message, each its own template file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Sms,
    EmailSubject,
    EmailText,
    EmailHtml,
    VoiceConfirm,
    VoiceMatch,
    VoiceCode,
    /// A read-aloud call's opening: press a key to hear the code.
    VoiceCodeAsk,
    /// After a read-aloud call said a code: press a key for a new one.
    VoiceCodeAgain,
    VoiceRetry,
    /// A key the store could not make durable in time: press again.
    VoicePressAgain,
    VoiceWrongDigits,
    VoiceGoodbye,
    VoiceApproved,
    VoiceFraudMenu,
    VoiceFraudReported,
}

impl Part {
    pub(super) const ALL: [Self; 16] = [
        Self::Sms,
        Self::EmailSubject,
        Self::EmailText,
        Self::EmailHtml,
        Self::VoiceConfirm,
        Self::VoiceMatch,
        Self::VoiceCode,
        Self::VoiceCodeAsk,
        Self::VoiceCodeAgain,
        Self::VoiceRetry,
        Self::VoicePressAgain,
        Self::VoiceWrongDigits,
        Self::VoiceGoodbye,
        Self::VoiceApproved,
        Self::VoiceFraudMenu,
        Self::VoiceFraudReported,
    ];

    pub(super) fn file(self) -> &'static str {
        match self {
            Self::Sms => "sms.txt",
            Self::EmailSubject => "email_subject.txt",
            Self::EmailText => "email.txt",
            Self::EmailHtml => "email.html",
            Self::VoiceConfirm => "voice_confirm.txt",
            Self::VoiceMatch => "voice_match.txt",
            Self::VoiceCode => "voice_code.txt",
            Self::VoiceCodeAsk => "voice_code_ask.txt",
            Self::VoiceCodeAgain => "voice_code_again.txt",
            Self::VoiceRetry => "voice_retry.txt",
            Self::VoicePressAgain => "voice_press_again.txt",
            Self::VoiceWrongDigits => "voice_wrong_digits.txt",
            Self::VoiceGoodbye => "voice_goodbye.txt",
            Self::VoiceApproved => "voice_approved.txt",
            Self::VoiceFraudMenu => "voice_fraud_menu.txt",
            Self::VoiceFraudReported => "voice_fraud_reported.txt",
        }
    }

    pub(super) fn from_file(file: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.file() == file)
    }

    /// Whether the template gets the code, and must print it. Press-# and
    /// number-matching calls never say a code: their templates do not get
    /// one, so an override cannot speak it by mistake.
    pub(super) fn carries_code(self) -> bool {
        matches!(
            self,
            Self::Sms | Self::EmailSubject | Self::EmailText | Self::EmailHtml | Self::VoiceCode
        )
    }

    /// What the template may use, for error messages and the docs.
    pub(super) fn variables(self) -> &'static str {
        if self.carries_code() {
            "app_name, code, code_digits, minutes, purpose, locale"
        } else {
            "app_name, minutes, purpose, locale (never the code)"
        }
    }

    /// Whether a message without the code in this part is a mistake. The
    /// subject may show it (for notification previews) or not.
    pub(super) fn must_show_code(self) -> bool {
        self.carries_code() && self != Self::EmailSubject
    }
}
