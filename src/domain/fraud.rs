//! Who may receive a code at all: the rules against toll fraud and SMS
//! pumping that need nothing but the destination. (The prefix and country
//! budgets, which need counting, live with the rate limits.)

use serde::{Deserialize, Serialize};

use super::{
    channel::Channel,
    destination::{Destination, LineType, NumberPlan},
};

/// `[fraud]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FraudRules {
    /// Country calling codes SMS may go to (1 for NANP, 44 for the UK…);
    /// empty: all.
    pub sms_calling_codes: Vec<u16>,
    /// The same for voice calls.
    pub voice_calling_codes: Vec<u16>,
    /// How long a number prefix that tripped `limits.starts_per_prefix`
    /// stays blocked.
    #[serde(with = "humantime_serde")]
    pub prefix_block: std::time::Duration,
    /// Special number types that may get codes after all; none by default.
    pub allow_line_types: Vec<SpecialLine>,
}

/// Number types refused by default: they forward to lines nobody vetted
/// (personal numbers, company numbers), reach no person who could use a
/// code (pagers, voicemail access), and are where toll-fraud and SMS
/// pumping schemes rent ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialLine {
    PersonalNumber,
    Pager,
    Uan,
    Voicemail,
}

impl SpecialLine {
    fn of(line: LineType) -> Option<Self> {
        match line {
            LineType::PersonalNumber => Some(Self::PersonalNumber),
            LineType::Pager => Some(Self::Pager),
            LineType::Uan => Some(Self::Uan),
            LineType::Voicemail => Some(Self::Voicemail),
            _ => None,
        }
    }
}

impl Default for FraudRules {
    fn default() -> Self {
        Self {
            sms_calling_codes: Vec::new(),
            voice_calling_codes: Vec::new(),
            prefix_block: std::time::Duration::from_secs(60 * 60),
            allow_line_types: Vec::new(),
        }
    }
}

/// Why a destination may not receive a code on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{} to country calling code +{calling_code} is not allowed", channel.as_str())]
    Country { channel: Channel, calling_code: u16 },
    #[error("{} to {} numbers is not allowed", channel.as_str(), line_name(*line))]
    LineType { channel: Channel, line: LineType },
}

fn line_name(line: LineType) -> &'static str {
    match line {
        LineType::Mobile => "mobile",
        LineType::FixedLine => "landline",
        LineType::FixedLineOrMobile => "fixed-line-or-mobile",
        LineType::TollFree => "toll-free",
        LineType::PremiumRate => "premium-rate",
        LineType::SharedCost => "shared-cost",
        LineType::Voip => "VoIP",
        LineType::Unknown => "unknown-type",
        LineType::PersonalNumber => "personal",
        LineType::Pager => "pager",
        LineType::Uan => "universal-access",
        LineType::Voicemail => "voicemail-access",
        LineType::Other => "special-service",
    }
}

impl FraudRules {
    /// The first setting out of range: its key and why.
    pub fn problem(&self) -> Option<(&'static str, &'static str)> {
        if self.prefix_block > std::time::Duration::from_secs(30 * 24 * 3600) {
            return Some(("fraud.prefix_block", "must be at most 30 days"));
        }
        for (key, codes) in [
            ("fraud.sms_calling_codes", &self.sms_calling_codes),
            ("fraud.voice_calling_codes", &self.voice_calling_codes),
        ] {
            if codes.iter().any(|c| !(1..=999).contains(c)) {
                return Some((key, "country calling codes are 1 to 999"));
            }
        }
        None
    }

