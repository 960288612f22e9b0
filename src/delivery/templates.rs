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

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt, fs,
    path::Path,
    sync::{Arc, PoisonError, RwLock},
};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value, context, syntax::SyntaxConfig};
use zeroize::Zeroizing;

use self::skeleton::{Kind, MAX_SKELETONS, MessageSkeleton, MessageSkeletons, Pieces};
use super::message::{Content, Message};
use crate::domain::{Channel, Locale, Purpose, VoiceMode};

/// The language every lookup ends with; the built-in templates cover every
/// part in it.
pub const DEFAULT_LOCALE: &str = "en";

const PURPOSES: [Purpose; 3] = [
    Purpose::Enrollment,
    Purpose::PasswordReset,
    Purpose::MethodUpdate,
];

/// Stands in for the code when templates are checked at load. Digits no
/// template text is likely to contain, so finding them means the code is
/// there.
const SAMPLE_CODE: &str = "40719368";

/// Larger override files are refused: a message template is a few hundred
/// bytes, and this keeps a mistaken mount from being read into memory.
const MAX_TEMPLATE_BYTES: u64 = 64 * 1024;

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
    /// The opening question: press # (confirm) or key in the digits (match).
    Ask(VoiceMode),
    Retry,
    WrongDigits,
    Goodbye,
    Approved,
    FraudMenu,
    FraudReported,
}

/// One piece of a message, each its own template file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Sms,
    EmailSubject,
    EmailText,
    EmailHtml,
    VoiceConfirm,
    VoiceMatch,
    VoiceCode,
    VoiceRetry,
    VoiceWrongDigits,
    VoiceGoodbye,
    VoiceApproved,
    VoiceFraudMenu,
    VoiceFraudReported,
}

impl Part {
    const ALL: [Self; 13] = [
        Self::Sms,
        Self::EmailSubject,
        Self::EmailText,
        Self::EmailHtml,
        Self::VoiceConfirm,
        Self::VoiceMatch,
        Self::VoiceCode,
        Self::VoiceRetry,
        Self::VoiceWrongDigits,
        Self::VoiceGoodbye,
        Self::VoiceApproved,
        Self::VoiceFraudMenu,
        Self::VoiceFraudReported,
    ];

    fn file(self) -> &'static str {
        match self {
            Self::Sms => "sms.txt",
            Self::EmailSubject => "email_subject.txt",
            Self::EmailText => "email.txt",
            Self::EmailHtml => "email.html",
            Self::VoiceConfirm => "voice_confirm.txt",
            Self::VoiceMatch => "voice_match.txt",
            Self::VoiceCode => "voice_code.txt",
            Self::VoiceRetry => "voice_retry.txt",
            Self::VoiceWrongDigits => "voice_wrong_digits.txt",
            Self::VoiceGoodbye => "voice_goodbye.txt",
            Self::VoiceApproved => "voice_approved.txt",
            Self::VoiceFraudMenu => "voice_fraud_menu.txt",
            Self::VoiceFraudReported => "voice_fraud_reported.txt",
        }
    }

    fn from_file(file: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.file() == file)
    }

    /// Whether the template gets the code, and must print it. Press-# and
    /// number-matching calls never say a code: their templates do not get
    /// one, so an override cannot speak it by mistake.
    fn carries_code(self) -> bool {
        matches!(
            self,
            Self::Sms | Self::EmailSubject | Self::EmailText | Self::EmailHtml | Self::VoiceCode
        )
    }

    /// What the template may use, for error messages and the docs.
    fn variables(self) -> &'static str {
        if self.carries_code() {
            "app_name, code, code_digits, minutes, purpose, locale"
        } else {
            "app_name, minutes, purpose, locale (never the code)"
        }
    }

    /// Whether a message without the code in this part is a mistake. The
    /// subject may show it (for notification previews) or not.
    fn must_show_code(self) -> bool {
        self.carries_code() && self != Self::EmailSubject
    }
}

macro_rules! built_in {
    ($($locale:literal),+ $(,)?) => {
        &[
            ("_layout.html", include_str!("templates/_layout.html")),
            $(
                built_in!(@part $locale, "sms.txt"),
                built_in!(@part $locale, "email_subject.txt"),
                built_in!(@part $locale, "email.txt"),
                built_in!(@part $locale, "email.html"),
                built_in!(@part $locale, "voice_confirm.txt"),
                built_in!(@part $locale, "voice_match.txt"),
                built_in!(@part $locale, "voice_code.txt"),
                built_in!(@part $locale, "voice_retry.txt"),
                built_in!(@part $locale, "voice_wrong_digits.txt"),
                built_in!(@part $locale, "voice_goodbye.txt"),
                built_in!(@part $locale, "voice_approved.txt"),
                built_in!(@part $locale, "voice_fraud_menu.txt"),
                built_in!(@part $locale, "voice_fraud_reported.txt"),
            )+
        ]
    };
    (@part $locale:literal, $file:literal) => {
        (
            concat!($locale, "/", $file),
            include_str!(concat!("templates/", $locale, "/", $file)),
        )
    };
}

