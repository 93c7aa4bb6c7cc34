//! The web page: three files built into the binary, so the page needs no internet and no
//! files next to the server.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;

const INDEX: &str = include_str!("../web/index.html");
const APP: &str = include_str!("../web/assets/app.js");
const STYLE: &str = include_str!("../web/assets/style.css");

/// `/`, `/assets/app.js`, `/assets/style.css`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| file(INDEX, "text/html; charset=utf-8")))
        .route(
            "/assets/app.js",
            get(|| file(APP, "text/javascript; charset=utf-8")),
        )
        .route(
            "/assets/style.css",
            get(|| file(STYLE, "text/css; charset=utf-8")),
        )
}

async fn file(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
