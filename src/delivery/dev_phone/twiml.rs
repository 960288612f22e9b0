//! The simulated phone's side of TwiML: it reads the documents verifyd's
//! webhooks answer with, as Twilio would run them. Only the verbs verifyd
//! writes (`twilio::twiml`) are known; anything else is an error, so a
//! change there that the phone cannot follow shows at once.

use quick_xml::{Reader, XmlVersion, escape, events::Event};
use zeroize::Zeroizing;

/// One verb of a `<Response>`. A `Say` may speak a code: no `Debug` of it.
#[derive(Clone, PartialEq, Eq)]
pub enum Instruction {
    Say(Zeroizing<String>),
    Gather(Gather),
    Hangup,
}

impl std::fmt::Debug for Instruction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Say(text) => write!(f, "Say(<{} bytes>)", text.len()),
            Self::Gather(gather) => gather.fmt(f),
            Self::Hangup => f.write_str("Hangup"),
        }
    }
}

/// `<Gather>`: keys are posted to `action` once `num_digits` are in, or on
/// `finish_on_key` (which is not sent); its prompt is said while it waits.
#[derive(Clone, PartialEq, Eq)]
pub struct Gather {
    pub action: String,
    pub num_digits: Option<usize>,
    /// `None`: every key is a key (`finishOnKey=""`).
    pub finish_on_key: Option<char>,
    pub prompt: Vec<Zeroizing<String>>,
}

/// Its action carries the call's token, and its prompt may say a code.
impl std::fmt::Debug for Gather {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gather")
            .field("num_digits", &self.num_digits)
            .field("finish_on_key", &self.finish_on_key)
            .finish_non_exhaustive()
    }
}

/// The verbs of a `<Response>` document, in order. `<Pause>` is dropped:
/// nobody waits on a simulated phone.
pub fn read(document: &str) -> Result<Vec<Instruction>, String> {
    // Not trimmed: quick-xml hands entities over apart from the text
    // around them, and trimming would eat the spaces beside them.
    let mut reader = Reader::from_str(document);
    let mut verbs = Vec::new();
    // The gather being read, and the escaped text of the `<Say>` that is
    // open.
    let mut gather: Option<Gather> = None;
    let mut say: Option<Zeroizing<String>> = None;
    loop {
        let event = reader.read_event().map_err(|e| format!("TwiML: {e}"))?;
        match event {
            Event::Eof => break,
            Event::Start(start) => match start.name().as_ref() {
                "Response" => {}
                "Say" => say = Some(Zeroizing::new(String::new())),
                "Gather" => gather = Some(read_gather(&start)?),
                other => return Err(unknown(other)),
            },
            Event::Empty(empty) => match empty.name().as_ref() {
                "Pause" | "Say" => {}
                "Hangup" => verbs.push(Instruction::Hangup),
                other => return Err(unknown(other)),
            },
            Event::Text(text) => {
                if let Some(say) = &mut say {
                    say.push_str(&text);
                }
            }
            Event::GeneralRef(entity) => {
                if let Some(say) = &mut say {
                    say.push('&');
                    say.push_str(&entity);
                    say.push(';');
                }
            }
            Event::End(end) => match end.name().as_ref() {
                "Say" => {
                    let escaped = say.take().unwrap_or_default();
                    let said = Zeroizing::new(
                        escape::unescape(&escaped)
                            .map_err(|e| format!("TwiML text: {e}"))?
                            .into_owned(),
                    );
                    match &mut gather {
                        Some(gather) => gather.prompt.push(said),
                        None => verbs.push(Instruction::Say(said)),
                    }
                }
                "Gather" => {
                    let gather = gather.take().ok_or("TwiML: </Gather> without <Gather>")?;
                    verbs.push(Instruction::Gather(gather));
                }
                _ => {}
            },
            _ => {}
        }
    }
    Ok(verbs)
}

fn unknown(name: &str) -> String {
    format!("TwiML: the simulated phone does not know <{name}>")
}

fn read_gather(start: &quick_xml::events::BytesStart<'_>) -> Result<Gather, String> {
    let mut gather = Gather {
        action: String::new(),
        num_digits: None,
        // Twilio's default.
        finish_on_key: Some('#'),
        prompt: Vec::new(),
    };
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| format!("TwiML attribute: {e}"))?;
        let value = attribute
            .normalized_value(XmlVersion::Implicit1_0)
            .map_err(|e| format!("TwiML attribute: {e}"))?;
        match attribute.key.as_ref() {
            "action" => gather.action = value.into_owned(),
            "numDigits" => {
                gather.num_digits = Some(value.parse().map_err(|_| "TwiML: bad numDigits")?);
            }
            "finishOnKey" => gather.finish_on_key = value.chars().next(),
            _ => {}
        }
    }
    if gather.action.is_empty() {
        return Err("TwiML: <Gather> without an action".to_owned());
    }
    Ok(gather)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::twilio::twiml::{self, Gather as Writing, Verb};

    fn said(texts: &[Zeroizing<String>]) -> Vec<&str> {
        texts.iter().map(|t| t.as_str()).collect()
    }

    #[test]
    fn reads_back_what_verifyd_writes() {
        let document = twiml::response(
            "en-US",
            &[
                Verb::Pause(1),
                Verb::Say("Hello & welcome <to> \"verifyd\""),
                Verb::Gather(Writing {
                    action: "http://127.0.0.1:1/g?a=1&b=2".to_owned(),
                    num_digits: Some(1),
                    finish_on_key: "",
                    timeout_secs: 8,
                    prompt: "Press pound.",
                }),
                Verb::Say("Goodbye."),
                Verb::Hangup,
            ],
        );
        let verbs = read(&document).expect("reads");
        assert_eq!(verbs.len(), 4, "{verbs:?}");
        assert_eq!(
            verbs[0],
            Instruction::Say(Zeroizing::new(
                "Hello & welcome <to> \"verifyd\"".to_owned()
            ))
        );
        let Instruction::Gather(gather) = &verbs[1] else {
            panic!("a gather: {verbs:?}");
        };
        assert_eq!(gather.action, "http://127.0.0.1:1/g?a=1&b=2");
        assert_eq!(gather.num_digits, Some(1));
        assert_eq!(gather.finish_on_key, None, "every key is a key");
        assert_eq!(said(&gather.prompt), ["Press pound."]);
        assert_eq!(
            verbs[2],
            Instruction::Say(Zeroizing::new("Goodbye.".to_owned()))
        );
        assert_eq!(verbs[3], Instruction::Hangup);
    }

    #[test]
    fn a_gather_until_pound_and_unknown_verbs() {
        let document = twiml::response(
            "en-US",
            &[Verb::Gather(Writing {
                action: "http://x/".to_owned(),
                num_digits: None,
                finish_on_key: "#",
                timeout_secs: 8,
                prompt: "Key in the digits, then pound.",
            })],
        );
        let Instruction::Gather(gather) = &read(&document).expect("reads")[0] else {
            panic!("a gather");
        };
        assert_eq!((gather.num_digits, gather.finish_on_key), (None, Some('#')));
        let err = read("<Response><Dial>+1</Dial></Response>").expect_err("unknown");
        assert!(err.contains("<Dial>"), "{err}");
        assert!(read("<Response><Gather><Say>x</Say></Gather></Response>").is_err());
    }
}
