//! The OpenAPI 3.1 document, generated from the handlers' own types and annotations, so it
//! cannot drift from what the API does.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{actions, deployments, error, events, runs, submit};

#[derive(OpenApi)]
#[openapi(
    info(title = "stepflow", description = "Runs, signals and deployments of a stepflow server."),
    paths(
        runs::list, runs::counts, runs::one, runs::history, events::stream,
        actions::signal, actions::cancel, actions::resume, submit::submit,
        deployments::list, deployments::one, deployments::diagram,
    ),
    components(schemas(error::ErrorBody, events::RunEvent)),
    modifiers(&BearerToken),
)]
struct Document;

/// Declares the bearer token that writes need.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The API's OpenAPI 3.1 document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    Document::openapi()
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}
