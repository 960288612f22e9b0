//! Whole messages from skeletons: for each kind of message (channel, voice
//! mode, locale, purpose, app name, validity, code length), every part's
//! text split where the code goes, so a message is its pieces joined by the
//! code: one allocation per part, no template lookup, no search for
//! markers. Built from the parts' own skeletons (`Templates::skeleton`),
//! which decide whether a template may have one at all.

use std::{
    hash::{BuildHasher, RandomState},
    sync::{Arc, PoisonError, RwLock},
};

use hashbrown::HashTable;

use crate::{
    delivery::message::{Content, Message},
    domain::{Channel, Locale, Purpose, VoiceMode},
};

/// The most entries each skeleton cache holds (the parts' in `Templates`,
/// the whole messages' here). Every combination of tenant, locale, purpose,
/// TTL and code length a server meets is a handful; this is far above it.
pub(super) const MAX_SKELETONS: usize = 4096;

/// A text cut where the code goes: the code is put between each two
/// pieces. It holds no code.
#[derive(Debug)]
pub(super) struct Pieces(Box<[Box<str>]>);

impl Pieces {
    /// `skeleton` cut at each `mark`.
    pub(super) fn cut(skeleton: &str, mark: &str) -> Self {
        Self(skeleton.split(mark).map(Box::from).collect())
    }

    /// The pieces joined by `code`, in one allocation of exactly the
    /// text's size: no buffer that grew is left behind with the code in it.
    pub(super) fn fill(&self, code: &str) -> String {
        let len = self.0.iter().map(|p| p.len()).sum::<usize>()
            + code.len() * self.0.len().saturating_sub(1);
        let mut text = String::with_capacity(len);
        for (i, piece) in self.0.iter().enumerate() {
            if i > 0 {
                text.push_str(code);
            }
            text.push_str(piece);
        }
        text
    }
}

/// A message's parts, as [`Content`] holds them.
#[derive(Debug)]
pub(super) enum MessageSkeleton {
    Text(Pieces),
    Speech(Pieces),
    Email {
        subject: Pieces,
        text: Pieces,
        html: Pieces,
    },
}

impl MessageSkeleton {
    pub(super) fn fill(&self, code: &str) -> Content {
        match self {
            Self::Text(body) => Content::Text(body.fill(code)),
            Self::Speech(speech) => Content::Speech(speech.fill(code)),
            Self::Email {
                subject,
                text,
                html,
            } => Content::Email {
                subject: subject.fill(code),
                text: text.fill(code),
                html: html.fill(code),
            },
        }
    }
}

/// What a message's texts depend on besides the code's digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Kind<'a> {
    channel: Channel,
    voice_mode: Option<VoiceMode>,
    locale: Option<&'a str>,
    purpose: Purpose,
    app_name: &'a str,
    minutes: u64,
    code_len: usize,
}

impl<'a> Kind<'a> {
    pub(super) fn of(message: &'a Message, minutes: u64) -> Self {
        Self {
            channel: message.delivery.channel,
            voice_mode: message.delivery.voice_mode,
            locale: message.delivery.locale.as_ref().map(Locale::as_str),
            purpose: message.purpose,
            app_name: &message.app_name,
            minutes,
            code_len: message.code.expose().len(),
        }
    }
}

/// [`Kind`] with its strings owned, as the cache keeps it.
#[derive(Debug)]
struct OwnedKind {
    channel: Channel,
    voice_mode: Option<VoiceMode>,
    locale: Option<Box<str>>,
    purpose: Purpose,
    app_name: Box<str>,
    minutes: u64,
    code_len: usize,
}

impl OwnedKind {
    fn of(kind: &Kind<'_>) -> Self {
        Self {
            channel: kind.channel,
            voice_mode: kind.voice_mode,
            locale: kind.locale.map(Box::from),
            purpose: kind.purpose,
            app_name: kind.app_name.into(),
            minutes: kind.minutes,
            code_len: kind.code_len,
        }
    }

    fn borrowed(&self) -> Kind<'_> {
        Kind {
            channel: self.channel,
            voice_mode: self.voice_mode,
            locale: self.locale.as_deref(),
            purpose: self.purpose,
            app_name: &self.app_name,
            minutes: self.minutes,
            code_len: self.code_len,
        }
    }
}

/// The skeletons made so far, by kind of message; `None` for a kind whose
/// parts do not all have skeletons (it is rendered afresh). Looked up by
/// the message's own fields, with nothing allocated. Bounded by
/// `MAX_SKELETONS`: past it, new kinds are made each time.
#[derive(Debug, Default)]
pub(super) struct MessageSkeletons {
    kinds: RwLock<HashTable<(OwnedKind, Option<Arc<MessageSkeleton>>)>>,
    hasher: RandomState,
}

impl MessageSkeletons {
    /// The skeleton for `kind`, made with `make` the first time.
    pub(super) fn get_or_make(
        &self,
        kind: &Kind<'_>,
        make: impl FnOnce() -> Option<MessageSkeleton>,
    ) -> Option<Arc<MessageSkeleton>> {
        let hash = self.hasher.hash_one(kind);
        let found = self
            .kinds
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .find(hash, |(k, _)| k.borrowed() == *kind)
            .map(|(_, skeleton)| skeleton.clone());
        if let Some(skeleton) = found {
            return skeleton;
        }
        let skeleton = make().map(Arc::new);
        let mut kinds = self.kinds.write().unwrap_or_else(PoisonError::into_inner);
        if kinds.len() < MAX_SKELETONS && kinds.find(hash, |(k, _)| k.borrowed() == *kind).is_none()
        {
            let hasher = &self.hasher;
            kinds.insert_unique(hash, (OwnedKind::of(kind), skeleton.clone()), |(k, _)| {
                hasher.hash_one(k.borrowed())
            });
        }
        skeleton
    }

    /// How many kinds are held, and how many of them have a skeleton; for
    /// tests.
    #[cfg(test)]
    pub(super) fn counts(&self) -> (usize, usize) {
        let kinds = self.kinds.read().unwrap_or_else(PoisonError::into_inner);
        let made = kinds.iter().filter(|(_, s)| s.is_some()).count();
        (kinds.len(), made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_put_the_code_where_each_mark_was() {
        let pieces = Pieces::cut("Code: XX. Again: XX", "XX");
        assert_eq!(pieces.fill("123"), "Code: 123. Again: 123");
        assert_eq!(Pieces::cut("XX", "XX").fill("9"), "9");
        assert_eq!(Pieces::cut("no code", "XX").fill("9"), "no code");
    }
}
