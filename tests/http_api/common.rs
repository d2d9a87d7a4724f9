//! Helpers: an engine on a temp dir, a router, and one-line requests.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use fastk::config::Config;
use fastk::query::Engine;
use serde_json::{Value, json};
use tempfile::TempDir;
use tower::ServiceExt;

pub use crate::shared::{HOUR, JAN_2024, MINUTE, server_config};

/// A router over a fresh store; the temp dir lives as long as the value.
pub struct App {
    pub router: Router,
    pub engine: Arc<Engine>,
    _dir: TempDir,
}

/// What a request returned.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and the contract's error body; returns the message.
    pub fn expect_error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert!(
            self.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "error content type: {:?}",
            self.headers.get("content-type")
        );
        let v = self.json();
        let obj = v.as_object().expect("error body is an object");
        assert_eq!(obj.len(), 1, "error body has only `error`: {v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        let message = v["error"]["message"].as_str().expect("message").to_string();
        assert!(!message.is_empty());
        message
    }

    /// Asserts the status and returns the JSON body.
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        self.json()
    }
}

pub fn app() -> App {
    app_with(|_| {})
}

pub fn app_with(configure: impl FnOnce(&mut Config)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let engine = crate::shared::engine_with(dir.path(), configure);
    App {
        router: fastk::http::router(Arc::clone(&engine)),
        engine,
        _dir: dir,
    }
}

impl App {
    /// Sends one request; `body` is sent as raw bytes.
    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, &[], Body::empty()).await
    }

    pub async fn delete(&self, uri: &str) -> Reply {
        self.send(Method::DELETE, uri, &[], Body::empty()).await
    }

    pub async fn post(&self, uri: &str, body: &Value) -> Reply {
        self.post_with(uri, &[], body).await
    }

    pub async fn post_with(&self, uri: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(Method::POST, uri, &all, body.to_string()).await
    }

    pub async fn register_kline(&self, symbol: &str) -> Value {
        let body =
            json!({"symbol": symbol, "timeframe": "1m", "price_scale": 100, "volume_scale": 1000});
        self.post("/v1/kline/series", &body).await.expect(201)
    }

    pub async fn register_scalar(&self, symbol: &str, name: &str, value_type: &str) -> Value {
        let body = json!({"symbol": symbol, "timeframe": "1m", "category": "indicator",
            "name": name, "value_type": value_type});
        self.post("/v1/scalar/series", &body).await.expect(201)
    }
}

/// `n` valid bars one minute apart from January 2024.
pub fn klines(n: usize) -> Vec<Value> {
    (0..n as i64)
        .map(|i| {
            let open = 4_200_000 + (i * 37) % 1000;
            let close = open + (i % 7) - 3;
            json!({"ts": JAN_2024 + i * MINUTE, "open": open, "high": open.max(close) + 5,
                "low": open.min(close) - 5, "close": close, "volume": 1000 + i})
        })
        .collect()
}
