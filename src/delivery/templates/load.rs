//! Loading: the built-in templates, each override directory layered over
//! them in turn, and the check of the loaded set (every template a lookup
//! can reach renders, and shows the code where it must).

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    sync::RwLock,
};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, syntax::SyntaxConfig};

use super::{
    Skeletons, TemplateError, Templates,
    cache::prints_code_only,
    part::{PURPOSES, Part},
    render::{Vars, describe, one_line},
    skeleton::MessageSkeletons,
};
use crate::domain::Locale;

/// Stands in for the code when templates are checked at load. Digits no
/// template text is likely to contain, so finding them means the code is
/// there.
pub(super) const SAMPLE_CODE: &str = "40719368";

/// Larger override files are refused: a message template is a few hundred
/// bytes, and this keeps a mistaken mount from being read into memory.
pub(super) const MAX_TEMPLATE_BYTES: u64 = 64 * 1024;

macro_rules! built_in {
    ($($locale:literal),+ $(,)?) => {
        &[
            ("_layout.html", include_str!("_layout.html")),
            $(
                built_in!(@part $locale, "sms.txt"),
                built_in!(@part $locale, "email_subject.txt"),
                built_in!(@part $locale, "email.txt"),
                built_in!(@part $locale, "email.html"),
                built_in!(@part $locale, "voice_confirm.txt"),
                built_in!(@part $locale, "voice_match.txt"),
                built_in!(@part $locale, "voice_code.txt"),
                built_in!(@part $locale, "voice_code_ask.txt"),
                built_in!(@part $locale, "voice_code_again.txt"),
                built_in!(@part $locale, "voice_retry.txt"),
                built_in!(@part $locale, "voice_press_again.txt"),
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
            include_str!(concat!($locale, "/", $file)),
        )
    };
}

/// The shipped templates, by name.
const BUILT_IN: &[(&str, &str)] = built_in!(
    "en", "es", "fr", "de", "pt", "it", "nl", "pl", "sv", "da", "nb", "fi", "cs", "tr", "ru", "uk",
    "ja", "zh", "ko", "id",
);

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

    /// The built-in templates and `overrides` (which came from the
    /// directories in `origin`) added to one environment, then checked.
    fn build(
        overrides: Vec<(String, String)>,
        origin: Vec<(String, BTreeSet<String>)>,
        webotp_domain: Option<String>,
    ) -> Result<Self, TemplateError> {
        let mut templates = Self {
            env: environment()?,
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
}

/// An environment with no templates yet: blocks trimmed, a misspelt
/// variable an error, and only `.html` templates escaped.
fn environment() -> Result<Environment<'static>, TemplateError> {
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
    Ok(env)
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
        read_locale(&name, &path, &shown, &mut found)?;
    }
    Ok(found.into_iter().collect())
}

/// Locale directory `name`'s templates, and those of its purposes'
/// directories, into `found`.
fn read_locale(
    name: &str,
    dir: &Path,
    shown: &str,
    found: &mut BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    for (file, path) in entries(dir, shown)? {
        let rel = format!("{name}/{file}");
        let meta = fs::metadata(&path).map_err(|e| unreadable(&rel, shown, &e))?;
        if meta.is_file() && (Part::from_file(&file).is_some() || is_partial(&file)) {
            found.insert(rel.clone(), read_template(&path, &rel, shown)?);
        } else if meta.is_dir() && PURPOSES.iter().any(|p| p.as_str() == file) {
            for (part, path) in entries(&path, shown)? {
                let rel = format!("{name}/{file}/{part}");
                if Part::from_file(&part).is_none() || !path.is_file() {
                    return Err(misplaced(&rel, shown));
                }
                found.insert(rel.clone(), read_template(&path, &rel, shown)?);
            }
        } else {
            return Err(misplaced(&rel, shown));
        }
    }
    Ok(())
}

fn entries(dir: &Path, shown: &str) -> Result<Vec<(String, PathBuf)>, TemplateError> {
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
