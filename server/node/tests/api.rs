//! The API through its router (`oneshot`) and, for the WebSocket, a real socket. The store
//! behind it is a real SQLite file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use futures::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use support::{App, TOKEN, app, app_with};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tower::ServiceExt as _;
use volli_node::config::ApiConfig;

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn authed(method: &str, path: &str, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if body.is_some() {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    b.body(body.map_or_else(Body::empty, |s| Body::from(s.to_owned())))
        .unwrap()
}

fn assert_error(status: StatusCode, body: &Value, expected: StatusCode, code: &str) {
    assert_eq!(status, expected, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn health_needs_no_token() {
    let app = app().await;
    let (status, _, body) = app.call(get("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn v1_routes_need_the_token() {
    let app = app().await;
    let (status, headers, body) = app.call(get("/v1/node")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");

    let wrong = Request::get("/v1/node")
        .header(header::AUTHORIZATION, "Bearer not-the-token")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = app.call(wrong).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    // Unknown /v1 routes do not reveal whether they exist to strangers.
    let (status, _, body) = app.call(get("/v1/nothing-here")).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");

    let (status, _, body) = app.call(authed("GET", "/v1/node", None)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for field in ["user_id", "peer_id", "version", "device_name", "started_at"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
    assert!(body["listen_addrs"].is_array());
    assert_eq!(body["device_name"], "test-device");
}

#[tokio::test]
async fn routing_errors_have_the_json_shape() {
    let app = app().await;
    let (status, _, body) = app.call(get("/no/such/route")).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, _, body) = app.call(authed("GET", "/v1/no-such-route", None)).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
    let (status, headers, body) = app.call(authed("PATCH", "/v1/settings/x", None)).await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
    assert!(headers.contains_key(header::ALLOW));
    let (status, _, body) = app.call(authed("GET", "/v1/events", None)).await;
    assert!(status.is_client_error(), "{status}");
    assert!(body["error"]["code"].is_string(), "{body}");
}

#[tokio::test]
async fn malformed_bodies_get_4xx_with_stable_codes_and_change_nothing() {
    let app = app().await;
    let cases: &[(&str, StatusCode, &str)] = &[
        ("{\"value\": ", StatusCode::BAD_REQUEST, "invalid_json"),
        ("not json at all", StatusCode::BAD_REQUEST, "invalid_json"),
        ("{\"valu\": 1}", StatusCode::BAD_REQUEST, "invalid_body"),
        ("\"a string\"", StatusCode::BAD_REQUEST, "invalid_body"),
        (
            "{\"value\": 1, \"extra\": 2}",
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        ("{}", StatusCode::BAD_REQUEST, "invalid_body"),
    ];
    for (body, status, code) in cases {
        let (s, _, b) = app
            .call(authed("PUT", "/v1/settings/theme", Some(body)))
            .await;
        assert_error(s, &b, *status, code);
    }
    let no_type = Request::put("/v1/settings/theme")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from("{\"value\": 1}"))
        .unwrap();
    let (s, _, b) = app.call(no_type).await;
    assert_error(
        s,
        &b,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );

    let (s, _, b) = app
        .call(authed(
            "PUT",
            "/v1/settings/Bad%20Key",
            Some("{\"value\": 1}"),
        ))
        .await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, "invalid_setting_key");

    let (s, _, b) = app.call(authed("GET", "/v1/settings", None)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"settings": {}}),
        "nothing was saved by bad requests"
    );
    assert_eq!(app.vault().settings().await.unwrap().len(), 0);
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let app = app_with(ApiConfig {
        max_body_bytes: 4096,
        ..ApiConfig::default()
    })
    .await;
    let big = format!("{{\"value\": \"{}\"}}", "x".repeat(10_000));
    let (s, _, b) = app
        .call(authed("PUT", "/v1/settings/big", Some(&big)))
        .await;
    assert_error(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
}

#[tokio::test]
async fn settings_round_trip_through_the_vault() {
    let app = app().await;
    let (s, _, b) = app
        .call(authed(
            "PUT",
            "/v1/settings/ui.theme",
            Some("{\"value\": {\"dark\": true}}"),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!({"key": "ui.theme", "value": {"dark": true}}));
    let (s, _, b) = app.call(authed("GET", "/v1/settings/ui.theme", None)).await;
    assert_eq!(
        (s, b["value"].clone()),
        (StatusCode::OK, json!({"dark": true}))
    );
    assert_eq!(
        app.vault().setting("ui.theme").await.unwrap(),
        Some(json!({"dark": true}))
    );
    let (s, _, _) = app
        .call(authed("DELETE", "/v1/settings/ui.theme", None))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, b) = app.call(authed("GET", "/v1/settings/ui.theme", None)).await;
    assert_error(s, &b, StatusCode::NOT_FOUND, "unknown_setting");
}

#[tokio::test]
async fn unauthenticated_bursts_are_rate_limited_but_the_owner_is_not() {
    let app = app_with(ApiConfig {
        public_burst: 5,
        public_per_second: 1,
        ..ApiConfig::default()
    })
    .await;
    for _ in 0..5 {
        let (s, _, _) = app.call(get("/health")).await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, headers, b) = app.call(get("/health")).await;
    assert_error(s, &b, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(
        headers[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // Guessing tokens is limited the same way.
    let (s, _, _) = app.call(get("/v1/node")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, _) = app.call(authed("GET", "/v1/node", None)).await;
    assert_eq!(s, StatusCode::OK, "the owner's requests are not limited");
}

#[tokio::test]
async fn openapi_and_offline_docs_are_served() {
    let app = app().await;
    let (s, _, b) = app.call(get("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(b["openapi"].as_str().unwrap().starts_with("3.1"));
    assert!(b["paths"]["/v1/node"].is_object());
    let response = app.router.clone().oneshot(get("/docs/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let html = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let html = String::from_utf8_lossy(&html);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("https://"),
        "the docs page must not load anything from the internet"
    );
    let (s, _, _) = app.call(get("/docs/swagger-ui-bundle.js")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the Swagger UI assets are served locally"
    );
}

async fn serve(app: &App) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test]
async fn websocket_streams_events_to_authenticated_clients() {
    let app = app().await;
    let addr = serve(&app).await;
    let http = reqwest::Client::new();

    let mut request = format!("ws://{addr}/v1/events")
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "ready");

    let r = http
        .put(format!("http://{addr}/v1/settings/lang"))
        .bearer_auth(TOKEN)
        .json(&json!({"value": "fr"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        next_json(&mut ws).await,
        json!({"type": "settings.changed", "key": "lang"})
    );

    // Client frames larger than the cap close the connection instead of being buffered.
    let _ = ws.send(Message::Text("x".repeat(64 * 1024).into())).await;
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "oversized client frame must end the connection"
    );
}

#[tokio::test]
async fn websocket_refuses_strangers_and_accepts_a_ticket_once() {
    let app = app().await;
    let addr = serve(&app).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{addr}/v1/events"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");

    let ticket: Value = reqwest::Client::new()
        .post(format!("http://{addr}/v1/events/ticket"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    let url = format!("ws://{addr}/v1/events?ticket={ticket}");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "ready");
    let err = tokio_tungstenite::connect_async(&url).await.unwrap_err();
    assert!(
        err.to_string().contains("401"),
        "a ticket works once: {err}"
    );
}
