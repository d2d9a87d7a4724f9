//! The HTTP side of a running server, for what Flight cannot do or is not there for:
//! registering a missing series (the contract has no Flight call for it), learning a
//! series' scales, and a fallback import as ONE JSON write request when no Flight
//! address is given. One request is one all-or-nothing write, so the fallback refuses
//! (rather than splits) a body over the server's `http.max_body_bytes`.

use std::fmt::Write as _;

use super::import::Registration;
use super::{Result, TransferError};
use crate::query::types::{SeriesInfo, WriteResponse};
use crate::record::{SeriesKey, SeriesKind, SeriesMeta, ValueType};
use crate::storage::WriteBatch;

/// A client of one server's HTTP API.
pub struct HttpRemote {
    rt: tokio::runtime::Runtime,
    /// Plain HTTP.
    client: reqwest::Client,
    /// HTTPS (`--ca-cert`): the client TLS configuration ([`super::https`]).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    base: String,
    token: Option<String>,
}

impl HttpRemote {
    /// `base` is `http://host:port` or `https://host:port` (trusting `tls.ca`); a bare
    /// `host:port` gets `http://`, or `https://` when a CA is given.
    pub fn new(
        base: &str,
        token: Option<&str>,
        tls: &crate::tls::ClientFiles,
    ) -> Result<HttpRemote> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TransferError::Remote(format!("cannot start a runtime: {e}")))?;
        let base = if base.contains("://") {
            base.trim_end_matches('/').to_string()
        } else if tls.ca.is_some() {
            format!("https://{}", base.trim_end_matches('/'))
        } else {
            format!("http://{}", base.trim_end_matches('/'))
        };
        let tls = match base.starts_with("https://") {
            true => Some(std::sync::Arc::new(
                tls.rustls().map_err(TransferError::Usage)?,
            )),
            false => None,
        };
        Ok(HttpRemote {
            rt,
            tls,
            client: reqwest::Client::new(),
            base,
            token: token.filter(|t| !t.is_empty()).map(String::from),
        })
    }

    /// Registers a series (201 new, 200 identical); a different one is a conflict.
    pub fn register(&self, reg: &Registration) -> Result<()> {
        let (path, body) = match reg {
            Registration::Kline(r) => ("/v1/kline/series", serde_json::to_string(r)),
            Registration::Scalar(r) => ("/v1/scalar/series", serde_json::to_string(r)),
            Registration::Tick(kind, r) => (
                match kind {
                    crate::record::SeriesKind::Trade => "/v1/trade/series",
                    _ => "/v1/quote/series",
                },
                serde_json::to_string(r),
            ),
        };
        let body = body.map_err(|e| TransferError::Remote(e.to_string()))?;
        self.send(reqwest::Method::POST, path, Some(body)).map(drop)
    }

    /// The series' metadata, or `None` when the server does not have it.
    pub fn series_meta(&self, key: &SeriesKey) -> Result<Option<SeriesMeta>> {
        let path = format!("/v1/{}", key.parts().join("/"));
        let info: SeriesInfo = match self.send(reqwest::Method::GET, &path, None) {
            Ok(body) => serde_json::from_str(&body).map_err(|e| {
                TransferError::Remote(format!("unexpected series answer from {}: {e}", self.base))
            })?,
            Err(TransferError::Remote(m)) if m.starts_with("404") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(SeriesMeta {
            key: key.clone(),
            timeframe_ms: info.timeframe_ms,
            price_scale: info.price_scale.unwrap_or(1),
            volume_scale: info.volume_scale.or(info.size_scale).unwrap_or(1),
            value_type: info.value_type.unwrap_or_default(),
        }))
    }

    /// Sends every row as one write request.
    pub fn put(&self, meta: &SeriesMeta, batch: &WriteBatch) -> Result<WriteResponse> {
        let body = records_json(meta, batch)?;
        let path = format!("/v1/{}/records", meta.key.parts().join("/"));
        let answer = self.send(reqwest::Method::POST, &path, Some(body))?;
        serde_json::from_str(&answer).map_err(|e| {
            TransferError::Remote(format!("unexpected write answer from {}: {e}", self.base))
        })
    }

    /// One request; a non-2xx answer becomes `Remote("<status>: <message>")`.
    fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let body_bytes = body.as_ref().map_or(0, String::len);
        if let Some(tls) = &self.tls {
            let mut headers = vec![("content-type", "application/json".to_string())];
            if let Some(t) = &self.token {
                headers.push(("authorization", format!("Bearer {t}")));
            }
            let answer = self.rt.block_on(super::https::request(
                std::sync::Arc::clone(tls),
                method.as_str(),
                &url,
                &headers,
                body,
            ));
            let (status, text) = answer
                .map_err(|e| TransferError::Remote(format!("request to {url} failed: {e}")))?;
            return answered(status, text);
        }
        let mut req = self.client.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let answer = self.rt.block_on(async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            Ok::<_, reqwest::Error>((status, resp.text().await?))
        });
        let (status, text) = answer.map_err(|e| {
            // A server refusing a body over its limit may answer 413 and close the
            // connection while the body is still being sent; the client then sees only
            // the reset.
            let hint = if body_bytes > 1 << 20 {
                format!(
                    " (a {:.1} MB body may exceed the server's http.max_body_bytes: \
                     import through --flight HOST:PORT instead)",
                    body_bytes as f64 / 1e6
                )
            } else {
                String::new()
            };
            let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
            TransferError::Remote(format!("request to {url} failed: {e}{cause}{hint}"))
        })?;
        answered(status, text)
    }
}

