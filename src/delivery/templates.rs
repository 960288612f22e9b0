//! Message wording: minijinja templates per locale, per part of a message
//! (the SMS, the email's subject, text and HTML, each voice mode's speech),
//! and optionally per purpose. The built-in ones (`templates/`) are embedded
//! in the binary; a directory (`delivery.templates_dir`) may replace any of
//! them or add locales, and a tenant's (`tenants.NAME.templates_dir`) may
//! do the same over those for that tenant's messages.
//!
//! One part is looked up along the locale chain (`fr-CA`, `fr`, then `en`),
//! trying `{locale}/{purpose}/{part}` before `{locale}/{part}` in each: a
//! language the user reads beats wording written for the purpose. Every
//! template a lookup can reach is rendered once with sample values at load,
//! so a broken override stops startup instead of a send.
//!
//! Only `.html` templates escape what they print; the others are plain text.
//!
//! The parts of a message and their files are in `part`; reading the
//! built-in and override layers and checking the loaded set in `load`;
//! rendering a message or a call's prompt in `render`; texts kept with a
//! marker where the code goes (skeletons) in `cache`, and whole messages
//! made of them in `skeleton`.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Arc, RwLock},
};

use minijinja::Environment;

use self::skeleton::MessageSkeletons;
use crate::domain::{Purpose, VoiceMode};

/// The language every lookup ends with; the built-in templates cover every
/// part in it.
pub const DEFAULT_LOCALE: &str = "en";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {name}: {problem}")]
pub struct TemplateError {
    pub name: String,
    pub problem: String,
}

impl TemplateError {
    fn new(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            problem: problem.into(),
        }
    }
}

/// What a live call says at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallPrompt {
    /// The opening question: press # (confirm), key in the digits (match),
    /// or press a key to hear the code (code).
    Ask(VoiceMode),
    /// After a read-aloud call said a code: press a key for a new one.
    CodeAgain,
    Retry,
    /// The keys' effect could not be made durable in time (Redis's
    /// `wait_replicas`): press # again.
    PressAgain,
    WrongDigits,
    Goodbye,
    Approved,
    FraudMenu,
    FraudReported,
}

/// The message templates, loaded and checked.
pub struct Templates {
    env: Environment<'static>,
    /// Every template name present, built-in or overridden.
    names: BTreeSet<String>,
    /// Every locale with at least one template.
    locales: BTreeSet<String>,
    /// Where overrides came from, for error messages: each directory and
    /// the names it holds, in the order they were layered.
    overrides: Vec<(String, BTreeSet<String>)>,
    webotp_domain: Option<String>,
    /// Texts that carry the code, rendered once with a marker where the
    /// code goes (see `with_code`).
    skeletons: Skeletons,
    /// Whole messages from those skeletons, by kind of message.
    messages: MessageSkeletons,
}

/// What a text with the code depends on besides the code: its template,
/// the locale it was found in, the app name, the minutes, the purpose and
/// the code's length.
type SkeletonKey = (String, String, String, u64, Purpose, usize);

/// A text with markers where the code goes, or `None` for a template that
/// does more with the code than print it (spells out its digits, say), so
/// it is rendered afresh each time. Bounded: past `MAX_SKELETONS` texts
/// are rendered afresh too. The texts hold no code.
#[derive(Debug, Default)]
struct Skeletons {
    /// Off unless every template source only prints the code
    /// (`prints_code_only`): a template that tests the code's value could
    /// print something else for one code than for the markers.
    enabled: bool,
    texts: RwLock<HashMap<SkeletonKey, Option<Arc<str>>>>,
}

impl fmt::Debug for Templates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Templates")
            .field("locales", &self.locales)
            .field(
                "overrides",
                &self
                    .overrides
                    .iter()
                    .map(|(dir, names)| (dir, names.len()))
                    .collect::<Vec<_>>(),
            )
            .field("webotp_domain", &self.webotp_domain)
            .finish()
    }
}

impl Templates {
    /// The locales with templates of their own (others fall back).
    pub fn locales(&self) -> impl Iterator<Item = &str> {
        self.locales.iter().map(String::as_str)
    }
}

mod cache;
mod load;
mod part;
mod render;
mod skeleton;
#[cfg(test)]
mod tests;
