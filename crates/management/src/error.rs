//! The API's errors, with RabbitMQ's status codes and bodies: 401 without credentials (empty
//! body, a `WWW-Authenticate` challenge), 401 `not_authorized` "Login failed", 401
//! `not_authorised` for a tag or vhost the user lacks, 404 "Object Not Found", 400
//! `bad_request` with the AMQP error's text.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use warren_core::AmqpError;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// No credentials.
    Unauthenticated,
    /// Unknown user or wrong password.
    LoginFailed,
    /// Logged in, but not allowed (the reason as RabbitMQ words it).
    NotAuthorised(String),
    /// No such object.
    NotFound,
    /// Refused (the reason).
    BadRequest(String),
    /// A listing page past the end.
    PageOutOfRange(String),
    /// Something broke (empty body, as RabbitMQ's 500).
    Internal,
}

impl From<AmqpError> for ApiError {
    fn from(e: AmqpError) -> Self {
        match e.code {
            404 => ApiError::NotFound,
            403 => ApiError::NotAuthorised("Access refused.".into()),
            _ => ApiError::BadRequest(e.text),
        }
    }
}

fn challenge(mut r: Response) -> Response {
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"RabbitMQ Management\""),
    );
    r
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = |status: StatusCode, error: &str, reason: &str| {
            (status, axum::Json(json!({"error": error, "reason": reason}))).into_response()
        };
        match self {
            ApiError::Unauthenticated => challenge(StatusCode::UNAUTHORIZED.into_response()),
            ApiError::LoginFailed => {
                challenge(body(StatusCode::UNAUTHORIZED, "not_authorized", "Login failed"))
            }
            ApiError::NotAuthorised(reason) => {
                body(StatusCode::UNAUTHORIZED, "not_authorised", &reason)
            }
            ApiError::NotFound => body(StatusCode::NOT_FOUND, "Object Not Found", "Not Found"),
            ApiError::BadRequest(reason) => body(StatusCode::BAD_REQUEST, "bad_request", &reason),
            ApiError::PageOutOfRange(reason) => {
                body(StatusCode::BAD_REQUEST, "page_out_of_range", &reason)
            }
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}

/// Any path the API does not have.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound
}

/// Refuses a name or key the AMQP wire could not carry (a short string: 255 bytes at most):
/// the core relies on that bound, and a message or definition holding a longer one could not
/// be delivered or saved.
pub(crate) fn short(value: &str, what: &str) -> Result<(), ApiError> {
    if value.len() > 255 {
        return Err(ApiError::BadRequest(format!("{what} is longer than 255 bytes")));
    }
    Ok(())
}

/// What a handler returns.
pub(crate) type ApiResult<T> = Result<T, ApiError>;
