use std::{fs, path::Path, time::Duration};

use super::{
    cache::prints_code_only,
    load::{MAX_TEMPLATE_BYTES, SAMPLE_CODE},
    part::{PURPOSES, Part},
    render::locale_chain,
    *,
};
use crate::{
    delivery::message::{Content, Message},
    domain::{
        Channel, Code, Destination, Locale, TenantId, VerificationId, verification::Delivery,
    },
};

const CODE: &str = "20481357";
const SHIPPED: [&str; 20] = [
    "en", "es", "fr", "de", "pt", "it", "nl", "pl", "sv", "da", "nb", "fi", "cs", "tr", "ru", "uk",
    "ja", "zh", "ko", "id",
];
const VOICE_MODES: [VoiceMode; 3] = [VoiceMode::Confirm, VoiceMode::Match, VoiceMode::Code];

fn message(channel: Channel, locale: Option<&str>) -> Message {
    let to = match channel {
        Channel::Email => "ana@example.com",
        Channel::Sms | Channel::Voice => "+14155550100",
    };
    Message {
        tenant: TenantId::default_tenant(),
        verification_id: VerificationId::generate(),
        to: Destination::parse(to).expect("destination"),
        extension: None,
        purpose: Purpose::PasswordReset,
        delivery: Delivery {
            channel,
            voice_mode: None,
            locale: locale.map(|l| Locale::parse(l).expect("locale")),
        },
        code: Code::parse(CODE).expect("code"),
        match_digits: None,
        call_token: None,
        valid_for: Duration::from_secs(600),
        app_name: "Acme".to_owned(),
    }
}

fn built_in() -> Templates {
    Templates::load(None, None).expect("the built-in templates load")
}

fn email(templates: &Templates, m: &Message) -> (String, String, String) {
    match templates.render(m).expect("renders") {
        Content::Email {
            ref subject,
            ref text,
            ref html,
        } => (subject.clone(), text.clone(), html.clone()),
        other => panic!("expected an email, got {other:?}"),
    }
}

fn text(templates: &Templates, m: &Message) -> String {
    templates.render(m).expect("renders").text().to_owned()
}

/// A directory of override files, from (relative path, contents) pairs.
fn overrides(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, source) in files {
        let path = dir.path().join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(path, source).expect("write");
    }
    dir
}

fn load_err(dir: &Path) -> TemplateError {
    Templates::load(Some(dir), None).expect_err("should be refused")
}

#[test]
fn every_shipped_locale_has_every_part_of_its_own() {
    let templates = built_in();
    assert_eq!(
        templates.locales().collect::<BTreeSet<_>>(),
        SHIPPED.into_iter().collect()
    );
    for locale in SHIPPED {
        for part in Part::ALL {
            for purpose in PURPOSES {
                let (name, found) = templates
                    .resolve(Some(locale), purpose, part)
                    .expect("resolves");
                assert_eq!(name, format!("{locale}/{}", part.file()));
                assert_eq!(found, locale);
            }
        }
    }
}

#[test]
fn each_shipped_locale_renders_every_message() {
    let templates = built_in();
    for locale in SHIPPED {
        for purpose in PURPOSES {
            let mut m = message(Channel::Sms, Some(locale));
            m.purpose = purpose;
            let sms = text(&templates, &m);
            assert!(sms.contains(CODE), "{locale} {purpose:?}: {sms}");
            assert!(sms.contains("Acme"), "{locale}: names the app: {sms}");
            assert!(sms.contains("10"), "{locale}: gives the validity: {sms}");

            let mut m = message(Channel::Email, Some(locale));
            m.purpose = purpose;
            let (subject, body, html) = email(&templates, &m);
            assert!(
                subject.contains("Acme") && !subject.contains('\n'),
                "{subject}"
            );
            assert!(body.contains(CODE) && body.contains("10"), "{body}");
            assert!(html.contains(CODE), "{html}");
            assert!(
                html.contains(&format!("<html lang=\"{locale}\">")),
                "{locale}: {html}"
            );

            for mode in VOICE_MODES {
                let mut m = message(Channel::Voice, Some(locale));
                m.purpose = purpose;
                m.delivery.voice_mode = Some(mode);
                let speech = text(&templates, &m);
                assert!(speech.contains("Acme"), "{speech}");
                let digits: String = speech.chars().filter(char::is_ascii_digit).collect();
                match mode {
                    VoiceMode::Code => assert!(
                        digits.contains(&format!("{CODE}{CODE}")),
                        "{locale}: the code twice, digit by digit: {speech}"
                    ),
                    VoiceMode::Confirm | VoiceMode::Match => {
                        assert!(digits.is_empty(), "{locale} {mode:?}: no digits: {speech}");
                    }
                }
            }
        }
    }
}

