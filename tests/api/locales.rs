//! The language of a message: the caller's locale, else the language of
//! the number's country, else English.

use std::time::Duration;

use verifyd::proto;

use crate::helpers::{TestApp, resend_on, sms_to, spawn_app};

/// The text of the latest message for `id`, its code replaced by `CODE`.
fn text_of(app: &TestApp, id: &str) -> String {
    let line = app.outbox.lines_for(id).pop().expect("a message");
    let code = app.outbox.code_for(id);
    let (_, text) = line.split_once(" | ").expect("the console line's text");
    text.replace(&code, "CODE")
}

async fn sms_text(app: &TestApp, to: &str, locale: &str) -> (String, String) {
    let v = app
        .started(proto::StartVerificationRequest {
            locale: locale.to_owned(),
            ..sms_to(to)
        })
        .await;
    (v.id.clone(), text_of(app, &v.id))
}

#[tokio::test]
async fn a_number_without_a_locale_is_written_to_in_its_countrys_language() {
    let app = spawn_app().await;
    let (_, english) = sms_text(&app, "+14155550100", "").await;
    assert!(english.contains("password reset code"), "{english}");
    for (country, number, other, language) in [
        ("Poland", "+48512345678", "+48512345679", "pl"),
        (
            "Belgium, in Dutch as documented",
            "+32470123456",
            "+32470123457",
            "nl",
        ),
        ("Japan", "+819012345678", "+819012345679", "ja"),
    ] {
        let (_, implied) = sms_text(&app, number, "").await;
        let (_, named) = sms_text(&app, other, language).await;
        assert_eq!(implied, named, "{country}");
        assert_ne!(implied, english, "{country}");
    }
    // Canada reads English (the documented choice), as the USA does.
    assert_eq!(sms_text(&app, "+14165550100", "").await.1, english);
    // A named locale wins over the country.
    assert_eq!(sms_text(&app, "+48512345670", "en").await.1, english);
    app.stop().await;
}

#[tokio::test]
async fn a_resend_without_a_locale_keeps_to_the_countrys_language() {
    let app = spawn_app().await;
    let (id, polish) = sms_text(&app, "+48512345678", "").await;
    let (_, german) = sms_text(&app, "+48512345679", "de").await;
    app.clock.advance(Duration::from_secs(60));
    app.resent(resend_on(&id, proto::Channel::Sms)).await;
    assert_eq!(text_of(&app, &id), polish);
    app.clock.advance(Duration::from_secs(120));
    app.resent(proto::ResendVerificationRequest {
        locale: "de".to_owned(),
        ..resend_on(&id, proto::Channel::Sms)
    })
    .await;
    assert_eq!(text_of(&app, &id), german);
    app.stop().await;
}
