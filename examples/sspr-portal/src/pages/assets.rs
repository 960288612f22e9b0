//! The stylesheet and the call page's script, compiled into the binary.
//! Files of their own, never inline: the CSP allows scripts and styles from
//! this origin only.

use axum::{
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};

pub async fn css() -> Response {
    (
        [(CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../../static/site.css"),
    )
        .into_response()
}

pub async fn js() -> Response {
    (
        [(CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../../static/verify.js"),
    )
        .into_response()
}