#[test]
fn the_wording_follows_the_purpose_and_the_mode() {
    let templates = built_in();
    let mut m = message(Channel::Email, None);
    let (reset, ..) = email(&templates, &m);
    assert_eq!(reset, "Your Acme password reset code");
    m.purpose = Purpose::Enrollment;
    let (enroll, body, _) = email(&templates, &m);
    assert_eq!(enroll, "Your Acme verification code");
    assert!(body.contains("confirm this email address"), "{body}");

    let mut m = message(Channel::Voice, None);
    m.delivery.voice_mode = Some(VoiceMode::Confirm);
    assert!(text(&templates, &m).contains("press the pound key to verify"));
    m.delivery.voice_mode = None;
    assert!(
        text(&templates, &m).contains("press the pound key to verify"),
        "confirm is the default"
    );
    m.delivery.voice_mode = Some(VoiceMode::Match);
    assert!(
        text(&templates, &m).contains("key in the digits shown on your screen, then press pound")
    );
    m.delivery.voice_mode = Some(VoiceMode::Code);
    assert!(
        text(&templates, &m).contains("2, 0, 4, 8, 1, 3, 5, 7"),
        "read digit by digit"
    );
}

#[test]
fn number_matching_never_speaks_the_match_digits() {
    let templates = built_in();
    let mut m = message(Channel::Voice, None);
    m.delivery.voice_mode = Some(VoiceMode::Match);
    m.match_digits = Some(crate::domain::MatchDigits::generate(3));
    let speech = text(&templates, &m);
    assert!(!speech.chars().any(|c| c.is_ascii_digit()), "{speech}");
}

#[test]
fn validity_is_in_whole_minutes_rounded_up_with_singular() {
    let templates = built_in();
    let mut m = message(Channel::Sms, None);
    m.valid_for = Duration::from_secs(90);
    assert!(text(&templates, &m).contains("expires in 2 minutes"));
    m.valid_for = Duration::from_secs(30);
    assert!(text(&templates, &m).contains("expires in 1 minute."));
}

/// GSM 03.38's basic character set: text made only of these fits 160 per
/// SMS segment; one other character makes it UCS-2, 70 per segment.
fn is_gsm(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà".contains(c)
}

#[test]
fn the_english_sms_fits_one_segment_even_with_the_webotp_line() {
    let templates = Templates::load(None, Some("accounts.example.com".to_owned())).expect("loads");
    for purpose in PURPOSES {
        let mut m = message(Channel::Sms, Some("en"));
        m.purpose = purpose;
        m.code = Code::parse("0123456789").expect("the longest code");
        m.app_name = "Example Corp".to_owned();
        let sms = text(&templates, &m);
        assert!(sms.chars().all(is_gsm), "{sms}");
        assert!(sms.chars().count() <= 160, "{} chars: {sms}", sms.len());
        assert!(sms.contains("Don't share it"), "{sms}");
    }
}

/// One SMS segment: 160 characters if every one is in GSM 03.38's basic
/// set, else 70 UTF-16 units (UCS-2). Returns the limit the text met, or
/// why it did not fit.
fn fits_one_segment(sms: &str) -> Result<&'static str, String> {
    if sms.chars().all(is_gsm) {
        let n = sms.chars().count();
        (n <= 160)
            .then_some("GSM-7")
            .ok_or(format!("{n} GSM-7 characters"))
    } else {
        let n = sms.encode_utf16().count();
        (n <= 70).then_some("UCS-2").ok_or(format!(
            "{n} UCS-2 units, outside GSM-7 at {:?}",
            sms.chars().find(|&c| !is_gsm(c))
        ))
    }
}

