//! A configuration problem, as one line naming the key; and how a
//! section's own check (a `problem` method giving the first key out of
//! range and why) becomes one.

/// A configuration problem, as one line naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

pub(super) fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        problem: problem.into(),
    }
}

/// A section's first problem, its full key and why, as the error.
pub(super) fn check<K: AsRef<str>, P: Into<String>>(
    problem: Option<(K, P)>,
) -> Result<(), ConfigError> {
    match problem {
        Some((key, problem)) => Err(invalid(key.as_ref(), problem)),
        None => Ok(()),
    }
}

/// The same for a section found under `prefix` (`voice`,
/// `tenants.NAME.voice`), whose problems name the key within it.
pub(super) fn check_under<K: AsRef<str>, P: Into<String>>(
    prefix: &str,
    problem: Option<(K, P)>,
) -> Result<(), ConfigError> {
    match problem {
        Some((field, problem)) => Err(invalid(&format!("{prefix}.{}", field.as_ref()), problem)),
        None => Ok(()),
    }
}
