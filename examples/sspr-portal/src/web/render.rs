//! Pages: minijinja templates compiled into the binary, HTML-escaped
//! whatever their name, and the `View` a handler fills for one.

use axum::{
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse as _, Response},
};
use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value};

use super::Session;
use crate::App;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/base.html")),
    ("macros.html", include_str!("../../templates/macros.html")),
    ("home.html", include_str!("../../templates/home.html")),
    ("expired.html", include_str!("../../templates/expired.html")),
    ("message.html", include_str!("../../templates/message.html")),
    (
        "register.html",
        include_str!("../../templates/register.html"),
    ),
    (
        "register_phone.html",
        include_str!("../../templates/register_phone.html"),
    ),
    (
        "register_email.html",
        include_str!("../../templates/register_email.html"),
    ),
    ("methods.html", include_str!("../../templates/methods.html")),
    ("verify.html", include_str!("../../templates/verify.html")),
    ("reset.html", include_str!("../../templates/reset.html")),
    (
        "reset_method.html",
        include_str!("../../templates/reset_method.html"),
    ),
    (
        "reset_password.html",
        include_str!("../../templates/reset_password.html"),
    ),
    ("login.html", include_str!("../../templates/login.html")),
];

/// The compiled templates.
#[derive(Debug)]
pub struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn load() -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        // Every value is HTML-escaped, whatever the template's name: an
        // account name or a message from verifyd is text, never markup.
        env.set_auto_escape_callback(|_| AutoEscape::Html);
        // A value a page leaves out (no errors, no kept form) is empty,
        // and so are its fields: `errors.account` when there are none.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        for (name, source) in TEMPLATES {
            env.add_template(name, source)?;
        }
        Ok(Templates { env })
    }

    fn render(&self, name: &str, context: Value) -> Result<String, minijinja::Error> {
        self.env.get_template(name)?.render(context)
    }
}

/// One page to show: its template, its `<h1>`, its values.
#[derive(Debug)]
pub struct View {
    template: &'static str,
    status: StatusCode,
    vars: Vec<(&'static str, Value)>,
}

impl View {
    pub fn new(template: &'static str, title: &str) -> Self {
        View {
            template,
            status: StatusCode::OK,
            vars: vec![("title", Value::from(title))],
        }
    }

    pub fn set(mut self, key: &'static str, value: impl Into<Value>) -> Self {
        self.vars.push((key, value.into()));
        self
    }

    /// The page-level error, `#error`.
    pub fn error(self, message: impl Into<String>) -> Self {
        self.set("error", message.into())
    }

    /// A notice, `#notice`.
    pub fn notice(self, message: impl Into<String>) -> Self {
        self.set("notice", message.into())
    }

    /// Errors shown beside fields, `#error-FIELD`. A form shown with errors
    /// answers 422, as a rejected submission.
    pub fn field_errors(self, errors: &[(&'static str, String)]) -> Self {
        let map = Value::from_pairs(errors.iter().map(|(k, v)| (*k, v.as_str())));
        let view = self.set("errors", map);
        if errors.is_empty() {
            view
        } else {
            view.status(StatusCode::UNPROCESSABLE_ENTITY)
        }
    }

    /// The values a re-shown form keeps (never a password).
    pub fn form(self, values: &[(&'static str, &str)]) -> Self {
        self.set("form", Value::from_pairs(values.iter().copied()))
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    fn has(&self, key: &str) -> bool {
        self.vars.iter().any(|(k, _)| *k == key)
    }
}

impl App {
    /// A page with forms: makes the session if needed for its CSRF token,
    /// and shows (then forgets) the session's pending notice or error.
    pub fn page(&self, session: &Session, mut view: View) -> Response {
        let csrf = session.csrf_token();
        let flash = session
            .with(|d| std::mem::take(&mut d.flash))
            .unwrap_or_default();
        if let (Some(error), false) = (flash.error, view.has("error")) {
            view = view.error(error);
        }
        if let (Some(notice), false) = (flash.notice, view.has("notice")) {
            view = view.notice(notice);
        }
        self.plain(view.set("csrf", csrf))
    }

    /// A page without forms, which needs no session.
    pub fn plain(&self, view: View) -> Response {
        let context = Value::from_pairs(view.vars);
        match self.templates.render(view.template, context) {
            Ok(html) => {
                let mut response = (view.status, html).into_response();
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            Err(e) => {
                tracing::error!(template = view.template, error = %e, "a page failed to render");
                (StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong.").into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(name: &str, vars: Vec<(&str, Value)>) -> String {
        let templates = Templates::load().expect("templates compile");
        templates
            .render(name, Value::from_pairs(vars))
            .unwrap_or_else(|e| panic!("{name}: {e:#}"))
    }

    #[test]
    fn every_page_renders_with_nothing_but_a_title() {
        for (name, _) in TEMPLATES.iter().filter(|(n, _)| *n != "macros.html") {
            let html = render(name, vec![("title", Value::from("T"))]);
            assert!(html.contains(r#"<div id="demo-banner""#), "{name}");
            assert!(html.contains("<h1>T</h1>"), "{name}");
        }
    }

    #[test]
    fn values_are_escaped_and_errors_sit_by_their_fields() {
        let html = render(
            "register.html",
            vec![
                ("title", Value::from("<T>")),
                ("csrf", Value::from("tok")),
                ("error", Value::from("<script>x</script>")),
                ("form", Value::from_pairs([("account", "\"><b>")])),
                (
                    "errors",
                    Value::from_pairs([("account", "this account name is taken")]),
                ),
            ],
        );
        assert!(html.contains("<h1>&lt;T&gt;</h1>"));
        assert!(html.contains(r#"<p id="error" role="alert">&lt;script&gt;"#));
        assert!(html.contains(r#"value="&quot;&gt;&lt;b&gt;""#));
        assert!(html.contains(
            r#"<p class="field-error" id="error-account">this account name is taken</p>"#
        ));
        assert!(html.contains(r#"aria-describedby="error-account""#));
        assert!(!html.contains(r#"id="error-password""#));
        assert!(html.contains(r#"<input type="hidden" name="csrf" value="tok">"#));
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for (name, source) in TEMPLATES {
            assert!(!source.contains("<style"), "{name}");
            assert!(!source.contains(" style="), "{name}");
            for script in source.split("<script").skip(1) {
                assert!(script.trim_start().starts_with("src="), "{name}");
            }
            // onclick=, onload=…
            let handler = source.split(" on").skip(1).any(|rest| {
                let attr: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !attr.is_empty() && rest[attr.len()..].starts_with('=')
            });
            assert!(!handler, "{name}: an inline event handler");
        }
    }
}
