//! One real server on port 0, reached over TCP by reqwest, then shut down cleanly.

use serde_json::Value;

use crate::common::server_config;

#[tokio::test]
async fn real_server_serves_health_and_offline_docs() {
    let dir = tempfile::tempdir().unwrap();
    let running = fastk::server::start(server_config(dir.path(), |_| {}))
        .await
        .unwrap();
    let base = format!("http://{}", running.http_addr);
    assert_ne!(running.http_addr.port(), 0);
    let client = reqwest::Client::new();

    let health = client.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let body: Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    // reqwest follows the /docs -> /docs/ redirect like a browser does.
    let docs = client.get(format!("{base}/docs")).send().await.unwrap();
    assert_eq!(docs.status().as_u16(), 200);
    assert_eq!(docs.url().path(), "/docs/");
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let css = client
        .get(format!("{base}/docs/swagger-ui.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(css.status().as_u16(), 200);
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    assert!(css.bytes().await.unwrap().len() > 1000);

    let doc: Value = client
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");

    running.shutdown().await;
    assert!(
        client.get(format!("{base}/health")).send().await.is_err(),
        "the listener is closed after shutdown"
    );
}
