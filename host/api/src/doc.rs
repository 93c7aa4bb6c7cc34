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
        actions::signal, actions::cancel, actions::resume, actions::rerun, submit::submit,
        deployments::flows, deployments::list, deployments::one, deployments::diagram, deployments::plugins,
    ),
    components(schemas(error::ErrorBody, events::RunEvent)),
    modifiers(&BearerToken, &CommonErrors),
)]
struct Document;

/// The errors any operation can answer, declared on every one: a path or query that does not
/// parse (400), a missing token (401: writes, and reads when the server makes them need it),
/// a failure of the server (500), the database locked by another process for too long (503).
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
        };
        let common = [
            (
                "400",
                "The path, query or body is not what this operation takes.",
            ),
            ("401", "The request needs the API token."),
            ("500", "The server failed."),
            (
                "503",
                "The database was locked by another process for too long; try again.",
            ),
        ];
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                for (status, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| error(description).into());
                }
            }
        }
    }
}

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