/// The body of a 2xx answer, else the error it carries.
fn answered(status: u16, text: String) -> Result<String> {
    if (200..300).contains(&status) {
        return Ok(text);
    }
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(String::from))
        .unwrap_or(text);
    let hint = if status == 413 {
        " (the whole import is one request; import through --flight HOST:PORT instead)"
    } else {
        ""
    };
    Err(TransferError::Remote(format!("{status}: {message}{hint}")))
}

/// `{"records": [...]}` for the contract's write endpoints, built without a value
/// tree (a JSON document per row would cost more than the import itself).
fn records_json(meta: &SeriesMeta, batch: &WriteBatch) -> Result<String> {
    let n = batch.len();
    let mut s = String::with_capacity(16 + n * 100);
    s.push_str("{\"records\":[");
    let c = &batch.cols;
    for (i, ts) in c[0].iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // Writing to a String cannot fail.
        let _ = match (meta.key.kind(), meta.value_type) {
            (SeriesKind::Kline, _) => write!(
                s,
                "{{\"ts\":{},\"open\":{},\"high\":{},\"low\":{},\"close\":{},\"volume\":{}}}",
                ts, c[1][i], c[2][i], c[3][i], c[4][i], c[5][i]
            ),
            (SeriesKind::Scalar, ValueType::I64) => {
                write!(s, "{{\"ts\":{ts},\"value\":{}}}", c[1][i])
            }
            (SeriesKind::Scalar, ValueType::F64) => {
                let v = f64::from_bits(c[1][i] as u64);
                if !v.is_finite() {
                    return Err(TransferError::Usage(format!(
                        "ts {}: NaN and infinities cannot travel as JSON; import through --flight",
                        ts
                    )));
                }
                write!(s, "{{\"ts\":{ts},\"value\":{v:?}}}")
            }
            (kind @ (SeriesKind::Trade | SeriesKind::Quote), _) => {
                let names = kind.layout().columns;
                let _ = write!(s, "{{\"ts\":{ts}");
                for (k, name) in names.iter().enumerate().skip(1) {
                    let _ = match *name {
                        // Left out: the store numbers it.
                        "seq" if c[k][i] == crate::record::SEQ_UNASSIGNED => Ok(()),
                        "seq" => write!(s, ",\"seq\":{}", c[k][i] as u64),
                        _ => write!(s, ",\"{name}\":{}", c[k][i]),
                    };
                }
                write!(s, "}}")
            }
        };
    }
    s.push_str("]}");
    Ok(s)
}