#[test]
fn every_shipped_sms_fits_one_segment_in_its_encoding() {
    let templates = built_in();
    for locale in SHIPPED {
        for purpose in PURPOSES {
            let mut m = message(Channel::Sms, Some(locale));
            m.purpose = purpose;
            m.code = Code::parse("0123456789").expect("the longest code");
            m.app_name = "Example Corp".to_owned();
            let sms = text(&templates, &m);
            assert!(sms.contains("0123456789"), "{locale} {purpose:?}: {sms}");
            if let Err(why) = fits_one_segment(&sms) {
                panic!("{locale} {purpose:?}: {why}: {sms}");
            }
        }
    }
    // The check can fail: a text one character too long, in each encoding.
    assert!(fits_one_segment(&"a".repeat(161)).is_err());
    assert!(fits_one_segment(&"я".repeat(71)).is_err());
    assert_eq!(fits_one_segment(&"я".repeat(70)), Ok("UCS-2"));
    assert!(fits_one_segment(&format!("{}ó", "a".repeat(70))).is_err());
    assert_eq!(
        fits_one_segment(&format!("{}ó", "a".repeat(69))),
        Ok("UCS-2")
    );
}

#[test]
fn every_language_a_country_picks_is_shipped_and_spoken() {
    use crate::delivery::twilio::twiml::say_language;
    for (language, _) in crate::domain::country::LANGUAGES {
        assert!(SHIPPED.contains(language), "{language} is not shipped");
    }
    for locale in SHIPPED {
        let voice = say_language(Some(locale));
        assert!(
            voice.starts_with(locale) || (locale, voice) == ("zh", "cmn-CN"),
            "{locale} is spoken as {voice}"
        );
    }
}

#[test]
fn locales_fall_back_to_their_language_then_english() {
    let templates = built_in();
    let subject = |locale| email(&templates, &message(Channel::Email, Some(locale))).0;
    assert_eq!(subject("fr-CA"), subject("fr"));
    assert!(subject("fr").starts_with("Votre code"), "{}", subject("fr"));
    assert_eq!(subject("pt-BR"), subject("pt"));
    assert!(subject("pt").contains("seu código"), "{}", subject("pt"));
    assert_eq!(subject("xx"), subject("en"));
    assert_eq!(subject("el-GR"), subject("en"));
    assert_eq!(subject("zh-Hant-TW"), subject("zh"), "along the chain");
    assert_eq!(
        email(&templates, &message(Channel::Email, None)).0,
        subject("en"),
        "no locale means English"
    );
    assert_eq!(
        locale_chain(Some("zh-hant-TW")),
        ["zh-hant-TW", "zh-hant", "zh", "en"]
    );
    assert_eq!(locale_chain(Some("en-GB")), ["en-GB", "en"]);
    assert_eq!(locale_chain(None), ["en"]);
}

#[test]
fn html_is_escaped_in_the_html_part_only() {
    let templates = built_in();
    let mut m = message(Channel::Email, Some("de"));
    m.app_name = "<b>Acme & Co</b>".to_owned();
    let (subject, body, html) = email(&templates, &m);
    assert!(subject.contains("<b>Acme & Co</b>"), "{subject}");
    assert!(body.contains("<b>Acme & Co</b>"), "{body}");
    assert!(!html.contains("<b>Acme"), "{html}");
    assert!(html.contains("&lt;b&gt;Acme &amp; Co&lt;"), "{html}");
    let sms = text(&templates, &message(Channel::Sms, None));
    assert!(!sms.contains("&amp;") && !sms.contains("&lt;"));
}

#[test]
fn the_webotp_line_ends_the_sms_when_configured() {
    let plain = text(&built_in(), &message(Channel::Sms, None));
    assert!(!plain.contains('@') && !plain.contains('#'), "{plain}");

    let templates = Templates::load(None, Some("example.com".to_owned())).expect("loads");
    let sms = text(&templates, &message(Channel::Sms, Some("fr")));
    assert_eq!(
        sms.lines().last(),
        Some(format!("@example.com #{CODE}").as_str())
    );
    // The same from the message's skeleton (the first render made it) as
    // rendered afresh, for another code too.
    for code in [CODE, "0123456789"] {
        let m = with_code(message(Channel::Sms, Some("fr")), code);
        assert_eq!(
            templates.render(&m).expect("renders"),
            templates.render_afresh(&m).expect("renders")
        );
    }
    assert_eq!(templates.messages.counts(), (2, 2));
    assert!(sms.starts_with("Acme : votre"), "{sms}");
    let mail = email(&templates, &message(Channel::Email, None)).1;
    assert!(!mail.contains("@example.com #"), "email has no WebOTP line");

    for bad in [
        "https://example.com",
        "example.com:443",
        "example.com/x",
        "a b.com",
        "",
    ] {
        let err = Templates::load(None, Some(bad.to_owned())).expect_err(bad);
        assert!(err.to_string().contains("webotp_domain"), "{err}");
    }
}

