//! Skeletons: a text that carries the code, rendered once with a marker
//! where the code goes and kept, so the next message of its kind only puts
//! its code in. Rendering a template is much of what a start costs, and
//! only the code changes from one message to the next. Whole messages made
//! of these texts are kept in `skeleton`.

use std::sync::{Arc, PoisonError};

use zeroize::Zeroizing;

use super::{
    Templates,
    part::Part,
    render::{Vars, minutes, voice_part},
    skeleton::{MAX_SKELETONS, MessageSkeleton, Pieces},
};
use crate::{
    delivery::message::Message,
    domain::{Channel, Locale},
};

/// Two markers no template text holds (Unicode private use), one per
/// code digit, so that a template's `code|length` sees the real length.
const MARK_A: char = '\u{E000}';
const MARK_B: char = '\u{E001}';

/// Whether `source` uses the code only by printing it, `{{ code }}`, or
/// its digits joined with a literal, `{{ code_digits|join(", ") }}`: no
/// test, filter or loop that could make a text depend on the code's value.
/// Only tags are read; the word "code" in the text itself is just text.
pub(super) fn prints_code_only(source: &str) -> bool {
    let mut rest = source;
    while let Some(open) = rest.find(['{']) {
        let tag = &rest[open..];
        let close = match tag.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                rest = &rest[open + 1..];
                continue;
            }
        };
        let Some(end) = tag[2..].find(close) else {
            // Unclosed: the loader refuses it anyway.
            return false;
        };
        let inner =
            tag[2..2 + end].trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        let printed = close == "}}" && prints_code(inner);
        if close != "#}" && !printed && mentions_code(inner) {
            return false;
        }
        rest = &tag[2 + end + 2..];
    }
    true
}

/// Whether a `{{ ... }}` tag's expression is `code`, or `code_digits`
/// joined with a string literal.
fn prints_code(expr: &str) -> bool {
    let compact: String = expr.split_whitespace().collect();
    compact == "code"
        || compact
            .strip_prefix("code_digits|join(")
            .and_then(|arg| arg.strip_suffix(')'))
            .is_some_and(|arg| {
                arg.len() >= 2
                    && (arg.starts_with('"') && arg.ends_with('"')
                        || arg.starts_with('\'') && arg.ends_with('\''))
            })
}

fn mentions_code(expr: &str) -> bool {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|word| word == "code" || word == "code_digits")
}

impl Templates {
    /// A message's skeleton: each part's skeleton, cut where the code
    /// goes. `None` when a part has none.
    pub(super) fn message_skeleton(&self, message: &Message) -> Option<MessageSkeleton> {
        let mark: String =
            std::iter::repeat_n(MARK_A, message.code.expose().chars().count()).collect();
        let vars = Vars {
            app_name: &message.app_name,
            code: &mark,
            minutes: minutes(message.valid_for),
            purpose: message.purpose,
        };
        let locale = message.delivery.locale.as_ref().map(Locale::as_str);
        let part = |part| {
            let (name, found) = self.resolve(locale, vars.purpose, part)?;
            self.skeleton(&name, found, part, &vars)
                .map(|text| Pieces::cut(&text, &mark))
        };
        Some(match message.delivery.channel {
            Channel::Sms => {
                let (name, found) = self.resolve(locale, vars.purpose, Part::Sms)?;
                let body = self.skeleton(&name, found, Part::Sms, &vars)?;
                // As `render_afresh` ends it.
                let text = match &self.webotp_domain {
                    Some(domain) => format!("{body}\n\n@{domain} #{mark}"),
                    None => body.to_string(),
                };
                MessageSkeleton::Text(Pieces::cut(&text, &mark))
            }
            Channel::Email => MessageSkeleton::Email {
                subject: part(Part::EmailSubject)?,
                text: part(Part::EmailText)?,
                html: part(Part::EmailHtml)?,
            },
            Channel::Voice => MessageSkeleton::Speech(part(voice_part(message))?),
        })
    }

    /// The text with the code, from its skeleton (a part without the code,
    /// like an email's subject, is its own skeleton). A template gets a
    /// skeleton only when rendering it with two different markers gives
    /// texts that differ exactly where the markers are, so whatever it does
    /// with the code, the code alone goes where a marker was. `None`:
    /// render it afresh.
    pub(super) fn with_code(
        &self,
        name: &str,
        found: &str,
        part: Part,
        vars: &Vars<'_>,
    ) -> Option<Zeroizing<String>> {
        let mark_a: String = std::iter::repeat_n(MARK_A, vars.code.chars().count()).collect();
        self.skeleton(name, found, part, vars)
            .map(|s| Zeroizing::new(Pieces::cut(&s, &mark_a).fill(vars.code)))
    }

    /// The skeleton of template `name` for codes as long as `vars.code`:
    /// the text with one `MARK_A` per digit where the code goes, made once
    /// and kept. `None` for a template that may not have one.
    fn skeleton(&self, name: &str, found: &str, part: Part, vars: &Vars<'_>) -> Option<Arc<str>> {
        let len = vars.code.chars().count();
        let key = (
            name.to_owned(),
            found.to_owned(),
            vars.app_name.to_owned(),
            vars.minutes,
            vars.purpose,
            len,
        );
        let cached = self
            .skeletons
            .texts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(skeleton) = cached {
            return skeleton;
        }
        let mark_a: String = std::iter::repeat_n(MARK_A, len).collect();
        let mark_b: String = std::iter::repeat_n(MARK_B, len).collect();
        let with = |mark: &str| {
            let vars = Vars {
                code: mark,
                ..*vars
            };
            self.render_named(name, found, part, &vars).ok()
        };
        let skeleton = match (with(&mark_a), with(&mark_b)) {
            (Some(a), Some(b)) if a.replace(&mark_a, &mark_b) == *b => Some(Arc::from(a.as_str())),
            _ => None,
        };
        let mut skeletons = self
            .skeletons
            .texts
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if skeletons.len() < MAX_SKELETONS {
            skeletons.insert(key, skeleton.clone());
        }
        skeleton
    }
}
