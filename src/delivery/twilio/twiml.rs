//! TwiML, the call instructions Twilio runs: built with an XML writer, so
//! every text and URL is escaped.
//!
//! A read-aloud call's TwiML says a code, so the document is written into
//! one buffer sized up front (no reallocation leaves a copy behind) and
//! handed back wiped on drop.

use quick_xml::{
    Writer,
    events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event},
};
use zeroize::Zeroizing;

/// One verb of a `<Response>`, borrowing its text (which may be a code:
/// no `Debug`).
#[derive(Clone, PartialEq, Eq)]
pub enum Verb<'a> {
    /// `<Say language="..">text</Say>`
    Say(&'a str),
    /// `<Pause length="n"/>`
    Pause(u8),
    /// `<Gather input="dtmf" ...>` with a spoken prompt inside.
    Gather(Gather<'a>),
    Hangup,
}

#[derive(Clone, PartialEq, Eq)]
pub struct Gather<'a> {
    /// Where Twilio posts the keys.
    pub action: String,
    /// `Some(1)`: one key, sent at once. `None`: keys until `finish_on_key`.
    pub num_digits: Option<u8>,
    /// Empty disables it, so `#` arrives as a key of its own.
    pub finish_on_key: &'static str,
    pub timeout_secs: u8,
    pub prompt: &'a str,
}

/// What is said may be a code: it is counted, not shown.
impl std::fmt::Debug for Verb<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Say(text) => write!(f, "Say(<{} bytes>)", text.len()),
            Self::Pause(secs) => write!(f, "Pause({secs})"),
            Self::Gather(gather) => gather.fmt(f),
            Self::Hangup => f.write_str("Hangup"),
        }
    }
}

impl std::fmt::Debug for Gather<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gather")
            .field("num_digits", &self.num_digits)
            .field("timeout_secs", &self.timeout_secs)
            .finish_non_exhaustive()
    }
}

/// Room for any document Twilio takes inline (4,000 characters) and for
/// any a call step renders, once its texts are escaped: reserved up front
/// so that the buffer never moves.
const DOCUMENT_ROOM: usize = 16 * 1024;

/// A `<Response>` document speaking `language` (a Twilio voice language
/// such as `en-US`), wiped when dropped.
pub fn response(language: &str, verbs: &[Verb<'_>]) -> Zeroizing<String> {
    let texts: usize = verbs
        .iter()
        .map(|verb| match verb {
            Verb::Say(text) => text.len(),
            Verb::Gather(g) => g.action.len() + g.prompt.len(),
            Verb::Pause(_) | Verb::Hangup => 0,
        })
        .sum();
    // Escaping grows a text by at most six times (`"` becomes `&quot;`).
    let mut w = Writer::new(Vec::with_capacity(DOCUMENT_ROOM.max(texts * 6 + 1024)));
    let write = |w: &mut Writer<Vec<u8>>, event: Event<'_>| {
        w.write_event(event).expect("writing to memory cannot fail");
    };
    write(
        &mut w,
        Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)),
    );
    write(&mut w, Event::Start(BytesStart::new("Response")));
    for verb in verbs {
        match verb {
            Verb::Say(text) => say(&mut w, language, text),
            Verb::Pause(secs) => {
                let length = secs.to_string();
                let pause = BytesStart::new("Pause").with_attributes([("length", length.as_str())]);
                write(&mut w, Event::Empty(pause));
            }
            Verb::Gather(g) => {
                let timeout = g.timeout_secs.to_string();
                let digits = g.num_digits.map(|n| n.to_string());
                let mut start = BytesStart::new("Gather").with_attributes([
                    ("input", "dtmf"),
                    ("action", g.action.as_str()),
                    ("method", "POST"),
                    ("finishOnKey", g.finish_on_key),
                    ("timeout", timeout.as_str()),
                ]);
                if let Some(digits) = &digits {
                    start.push_attribute(("numDigits", digits.as_str()));
                }
                write(&mut w, Event::Start(start));
                say(&mut w, language, g.prompt);
                write(&mut w, Event::End(BytesEnd::new("Gather")));
            }
            Verb::Hangup => write(&mut w, Event::Empty(BytesStart::new("Hangup"))),
        }
    }
    write(&mut w, Event::End(BytesEnd::new("Response")));
    Zeroizing::new(String::from_utf8(w.into_inner()).expect("the writer writes UTF-8"))
}