    /// Checks a destination before anything is spent or sent. Email has no
    /// numbering plan to abuse; phone numbers must be in an allowed country
    /// and of a type that cannot bill the sender: premium-rate, shared-cost,
    /// unknown and other special services never; personal, pager, UAN and
    /// voicemail numbers only when `allow_line_types` names them ([`SpecialLine`]);
    /// landlines not for SMS (they cannot receive it, and are a favourite
    /// of pumping schemes). Returns the phone number's plan, which the
    /// prefix and country budgets need.
    pub fn screen(
        &self,
        channel: Channel,
        to: &Destination,
    ) -> Result<Option<NumberPlan>, Refusal> {
        let Destination::Phone(phone) = to else {
            return Ok(None);
        };
        let unknown = Refusal::LineType {
            channel,
            line: LineType::Unknown,
        };
        let plan = phone.plan().ok_or(unknown)?;
        let allowed = match channel {
            Channel::Sms => &self.sms_calling_codes,
            Channel::Voice => &self.voice_calling_codes,
            Channel::Email => return Ok(None),
        };
        if !allowed.is_empty() && !allowed.contains(&plan.calling_code) {
            return Err(Refusal::Country {
                channel,
                calling_code: plan.calling_code,
            });
        }
        let refused = match plan.line {
            LineType::PremiumRate | LineType::SharedCost | LineType::Unknown | LineType::Other => {
                true
            }
            LineType::FixedLine => channel == Channel::Sms,
            special => SpecialLine::of(special)
                .is_some_and(|special| !self.allow_line_types.contains(&special)),
        };
        if refused {
            return Err(Refusal::LineType {
                channel,
                line: plan.line,
            });
        }
        Ok(Some(plan))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(n: &str) -> Destination {
        Destination::parse(n).expect("valid")
    }

    #[test]
    fn personal_pager_uan_and_voicemail_numbers_are_refused_unless_allowed() {
        let cases = [
            (
                "+447012345678",
                LineType::PersonalNumber,
                SpecialLine::PersonalNumber,
            ),
            ("+447640123456", LineType::Pager, SpecialLine::Pager),
            ("+445512345678", LineType::Uan, SpecialLine::Uan),
            (
                "+49177991234567",
                LineType::Voicemail,
                SpecialLine::Voicemail,
            ),
        ];
        for (number, line, special) in cases {
            for channel in [Channel::Sms, Channel::Voice] {
                assert_eq!(
                    FraudRules::default().screen(channel, &phone(number)),
                    Err(Refusal::LineType { channel, line }),
                    "{number} by {}",
                    channel.as_str()
                );
                let allowing = FraudRules {
                    allow_line_types: vec![special],
                    ..FraudRules::default()
                };
                let plan = allowing
                    .screen(channel, &phone(number))
                    .expect("allowed")
                    .expect("a phone number has a plan");
                assert_eq!(plan.line, line);
            }
        }
    }

    #[test]
    fn premium_rate_and_shared_cost_numbers_get_nothing() {
        let rules = FraudRules::default();
        // A UK premium-rate (09) and a French shared-cost (081) number.
        for (number, line) in [
            ("+449098790000", LineType::PremiumRate),
            ("+33810123456", LineType::SharedCost),
        ] {
            for channel in [Channel::Sms, Channel::Voice] {
                assert_eq!(
                    rules.screen(channel, &phone(number)),
                    Err(Refusal::LineType { channel, line }),
                    "{number}"
                );
            }
        }
    }

    #[test]
    fn landlines_may_take_calls_but_not_texts() {
        let rules = FraudRules::default();
        let landline = phone("+442079460000");
        assert!(matches!(
            rules.screen(Channel::Sms, &landline),
            Err(Refusal::LineType {
                line: LineType::FixedLine,
                ..
            })
        ));
        assert!(rules.screen(Channel::Voice, &landline).is_ok());
        assert!(rules.screen(Channel::Sms, &phone("+447911123456")).is_ok());
    }

    #[test]
    fn countries_outside_the_channels_allow_list_are_refused() {
        let rules = FraudRules {
            sms_calling_codes: vec![1],
            ..FraudRules::default()
        };
        assert_eq!(
            rules
                .screen(Channel::Sms, &phone("+14155550100"))
                .map(|plan| plan.map(|p| p.calling_code)),
            Ok(Some(1))
        );
        assert_eq!(
            rules.screen(Channel::Sms, &phone("+447911123456")),
            Err(Refusal::Country {
                channel: Channel::Sms,
                calling_code: 44
            })
        );
        assert!(
            rules
                .screen(Channel::Voice, &phone("+447911123456"))
                .is_ok(),
            "voice has no list"
        );
        assert_eq!(
            rules.screen(
                Channel::Email,
                &Destination::parse("a@example.com").expect("valid")
            ),
            Ok(None)
        );
    }
}