#[test]
fn an_override_replaces_one_template_and_the_rest_stay_built_in() {
    let dir = overrides(&[
        (
            "fr/sms.txt",
            "{{ app_name }} : code {{ code }} ({{ minutes }} min).",
        ),
        (
            "en/password_reset/email_subject.txt",
            "Reset your {{ app_name }} password",
        ),
        ("el/email_subject.txt", "Ο κωδικός σας για {{ app_name }}"),
        (
            "..data/ignored.txt",
            "Kubernetes keeps its own entries here",
        ),
    ]);
    let templates = Templates::load(Some(dir.path()), None).expect("loads");
    let builtin = built_in();

    let sms = |t: &Templates, locale| text(t, &message(Channel::Sms, Some(locale)));
    assert_eq!(
        sms(&templates, "fr-CA"),
        format!("Acme : code {CODE} (10 min).")
    );
    assert_eq!(sms(&templates, "de"), sms(&builtin, "de"));
    assert_eq!(
        email(&templates, &message(Channel::Email, Some("fr"))),
        email(&builtin, &message(Channel::Email, Some("fr"))),
    );

    let mut m = message(Channel::Email, Some("en"));
    assert_eq!(email(&templates, &m).0, "Reset your Acme password");
    m.purpose = Purpose::Enrollment;
    assert_eq!(email(&templates, &m).0, "Your Acme verification code");
    // A French reader gets the French subject, not the English one written
    // for the purpose.
    let mut m = message(Channel::Email, Some("fr"));
    m.purpose = Purpose::PasswordReset;
    assert!(email(&templates, &m).0.starts_with("Votre code"));

    // A new locale: its own subject, English for the rest.
    let (subject, body, _) = email(&templates, &message(Channel::Email, Some("el")));
    assert_eq!(subject, "Ο κωδικός σας για Acme");
    assert!(body.starts_with("Hello,"), "{body}");
    assert!(templates.locales().any(|l| l == "el"));
}

#[test]
fn an_override_can_replace_the_html_layout() {
    let dir = overrides(&[(
        "_layout.html",
        "<main lang=\"{{ locale }}\">{% block intro %}{% endblock %}<b>{{ code }}</b>{% block outro %}{% endblock %}</main>",
    )]);
    let templates = Templates::load(Some(dir.path()), None).expect("loads");
    let (.., html) = email(&templates, &message(Channel::Email, Some("es")));
    assert!(html.starts_with("<main lang=\"es\">"), "{html}");
    assert!(html.contains(&format!("<b>{CODE}</b>")), "{html}");
}

/// Override files, the template the error names, and what it says.
type BrokenCase = (
    &'static [(&'static str, &'static str)],
    &'static str,
    &'static str,
);

#[test]
fn a_broken_override_is_refused_at_load_with_one_clear_line() {
    let cases: &[BrokenCase] = &[
        (
            &[("fr/sms.txt", "{% if code %}unclosed")],
            "fr/sms.txt",
            "syntax error",
        ),
        (
            &[("fr/sms.txt", "{{ app_nam }} {{ code }}")],
            "fr/sms.txt",
            "undefined",
        ),
        (
            &[("de/email.txt", "Hallo {{ app_name }}")],
            "de/email.txt",
            "never shows the code",
        ),
        (
            &[("en/voice_match.txt", "Press {{ code }} then pound.")],
            "en/voice_match.txt",
            "undefined",
        ),
        (
            &[("en/email_subject.txt", "  ")],
            "en/email_subject.txt",
            "renders to nothing",
        ),
        (
            &[("fr/smss.txt", "{{ code }}")],
            "fr/smss.txt",
            "unexpected entry",
        ),
        (
            &[("fr/signup/sms.txt", "{{ code }}")],
            "fr/signup",
            "unexpected entry",
        ),
        (
            &[("fr-ca/sms.txt", "{{ code }}")],
            "fr-ca/",
            "write the locale directory as fr-CA",
        ),
        (&[("notes.md", "hello")], "notes.md", "unexpected entry"),
        (
            &[("en/email.html", "{% extends \"_missing.html\" %}")],
            "en/email.html",
            "not found",
        ),
    ];
    for (files, name, problem) in cases {
        let dir = overrides(files);
        let err = load_err(dir.path());
        let line = err.to_string();
        assert!(err.name.starts_with(name), "{name}: {line}");
        assert!(line.contains(problem), "{name}: {line}");
        assert!(!line.contains('\n'), "one line: {line}");
        if !problem.contains("unexpected") && !problem.contains("locale directory") {
            assert!(
                line.contains(&dir.path().display().to_string()),
                "names the directory: {line}"
            );
        }
        assert!(!line.contains(SAMPLE_CODE), "{line}");
    }
}

