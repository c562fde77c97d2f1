//! The system parameters Google's client libraries add to every admin call, handled before and
//! after the handler: `$alt=json;enum-encoding=int` (the REST transport of every generated client
//! sends it, percent-encoded) asks for enums as numbers in the answer, so the answer's enum fields
//! are rewritten; `$alt=json` alone and `$prettyPrint` change nothing here (clients read compact
//! JSON as well); `$fields` (partial responses) is refused by name rather than silently ignored,
//! since a caller relying on it would otherwise get fields it did not expect.

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::CONTENT_LENGTH;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::Code;

use super::MAX_BODY_BYTES;
use crate::http::error::ApiError;
use crate::http::request::Query;

/// Applies the system parameters of `request` around the handler.
pub async fn apply(request: Request, next: Next) -> Response {
    let query = Query::parse(request.uri().query());
    if query.get("$fields").or(query.get("fields")).is_some() {
        return ApiError::invalid_field(
            "$fields",
            "partial responses are not supported: leave out $fields (or `fields`) and read the \
             whole resource",
        )
        .into_response();
    }
    let numbers = query.get("$alt").is_some_and(|alt| {
        alt.split(';')
            .any(|part| part.trim() == "enum-encoding=int")
    });
    let response = next.run(request).await;
    if numbers {
        with_enum_numbers(response).await
    } else {
        response
    }
}

/// The answer with its enum fields as numbers; an answer that is not JSON passes unchanged.
async fn with_enum_numbers(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    // Answers are built by this server: a list page is the largest, well under this.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * MAX_BODY_BYTES).await else {
        return ApiError::new(Code::Internal, "the answer could not be read back").into_response();
    };
    let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    shared::resources::enums_to_numbers(&mut json);
    parts.headers.remove(CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(json.to_string()))
}
