//! `openapi/openapi.json` is generated from the handlers and checked in, so clients can
//! be generated without building the server. This test fails when the committed file
//! and what the router serves at `/openapi.json` differ; `UPDATE_OPENAPI=1` rewrites
//! the file instead. It also checks the properties client generators and fuzzers rely
//! on: every response has a description, every schema an example, operation ids are
//! unique, and every error response uses the contract's error body.

mod common;

use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/openapi.json")
}

/// The document exactly as a running router serves it.
async fn served() -> String {
    let dir = tempfile::tempdir().unwrap();
    let engine = common::engine_with(dir.path(), |_| {});
    let resp = fastk::http::router(engine)
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn committed_document_matches_the_router() {
    let served = served().await;
    assert_eq!(
        served,
        fastk::http::document_json(),
        "the router and document_json() disagree"
    );
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &served).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == served,
        "openapi/openapi.json is out of date with the handlers. Regenerate it with\n\n    \
         UPDATE_OPENAPI=1 cargo test --test openapi_drift\n\nand commit the result."
    );
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.to_uppercase(), path.clone(), op));
        }
    }
    out
}

#[test]
fn document_is_complete_for_generators() {
    let doc: Value = serde_json::from_str(&fastk::http::document_json()).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let ops = operations(&doc);
    assert!(ops.len() >= 30, "only {} operations", ops.len());
    let mut ids: Vec<&str> = ops
        .iter()
        .map(|(m, p, op)| {
            op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{m} {p} has no operationId"))
        })
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(before, ids.len(), "duplicate operationIds");
    for (m, p, op) in &ops {
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("500"), "{m} {p} lacks 500");
        for (status, r) in responses {
            let d = r["description"].as_str().unwrap_or("");
            assert!(!d.is_empty(), "{m} {p} {status} has no description");
            let code: u16 = status.parse().unwrap();
            if code >= 400 && p != "/health" {
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{m} {p} {status} is not the error body"
                );
            }
        }
        if op.get("security").is_some() {
            assert!(responses.contains_key("401"), "{m} {p} lacks 401");
        }
        if op.get("requestBody").is_some() {
            assert!(responses.contains_key("413"), "{m} {p} lacks 413");
            assert!(responses.contains_key("400"), "{m} {p} lacks 400");
        }
    }
    for (name, schema) in doc["components"]["schemas"].as_object().unwrap() {
        assert!(
            schema.get("example").is_some() || schema.get("examples").is_some(),
            "schema {name} has no example"
        );
    }
}

#[test]
fn every_error_code_is_in_the_document() {
    let doc: Value = serde_json::from_str(&fastk::http::document_json()).unwrap();
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "invalid_argument",
        "unauthorized",
        "not_found",
        "conflict",
        "precondition_failed",
        "payload_too_large",
        "unprocessable",
        "corrupted",
        "unavailable",
        "internal",
    ] {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code),
            "{code} missing from {codes}"
        );
    }
}
