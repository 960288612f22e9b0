//! `verifyd send-test`: one test message through a channel's configured
//! providers, so an operator can check credentials and routing without a
//! verification. It carries no code and changes no state.

use std::time::Duration;

use minijinja::HtmlEscape;

use crate::{
    app::delivery::{BuiltIn, dispatcher},
    clock::Clock,
    config::Config,
    delivery::{ConsoleSender, Content, Message},
    domain::{
        Channel, Code, CodeLength, Destination, Purpose, TenantId, VerificationId, VoiceMode,
        verification::Delivery,
    },
};

/// Sends the test message; returns one line per provider try.
pub async fn run(config: &Config, channel: Channel, to: &str) -> Result<Vec<String>, String> {
    let to = Destination::parse(to).map_err(|e| format!("--to {e}"))?;
    if !channel.reaches(&to) {
        return Err(format!("--to cannot be reached by {}", channel.as_str()));
    }
    let dispatcher = dispatcher(
        &config.delivery,
        &config.providers,
        // A test message is no verification: no number lookup.
        None,
        config.webhooks.public_base_url.as_ref(),
        &BuiltIn::console(ConsoleSender::stdout()),
        &Clock::system(),
        &Default::default(),
    )
    .map_err(|e| e.to_string())?;
    let route = dispatcher
        .route(channel)
        .ok_or_else(|| format!("no providers configured for {}", channel.as_str()))?;
    let text = format!(
        "This is a test message from {}. No action is needed.",
        config.app_name
    );
    let content = match channel {
        Channel::Sms => Content::Text(text),
        Channel::Voice => Content::Speech(text),
        Channel::Email => Content::Email {
            subject: format!("{} test message", config.app_name),
            html: format!("<p>{}</p>", HtmlEscape(&text)),
            text,
        },
    };
    let message = Message {
        tenant: TenantId::default_tenant(),
        verification_id: VerificationId::generate(),
        to,
        extension: None,
        purpose: Purpose::Enrollment,
        delivery: Delivery {
            channel,
            // A test call reads its text aloud and asks for no keys.
            voice_mode: (channel == Channel::Voice).then_some(VoiceMode::Code),
            locale: None,
        },
        // Never shown: the test text has no code in it.
        code: Code::generate(CodeLength::new(6).expect("valid length")),
        match_digits: None,
        call_token: None,
        valid_for: Duration::ZERO,
        app_name: config.app_name.clone(),
    };
    let dispatch = route
        .send(&message, &content, config.delivery.timeout)
        .await;
    let lines = dispatch
        .attempts
        .iter()
        .map(|a| match &a.result {
            Ok(receipt) => format!(
                "{}: accepted{}",
                a.provider,
                receipt
                    .reference
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
            Err(e) => format!("{}: failed: {}", a.provider, e.reason),
        })
        .collect();
    match dispatch.result {
        Ok(_) => Ok(lines),
        Err(_) => Err(lines.join("\n")),
    }
}