/// The shipped templates, by name.
const BUILT_IN: &[(&str, &str)] = built_in!("en", "es", "fr", "de", "pt");

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

/// Whether `source` uses the code only by printing it, `{{ code }}`, or
/// its digits joined with a literal, `{{ code_digits|join(", ") }}`: no
/// test, filter or loop that could make a text depend on the code's value.
/// Only tags are read; the word "code" in the text itself is just text.
fn prints_code_only(source: &str) -> bool {
    let mentions_code = |expr: &str| {
        expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .any(|word| word == "code" || word == "code_digits")
    };
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
        let printed = close == "}}" && {
            let compact: String = inner.split_whitespace().collect();
            compact == "code"
                || compact
                    .strip_prefix("code_digits|join(")
                    .and_then(|arg| arg.strip_suffix(')'))
                    .is_some_and(|arg| {
                        arg.len() >= 2
                            && (arg.starts_with('"') && arg.ends_with('"')
                                || arg.starts_with('\'') && arg.ends_with('\''))
                    })
        };
        if close != "#}" && !printed && mentions_code(inner) {
            return false;
        }
        rest = &tag[2 + end + 2..];
    }
    true
}

/// Two markers no template text holds (Unicode private use), one per
/// code digit, so that a template's `code|length` sees the real length.
const MARK_A: char = '\u{E000}';
const MARK_B: char = '\u{E001}';

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

/// What one template sees.
struct Vars<'a> {
    app_name: &'a str,
    code: &'a str,
    minutes: u64,
    purpose: Purpose,
}

impl Vars<'_> {
    fn context(&self, part: Part, locale: &str) -> Value {
        let base = context! {
            app_name => self.app_name,
            minutes => self.minutes,
            purpose => self.purpose.as_str(),
            locale => locale,
        };
        if !part.carries_code() {
            return base;
        }
        let digits: Vec<String> = self.code.chars().map(String::from).collect();
        context! {
            code => self.code,
            code_digits => digits,
            ..base
        }
    }
}

impl Templates {
    /// The built-in templates, with any in `overrides` taking their place,
    /// every reachable one checked by rendering it. `webotp_domain`, when
    /// set, ends each SMS with the WebOTP line.
    pub fn load(
        overrides: Option<&Path>,
        webotp_domain: Option<String>,
    ) -> Result<Self, TemplateError> {
        Self::load_layers(overrides.as_slice(), webotp_domain)
    }

    /// The built-in templates with each directory's in turn taking the
    /// place of those of the same name: a tenant's directory layered over
    /// the server's, say. Checked as [`Templates::load`] checks them.
    pub fn load_layers(
        layers: &[&Path],
        webotp_domain: Option<String>,
    ) -> Result<Self, TemplateError> {
        if let Some(domain) = &webotp_domain {
            check_webotp_domain(domain)?;
        }
        let mut sources = BTreeMap::new();
        let mut origin = Vec::new();
        for dir in layers {
            let layer = read_overrides(dir)?;
            let names = layer.iter().map(|(name, _)| name.clone()).collect();
            origin.push((dir.display().to_string(), names));
            sources.extend(layer);
        }
        Self::build(sources.into_iter().collect(), origin, webotp_domain)
    }

