//! Rendering: a message's content (the SMS, the email's three parts, the
//! call's speech) or a live call's prompt, each part from the template its
//! lookup finds along the locale chain.

use minijinja::{Value, context};
use zeroize::Zeroizing;

use super::{CallPrompt, DEFAULT_LOCALE, TemplateError, Templates, part::Part, skeleton::Kind};
use crate::{
    delivery::message::{Content, Message},
    domain::{Channel, Code, Locale, Purpose, VoiceMode},
};

/// What one template sees.
pub(super) struct Vars<'a> {
    pub(super) app_name: &'a str,
    pub(super) code: &'a str,
    pub(super) minutes: u64,
    pub(super) purpose: Purpose,
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

    /// What `render` makes, rendered part by part.
    pub(super) fn render_afresh(&self, message: &Message) -> Result<Content, TemplateError> {
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
                    // WebOTP wants it as the last line, exactly so. Written
                    // in place: a buffer that grew would leave the code
                    // behind.
                    Some(domain) => {
                        let parts = [body.as_str(), "\n\n@", domain, " #", code];
                        let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
                        parts.iter().for_each(|part| text.push_str(part));
                        text
                    }
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
            CallPrompt::Ask(VoiceMode::Confirm) => Part::VoiceConfirm,
            CallPrompt::Ask(VoiceMode::Code) => Part::VoiceCodeAsk,
            CallPrompt::CodeAgain => Part::VoiceCodeAgain,
            CallPrompt::Retry => Part::VoiceRetry,
            CallPrompt::PressAgain => Part::VoicePressAgain,
            CallPrompt::WrongDigits => Part::VoiceWrongDigits,
            CallPrompt::Goodbye => Part::VoiceGoodbye,
            CallPrompt::Approved => Part::VoiceApproved,
            CallPrompt::FraudMenu => Part::VoiceFraudMenu,
            CallPrompt::FraudReported => Part::VoiceFraudReported,
        };
        self.render_part(locale, part, &vars)
            .map(|(_, text)| text.to_string())
    }

    /// What a read-aloud call says once a person asked for the code: the
    /// same speech a console call shows, wiped when dropped.
    pub fn render_code_call(
        &self,
        locale: Option<&str>,
        purpose: Purpose,
        app_name: &str,
        valid_for: std::time::Duration,
        code: &Code,
    ) -> Result<Zeroizing<String>, TemplateError> {
        let vars = Vars {
            app_name,
            code: code.expose(),
            minutes: minutes(valid_for),
            purpose,
        };
        self.render_part(locale, Part::VoiceCode, &vars)
            .map(|(_, text)| text)
    }

    /// The template for `part`: the first of the locale chain that has one,
    /// the purpose's own before the locale's general one.
    pub(super) fn resolve(
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

    /// `part`'s text and the name of the template it came from: from its
    /// skeleton when it has one, else rendered afresh.
    pub(super) fn render_part(
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

    /// Template `name` (found in locale `found`) rendered with `vars`, and
    /// tidied: trimmed, and the subject on one line.
    pub(super) fn render_named(
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

    /// A problem with `name`, saying where it came from if it is an
    /// override.
    pub(super) fn problem(&self, name: &str, problem: &str) -> TemplateError {
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
pub(super) fn describe(e: &minijinja::Error) -> String {
    let mut problem = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        problem.push_str(&format!(": {inner}"));
        source = inner.source();
    }
    problem
}

pub(super) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `fr-CA` → `fr-CA`, `fr`, `en`: each tag with its last subtag dropped in
/// turn, then the default.
pub(super) fn locale_chain(locale: Option<&str>) -> Vec<String> {
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

/// A validity in whole minutes, rounded up, as the texts say it.
pub(super) fn minutes(valid_for: std::time::Duration) -> u64 {
    valid_for.as_secs().div_ceil(60).max(1)
}

/// The part a voice message speaks.
pub(super) fn voice_part(message: &Message) -> Part {
    match message.delivery.voice_mode.unwrap_or_default() {
        VoiceMode::Confirm => Part::VoiceConfirm,
        VoiceMode::Match => Part::VoiceMatch,
        VoiceMode::Code => Part::VoiceCode,
    }
}