fn say(w: &mut Writer<Vec<u8>>, language: &str, text: &str) {
    let start = BytesStart::new("Say").with_attributes([("language", language)]);
    w.write_event(Event::Start(start)).expect("in memory");
    // Escaped here, into room reserved for it and wiped after: quick-xml's
    // own escaping would build an unwiped copy of a text that says a code.
    let escaped = escape(text);
    w.write_event(Event::Text(BytesText::from_escaped(escaped.as_str())))
        .expect("in memory");
    w.write_event(Event::End(BytesEnd::new("Say")))
        .expect("in memory");
}

/// `text` with XML's five special characters escaped, in one buffer sized
/// for the most it can take (`&quot;` is six bytes) and wiped when dropped.
fn escape(text: &str) -> Zeroizing<String> {
    let mut escaped = Zeroizing::new(String::with_capacity(text.len() * 6));
    for c in text.chars() {
        match c {
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '&' => escaped.push_str("&amp;"),
            '\'' => escaped.push_str("&apos;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// The Twilio `<Say>` language for a locale's language, defaulting to US
/// English for languages the built-in templates do not cover.
pub fn say_language(locale: Option<&str>) -> &'static str {
    let language = locale.and_then(|l| l.split('-').next()).unwrap_or("en");
    match language {
        "es" => "es-ES",
        "fr" => "fr-FR",
        "de" => "de-DE",
        "pt" => "pt-BR",
        "it" => "it-IT",
        "nl" => "nl-NL",
        "pl" => "pl-PL",
        "sv" => "sv-SE",
        "da" => "da-DK",
        "nb" => "nb-NO",
        "fi" => "fi-FI",
        "cs" => "cs-CZ",
        "tr" => "tr-TR",
        "ru" => "ru-RU",
        "uk" => "uk-UA",
        "ja" => "ja-JP",
        // Mandarin, as Twilio's Polly and Google voices name it.
        "zh" => "cmn-CN",
        "ko" => "ko-KR",
        "id" => "id-ID",
        _ => "en-US",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        let xml = response(
            "en-US",
            &[
                Verb::Say("Tom & Jerry <script>"),
                Verb::Gather(Gather {
                    action: "https://x.example/g?a=1&b=\"2\"".into(),
                    num_digits: Some(1),
                    finish_on_key: "",
                    timeout_secs: 5,
                    prompt: "press #",
                }),
                Verb::Hangup,
            ],
        );
        assert!(
            xml.contains("Tom &amp; Jerry &lt;script&gt;"),
            "{}",
            xml.as_str()
        );
        assert!(
            xml.contains("action=\"https://x.example/g?a=1&amp;b=&quot;2&quot;\""),
            "{}",
            xml.as_str()
        );
        assert!(xml.contains("finishOnKey=\"\""));
        assert!(xml.contains("numDigits=\"1\""));
        let text = "AT&T's \"code\" <1>";
        let escaped = escape(text);
        assert_eq!(
            escaped.as_str(),
            "AT&amp;T&apos;s &quot;code&quot; &lt;1&gt;"
        );
        assert_eq!(escaped.capacity(), text.len() * 6, "written in place");
        assert!(xml.ends_with("<Hangup/></Response>"));
    }

    #[test]
    fn a_document_is_written_in_the_buffer_reserved_for_it() {
        let xml = response("en-US", &[Verb::Say("Your code is 1, 2, 3"), Verb::Hangup]);
        // A buffer that grew would have left the text in the one it left.
        assert_eq!(xml.capacity(), DOCUMENT_ROOM);
        let long = "x".repeat(5_000);
        let xml = response("en-US", &[Verb::Say(&long)]);
        assert_eq!(xml.capacity(), 5_000 * 6 + 1024);
    }

    #[test]
    fn languages_map_to_twilio_voices() {
        assert_eq!(say_language(Some("fr-CA")), "fr-FR");
        assert_eq!(say_language(Some("xx")), "en-US");
        assert_eq!(say_language(None), "en-US");
    }
}