#[test]
fn a_missing_directory_or_a_huge_file_is_refused() {
    let err = load_err(Path::new("/nonexistent/verifyd-templates"));
    assert!(err.to_string().contains("cannot read"), "{err}");

    let big = "x".repeat(usize::try_from(MAX_TEMPLATE_BYTES).expect("fits") + 1);
    let dir = overrides(&[("en/sms.txt", &big)]);
    assert!(load_err(dir.path()).to_string().contains("bytes"));

    let dir = tempfile::tempdir().expect("temp dir");
    fs::create_dir(dir.path().join("en")).expect("mkdir");
    fs::write(dir.path().join("en/sms.txt"), [0xff, 0xfe, b'{']).expect("write");
    assert!(load_err(dir.path()).to_string().contains("UTF-8"));
}

#[test]
fn an_empty_override_directory_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let templates = Templates::load(Some(dir.path()), None).expect("loads");
    let m = message(Channel::Email, Some("pt-BR"));
    assert_eq!(email(&templates, &m), email(&built_in(), &m));
}

/// The same message with another code.
fn with_code(mut m: Message, code: &str) -> Message {
    m.code = Code::parse(code).expect("code");
    m
}

#[test]
fn only_templates_that_just_print_the_code_get_skeletons() {
    for plain in [
        "Your code is {{ code }}.",
        "{{- code -}} and {{code}}; the code, in words",
        "{{ code_digits|join(\", \") }} {# code == 1 #}",
        "{% if minutes == 1 %}minute{% endif %} {{ code }}",
    ] {
        assert!(prints_code_only(plain), "{plain}");
    }
    for tests_the_value in [
        "{% if code == '123456' %}x{% endif %}",
        "{{ code|length }}",
        "{{ code[0] }}",
        "{% for d in code_digits %}{{ d }}{% endfor %}",
        "{{ code_digits|join(sep) }}",
        "{{ code ~ 'x' }}",
        "{{ code",
    ] {
        assert!(!prints_code_only(tests_the_value), "{tests_the_value}");
    }
    assert!(
        built_in().skeletons.enabled,
        "the built-in templates qualify"
    );
    let dir = overrides(&[("de/sms.txt", "Erste Ziffer {{ code[0] }} von {{ code }}")]);
    let templates = Templates::load(Some(dir.path()), None).expect("loads");
    assert!(!templates.skeletons.enabled);
    assert_eq!(
        text(
            &templates,
            &with_code(message(Channel::Sms, Some("de")), "7123456")
        ),
        "Erste Ziffer 7 von 7123456"
    );
}

#[test]
fn texts_from_skeletons_match_a_fresh_render_for_every_code() {
    let dir = overrides(&[(
        "en/sms.txt",
        "{{ app_name }}: {{ code }}. Again: {{ code }}.",
    )]);
    for templates in [
        built_in(),
        Templates::load(Some(dir.path()), None).expect("loads"),
    ] {
        assert!(templates.skeletons.enabled);
        let mut fresh = built_in();
        if templates.overrides.is_empty() {
            fresh.skeletons.enabled = false;
        } else {
            fresh = Templates::load(Some(dir.path()), None).expect("loads");
            fresh.skeletons.enabled = false;
        }
        for locale in SHIPPED {
            for code in [CODE, "99999999", "000111", "9876543210", CODE] {
                for channel in [Channel::Sms, Channel::Email, Channel::Voice] {
                    let m = || {
                        let mut m = with_code(message(channel, Some(locale)), code);
                        m.delivery.voice_mode = Some(VoiceMode::Code);
                        m
                    };
                    assert_eq!(
                        templates.render(&m()).expect("renders"),
                        fresh.render(&m()).expect("renders"),
                        "{locale} {code} {channel:?}"
                    );
                }
            }
        }
        let (kinds, made) = templates.messages.counts();
        assert!(made > 0, "messages came from message skeletons");
        assert!(made < kinds, "the read-aloud code's messages have none");
        let skeletons = templates.skeletons.texts.read().expect("lock");
        assert!(
            skeletons.values().any(Option::is_some),
            "texts came from skeletons"
        );
        assert!(
            skeletons.values().any(Option::is_none),
            "the read-aloud code (its digits spelt out) is rendered afresh"
        );
    }
}
