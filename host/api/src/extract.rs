//! Request extractors whose refusals are API errors in the one JSON shape, naming what was
//! wrong with the request (axum's own answer plain text).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// A JSON body.
pub(crate) struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        // Every body this API takes is an object: serde would also read a struct from an array.
        let value = match axum::Json::<serde_json::Value>::from_request(request, state).await {
            Ok(axum::Json(value)) => value,
            Err(rejection) => return Err(body_error(&rejection)),
        };
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object; /openapi.json describes it",
            ));
        }
        serde_json::from_value(value).map(Body).map_err(|e| {
            ApiError::bad_request(format!(
                "the request body is not what this call takes: {e}; /openapi.json describes it"
            ))
        })
    }
}

fn body_error(rejection: &JsonRejection) -> ApiError {
    ApiError::bad_request(format!(
        "the request body is not what this call takes: {}; /openapi.json describes it",
        rejection.body_text()
    ))
}

/// The query string.
pub(crate) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(query_error(&rejection)),
        }
    }
}

fn query_error(rejection: &QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "the query string is not what this call takes: {}",
        rejection.body_text()
    ))
}

/// The path's parameters.
pub(crate) struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(path_error(&rejection)),
        }
    }
}

fn path_error(rejection: &PathRejection) -> ApiError {
    ApiError::bad_request(format!("the path is not valid: {}", rejection.body_text()))
}
