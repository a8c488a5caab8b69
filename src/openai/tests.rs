#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn every_grpc_refusal_has_its_http_status() {
    assert_eq!(
        http_status(Code::InvalidArgument).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        http_status(Code::Unauthenticated).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(http_status(Code::PermissionDenied).0, StatusCode::FORBIDDEN);
    assert_eq!(http_status(Code::NotFound).0, StatusCode::NOT_FOUND);
    assert_eq!(
        http_status(Code::ResourceExhausted),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
    );
    assert_eq!(
        http_status(Code::Unavailable).0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        http_status(Code::Internal).0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

#[test]
fn input_is_a_text_or_a_list_of_texts() {
    let one: EmbeddingsRequest =
        serde_json::from_str(r#"{"model": "m", "input": "hello"}"#).unwrap();
    assert!(matches!(one.input, Input::One(t) if t == "hello"));
    let many: EmbeddingsRequest = serde_json::from_str(
        r#"{"model": "m", "input": ["a", ""], "encoding_format": "base64", "user": "u"}"#,
    )
    .unwrap();
    assert!(matches!(many.input, Input::Many(ref v) if v.len() == 2));
    assert_eq!(many.encoding_format.as_deref(), Some("base64"));
    let tokens: EmbeddingsRequest =
        serde_json::from_str(r#"{"model": "m", "input": [[1, 2]]}"#).unwrap();
    assert!(matches!(tokens.input, Input::Tokens(_)));
    assert!(serde_json::from_str::<EmbeddingsRequest>(r#"{"input": "x"}"#).is_err());
}

#[test]
fn a_rate_limit_says_when_to_retry() {
    let mut s = Status::resource_exhausted("over the limit");
    s.metadata_mut()
        .insert("retry-after-ms", "1500".parse().unwrap());
    let r = status_response(&s);
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()[header::RETRY_AFTER], "2");
}