    fn build(
        overrides: Vec<(String, String)>,
        origin: Vec<(String, BTreeSet<String>)>,
        webotp_domain: Option<String>,
    ) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| TemplateError::new("syntax", one_line(&e.to_string())))?;
        env.set_syntax(syntax);
        // A misspelt variable is an error, not an empty string in a message.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });

        let mut templates = Self {
            env,
            names: BTreeSet::new(),
            locales: BTreeSet::new(),
            overrides: origin,
            webotp_domain,
            skeletons: Skeletons {
                enabled: BUILT_IN
                    .iter()
                    .map(|(_, source)| *source)
                    .chain(overrides.iter().map(|(_, source)| source.as_str()))
                    .all(prints_code_only),
                texts: RwLock::default(),
            },
            messages: MessageSkeletons::default(),
        };
        let replaced: BTreeSet<&str> = overrides.iter().map(|(n, _)| n.as_str()).collect();
        for &(name, source) in BUILT_IN {
            if !replaced.contains(name) {
                templates
                    .env
                    .add_template(name, source)
                    .map_err(|e| templates.problem(name, &describe(&e)))?;
                templates.names.insert(name.to_owned());
            }
        }
        for (name, source) in overrides {
            templates
                .env
                .add_template_owned(name.clone(), source)
                .map_err(|e| templates.problem(&name, &describe(&e)))?;
            templates.names.insert(name);
        }
        templates.locales = templates
            .names
            .iter()
            .filter_map(|name| name.split_once('/').map(|(locale, _)| locale.to_owned()))
            .collect();
        templates.check()?;
        Ok(templates)
    }

    /// The locales with templates of their own (others fall back).
    pub fn locales(&self) -> impl Iterator<Item = &str> {
        self.locales.iter().map(String::as_str)
    }

    pub fn render(&self, message: &Message) -> Result<Content, TemplateError> {
        if self.skeletons.enabled {
            let kind = Kind::of(message, minutes(message.valid_for));
            if let Some(skeleton) = self
                .messages
                .get_or_make(&kind, || self.message_skeleton(message))
            {
                return Ok(skeleton.fill(message.code.expose()));
            }
        }
        self.render_afresh(message)
    }

    /// A message's skeleton: each part's skeleton, cut where the code
    /// goes. `None` when a part has none.
    fn message_skeleton(&self, message: &Message) -> Option<MessageSkeleton> {
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

    /// What `render` makes, rendered part by part.
    fn render_afresh(&self, message: &Message) -> Result<Content, TemplateError> {
        let code = message.code.expose();
        let vars = Vars {
            app_name: &message.app_name,
            code,
            minutes: minutes(message.valid_for),
            purpose: message.purpose,
        };
        let locale = message.delivery.locale.as_ref().map(Locale::as_str);
        let part = |part| self.render_part(locale, part, &vars).map(|(_, text)| text);
        Ok(match message.delivery.channel {
            Channel::Sms => {
                let body = part(Part::Sms)?;
                Content::Text(match &self.webotp_domain {
                    // WebOTP wants it as the last line, exactly so.
                    Some(domain) => format!("{}\n\n@{domain} #{code}", body.as_str()),
                    None => body.to_string(),
                })
            }
            Channel::Email => Content::Email {
                subject: part(Part::EmailSubject)?.to_string(),
                text: part(Part::EmailText)?.to_string(),
                html: part(Part::EmailHtml)?.to_string(),
            },
            Channel::Voice => Content::Speech(part(voice_part(message))?.to_string()),
        })
    }

    /// What a live call says at one step. Calls that ask for keys never get
    /// the code.
    pub fn render_call(
        &self,
        locale: Option<&str>,
        purpose: Purpose,
        app_name: &str,
        valid_for: std::time::Duration,
        prompt: CallPrompt,
    ) -> Result<String, TemplateError> {
        let vars = Vars {
            app_name,
            code: "",
            minutes: minutes(valid_for),
            purpose,
        };
        let part = match prompt {
            CallPrompt::Ask(VoiceMode::Match) => Part::VoiceMatch,
            CallPrompt::Ask(_) => Part::VoiceConfirm,
            CallPrompt::Retry => Part::VoiceRetry,
            CallPrompt::WrongDigits => Part::VoiceWrongDigits,
            CallPrompt::Goodbye => Part::VoiceGoodbye,
            CallPrompt::Approved => Part::VoiceApproved,
            CallPrompt::FraudMenu => Part::VoiceFraudMenu,
            CallPrompt::FraudReported => Part::VoiceFraudReported,
        };
        self.render_part(locale, part, &vars)
            .map(|(_, text)| text.to_string())
    }

    /// The template for `part`: the first of the locale chain that has one,
    /// the purpose's own before the locale's general one.
    fn resolve(
        &self,
        locale: Option<&str>,
        purpose: Purpose,
        part: Part,
    ) -> Option<(String, &str)> {
        locale_chain(locale).into_iter().find_map(|loc| {
            let loc = self.locales.get(loc.as_str())?;
            [
                format!("{loc}/{}/{}", purpose.as_str(), part.file()),
                format!("{loc}/{}", part.file()),
            ]
            .into_iter()
            .find(|name| self.names.contains(name))
            .map(|name| (name, loc.as_str()))
        })
    }

    fn render_part(
        &self,
        locale: Option<&str>,
        part: Part,
        vars: &Vars<'_>,
    ) -> Result<(String, Zeroizing<String>), TemplateError> {
        let (name, found) = self
            .resolve(locale, vars.purpose, part)
            .ok_or_else(|| TemplateError::new(part.file(), "no template in any locale"))?;
        if self.skeletons.enabled
            && !vars.code.is_empty()
            && let Some(text) = self.with_code(&name, found, part, vars)
        {
            return Ok((name, text));
        }
        let text = self.render_named(&name, found, part, vars)?;
        Ok((name, text))
    }

    /// The text with the code, from its skeleton: rendering a template is
    /// much of what a start costs, and only the code changes from one
    /// message to the next (a part without the code, like an email's
    /// subject, is its own skeleton). A template gets a skeleton only when rendering
    /// it with two different markers gives texts that differ exactly where
    /// the markers are, so whatever it does with the code, the code alone
    /// goes where a marker was. `None`: render it afresh.
    fn with_code(
        &self,
        name: &str,
        found: &str,
        part: Part,
        vars: &Vars<'_>,
    ) -> Option<Zeroizing<String>> {
        let mark_a: String = std::iter::repeat_n(MARK_A, vars.code.chars().count()).collect();
        self.skeleton(name, found, part, vars)
            .map(|s| Zeroizing::new(s.replace(&mark_a, vars.code)))
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

    fn render_named(
        &self,
        name: &str,
        found: &str,
        part: Part,
        vars: &Vars<'_>,
    ) -> Result<Zeroizing<String>, TemplateError> {
        let rendered = self
            .env
            .get_template(name)
            .and_then(|t| t.render(vars.context(part, found)))
            .map(Zeroizing::new)
            .map_err(|e| {
                // Keep whatever minijinja quoted from the values out of logs.
                let mut problem = describe(&e);
                if !vars.code.is_empty() {
                    problem = problem.replace(vars.code, "<code>");
                }
                if e.kind() == minijinja::ErrorKind::UndefinedError {
                    problem.push_str(&format!("; {} has {}", part.file(), part.variables()));
                }
                self.problem(name, &problem)
            })?;
        let tidy = match part {
            // A header: one line.
            Part::EmailSubject => rendered.split_whitespace().collect::<Vec<_>>().join(" "),
            _ => rendered.trim().to_owned(),
        };
        Ok(Zeroizing::new(tidy))
    }

    /// Renders every template a lookup can reach with sample values: every
    /// locale, purpose and part.
    fn check(&self) -> Result<(), TemplateError> {
        for locale in &self.locales {
            for purpose in PURPOSES {
                let vars = Vars {
                    app_name: "Acme",
                    code: SAMPLE_CODE,
                    minutes: 10,
                    purpose,
                };
                for part in Part::ALL {
                    let (name, text) = self.render_part(Some(locale), part, &vars)?;
                    if text.is_empty() {
                        return Err(self.problem(&name, "renders to nothing"));
                    }
                    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
                    if part.must_show_code() && !digits.contains(SAMPLE_CODE) {
                        return Err(self.problem(
                            &name,
                            "never shows the code (use {{ code }} or {{ code_digits }})",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// A problem with `name`, saying where it came from if it is an
    /// override.
    fn problem(&self, name: &str, problem: &str) -> TemplateError {
        let mut problem = one_line(problem);
        // The last layer holding it is the one in use.
        if let Some((dir, _)) = self
            .overrides
            .iter()
            .rev()
            .find(|(_, names)| names.contains(name))
        {
            problem.push_str(&format!(" (override in {dir})"));
        }
        TemplateError::new(name, problem)
    }
}

/// minijinja's message and its causes.
fn describe(e: &minijinja::Error) -> String {
    let mut problem = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        problem.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    problem
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `fr-CA` → `fr-CA`, `fr`, `en`: each tag with its last subtag dropped in
/// turn, then the default.
fn locale_chain(locale: Option<&str>) -> Vec<String> {
    let mut chain = Vec::new();
    let mut tag = locale.unwrap_or_default();
    while !tag.is_empty() {
        chain.push(tag.to_owned());
        tag = tag.rsplit_once('-').map_or("", |(head, _)| head);
    }
    if !chain.iter().any(|t| t == DEFAULT_LOCALE) {
        chain.push(DEFAULT_LOCALE.to_owned());
    }
    chain
}

/// The WebOTP line names a host: no scheme, port, path or spaces.
fn check_webotp_domain(domain: &str) -> Result<(), TemplateError> {
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if domain.len() <= 253 && domain.contains('.') && domain.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(TemplateError::new(
            "sms.txt",
            format!(
                "delivery.webotp_domain {domain:?} must be a host name such as example.com (no scheme, port or path; IDNs in their xn-- form)"
            ),
        ))
    }
}

/// The override directory's templates, by name. Layout: `_*.html|txt`
/// partials at the top, `{locale}/{part}`, `{locale}/_*` partials and
/// `{locale}/{purpose}/{part}`. Entries starting with `.` are skipped (a
/// Kubernetes volume keeps its own there); anything else is a mistake worth
/// stopping for.
fn read_overrides(dir: &Path) -> Result<Vec<(String, String)>, TemplateError> {
    let shown = dir.display().to_string();
    let mut found = BTreeMap::new();
    for (name, path) in entries(dir, &shown)? {
        let meta = fs::metadata(&path).map_err(|e| unreadable(&name, &shown, &e))?;
        if meta.is_file() {
            if !is_partial(&name) {
                return Err(misplaced(&name, &shown));
            }
            found.insert(name.clone(), read_template(&path, &name, &shown)?);
            continue;
        }
        let locale = Locale::parse(&name).ok_or_else(|| misplaced(&name, &shown))?;
        if locale.as_str() != name {
            return Err(TemplateError::new(
                format!("{name}/"),
                format!(
                    "write the locale directory as {} (in {shown})",
                    locale.as_str()
                ),
            ));
        }
        for (file, path) in entries(&path, &shown)? {
            let rel = format!("{name}/{file}");
            let meta = fs::metadata(&path).map_err(|e| unreadable(&rel, &shown, &e))?;
            if meta.is_file() && (Part::from_file(&file).is_some() || is_partial(&file)) {
                found.insert(rel.clone(), read_template(&path, &rel, &shown)?);
            } else if meta.is_dir() && PURPOSES.iter().any(|p| p.as_str() == file) {
                for (part, path) in entries(&path, &shown)? {
                    let rel = format!("{name}/{file}/{part}");
                    if Part::from_file(&part).is_none() || !path.is_file() {
                        return Err(misplaced(&rel, &shown));
                    }
                    found.insert(rel.clone(), read_template(&path, &rel, &shown)?);
                }
            } else {
                return Err(misplaced(&rel, &shown));
            }
        }
    }
    Ok(found.into_iter().collect())
}

fn entries(dir: &Path, shown: &str) -> Result<Vec<(String, std::path::PathBuf)>, TemplateError> {
    let unreadable_dir = |e: std::io::Error| {
        TemplateError::new(
            dir.display().to_string(),
            format!("cannot read the templates directory: {e}"),
        )
    };
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(unreadable_dir)? {
        let entry = entry.map_err(unreadable_dir)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Err(TemplateError::new(
                entry.path().display().to_string(),
                format!("file names must be UTF-8 (in {shown})"),
            ));
        };
        if !name.starts_with('.') {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn is_partial(file: &str) -> bool {
    file.starts_with('_') && (file.ends_with(".html") || file.ends_with(".txt"))
}

fn misplaced(name: &str, shown: &str) -> TemplateError {
    let parts: Vec<&str> = Part::ALL.iter().map(|p| p.file()).collect();
    let purposes: Vec<&str> = PURPOSES.iter().map(|p| p.as_str()).collect();
    TemplateError::new(
        name,
        format!(
            "unexpected entry in {shown}: expected LOCALE/NAME or LOCALE/PURPOSE/NAME with NAME one of {} and PURPOSE one of {}, or a _partial.html/.txt",
            parts.join(", "),
            purposes.join(", ")
        ),
    )
}

fn unreadable(name: &str, shown: &str, e: &std::io::Error) -> TemplateError {
    TemplateError::new(name, format!("cannot read it (in {shown}): {e}"))
}

fn read_template(path: &Path, name: &str, shown: &str) -> Result<String, TemplateError> {
    let len = fs::metadata(path)
        .map_err(|e| unreadable(name, shown, &e))?
        .len();
    if len > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::new(
            name,
            format!("is {len} bytes, more than {MAX_TEMPLATE_BYTES} (in {shown})"),
        ));
    }
    let bytes = fs::read(path).map_err(|e| unreadable(name, shown, &e))?;
    String::from_utf8(bytes)
        .map_err(|_| TemplateError::new(name, format!("is not UTF-8 (in {shown})")))
}

/// A validity in whole minutes, rounded up, as the texts say it.
fn minutes(valid_for: std::time::Duration) -> u64 {
    valid_for.as_secs().div_ceil(60).max(1)
}

/// The part a voice message speaks.
fn voice_part(message: &Message) -> Part {
    match message.delivery.voice_mode.unwrap_or_default() {
        VoiceMode::Confirm => Part::VoiceConfirm,
        VoiceMode::Match => Part::VoiceMatch,
        VoiceMode::Code => Part::VoiceCode,
    }
}

mod skeleton;
#[cfg(test)]
mod tests;
