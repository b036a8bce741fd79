//! A small client of a running node's API, for the CLI's client commands.

use anyhow::{Context as _, bail};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::config::Config;
use crate::identity;
use crate::node::api_url_path;

/// Where the node is and how to authenticate to it.
pub(crate) struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    /// Finds the node: `--api` or `<data-dir>/api.url` or the configured listen address; the
    /// token from `--token` or `<data-dir>/admin.token`.
    pub(crate) fn resolve(
        config: &Config,
        api: Option<String>,
        token: Option<String>,
    ) -> anyhow::Result<Self> {
        let base = api
            .or_else(|| {
                std::fs::read_to_string(api_url_path(&config.data_dir))
                    .ok()
                    .map(|s| s.trim().to_owned())
            })
            .unwrap_or_else(|| format!("http://{}", config.api_listen));
        let token = match token {
            Some(t) => t,
            None => {
                let path = identity::token_path(&config.data_dir);
                std::fs::read_to_string(&path)
                    .with_context(|| {
                        format!(
                            "cannot read the admin token at {} (pass --data-dir, or --token)",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_owned()
            }
        };
        let base = base.trim_end_matches('/').to_owned();
        Ok(Self {
            http: http_client(&base)?,
            base,
            token,
        })
    }

    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// `GET path` with the token, decoded as `T`; API errors become readable messages.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let value = self.send(reqwest::Method::GET, path, Body::None).await?;
        Ok(serde_json::from_value(value)?)
    }

    /// A request with the token; the JSON answer (`null` for an empty one) or a readable error.
    pub(crate) async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        request = match body {
            Body::None => request,
            Body::Json(v) => request.json(&v),
            Body::Wasm(bytes) => request
                .header("content-type", "application/wasm")
                .body(bytes),
            Body::Image(bytes) => request
                .header("content-type", "application/octet-stream")
                .body(bytes),
            Body::File(file, len) => {
                let stream = futures::stream::unfold(file, |mut file| async move {
                    use tokio::io::AsyncReadExt as _;
                    let mut buf = vec![0u8; 1 << 20];
                    match file.read(&mut buf).await {
                        Ok(0) => None,
                        Ok(n) => {
                            buf.truncate(n);
                            Some((Ok::<_, std::io::Error>(buf), file))
                        }
                        Err(e) => Some((Err(e), file)),
                    }
                });
                request
                    .header("content-type", "application/octet-stream")
                    .header("content-length", len)
                    .body(reqwest::Body::wrap_stream(stream))
            }
        };
        let response = request.send().await.with_context(|| {
            format!(
                "cannot reach the node at {} (is `volli serve` running?)",
                self.base
            )
        })?;
        let status = response.status();
        let text = response.text().await?;
        let body: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| {
                format!("the node at {} sent a response that is not JSON", self.base)
            })?
        };
        if !status.is_success() {
            let code = body["error"]["code"].as_str().unwrap_or("unknown");
            let message = body["error"]["message"].as_str().unwrap_or("");
            bail!("the node answered {status}: {message} ({code})");
        }
        Ok(body)
    }
}

/// The HTTP client for `base`. A node serving TLS is reached on its own machine at a
/// loopback address its certificate does not name (it names the host's public name), so
/// there the certificate is not checked: on loopback that trusts no more than plain HTTP to
/// 127.0.0.1 does. Anywhere else it is checked as usual.
fn http_client(base: &str) -> anyhow::Result<reqwest::Client> {
    let host = base
        .strip_prefix("https://")
        .map(|rest| rest.split('/').next().unwrap_or_default());
    let loopback = host.is_some_and(|authority| {
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(h, port)| {
                if port.chars().all(|c| c.is_ascii_digit()) {
                    h
                } else {
                    authority
                }
            })
            .trim_start_matches('[')
            .trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    Ok(reqwest::Client::builder()
        .danger_accept_invalid_certs(loopback)
        .build()?)
}

/// A request body.
pub(crate) enum Body {
    None,
    Json(Value),
    Wasm(Vec<u8>),
    /// Bytes of an image (the node tells its type from them).
    Image(Vec<u8>),
    /// A file streamed as `application/octet-stream`, with its length.
    File(tokio::fs::File, u64),
}

/// Percent-encodes a path segment or a query value (commas kept, for lists).
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b',' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line per plugin: name, kind, state, version, grants, last error.
pub(crate) fn print_plugin(p: &Value) {
    let s = |k: &str| p[k].as_str().unwrap_or("?").to_owned();
    let granted: Vec<&str> = p["granted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    println!(
        "{:<16} {:<13} {:<9} v{:<8} granted: {}{}",
        s("name"),
        s("kind"),
        s("state"),
        s("version"),
        if granted.is_empty() {
            "-".to_owned()
        } else {
            granted.join(",")
        },
        p["last_error"]
            .as_str()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default()
    );
}

/// `volli node`
pub(crate) async fn node(client: &Client) -> anyhow::Result<()> {
    let node: Value = client.get("/v1/node").await?;
    println!("{}", serde_json::to_string_pretty(&node)?);
    Ok(())
}

/// `volli admin`
pub(crate) async fn admin(client: &Client) -> anyhow::Result<()> {
    let login = client
        .send(reqwest::Method::POST, "/v1/admin/login-codes", Body::None)
        .await?;
    println!(
        "{}{}",
        client.base(),
        login["path"].as_str().unwrap_or("/admin")
    );
    eprintln!(
        "open it in a browser; it works once, until {}",
        login["expires_at"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `volli status`
pub(crate) async fn status(client: &Client) -> anyhow::Result<()> {
    let node: Value = client.get("/v1/node").await?;
    let s = |k: &str| node[k].as_str().unwrap_or("?").to_owned();
    println!(
        "node      running at {} (version {})",
        client.base(),
        s("version")
    );
    println!("user id   {}", s("user_id"));
    println!("peer id   {}", s("peer_id"));
    println!("device    {}", s("device_name"));
    println!("since     {}", s("started_at"));
    let addrs = node["listen_addrs"].as_array().cloned().unwrap_or_default();
    if addrs.is_empty() {
        println!("listening (no peer-to-peer addresses)");
    }
    for a in addrs {
        println!("listening {}", a.as_str().unwrap_or("?"));
    }
    Ok(())
}

/// `volli invite`
pub(crate) async fn invite(
    client: &Client,
    ttl: Option<u64>,
    uses: Option<u16>,
    qr: bool,
) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    if let Some(ttl) = ttl {
        body.insert("ttl_secs".into(), ttl.into());
    }
    if let Some(uses) = uses {
        body.insert("max_uses".into(), uses.into());
    }
    let invite = client
        .send(
            reqwest::Method::POST,
            "/v1/invites",
            Body::Json(Value::Object(body)),
        )
        .await?;
    let link = invite["link"].as_str().unwrap_or_default();
    if qr {
        print_qr(link)?;
    }
    println!("{link}");
    eprintln!("expires {}", invite["expires_at"].as_str().unwrap_or("?"));
    Ok(())
}

fn print_qr(text: &str) -> anyhow::Result<()> {
    let code = qrcode::QrCode::new(text.as_bytes())?;
    let art = code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build();
    println!("{art}");
    Ok(())
}

/// `volli pair`: offers a pairing, then (unless told not to) waits for the request and asks
/// whether to approve it.
pub(crate) async fn pair(
    client: &Client,
    ttl: Option<u64>,
    permissions: Option<&str>,
    wait: bool,
) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    if let Some(ttl) = ttl {
        body.insert("ttl_secs".into(), ttl.into());
    }
    if let Some(p) = permissions {
        let list: Vec<Value> = p
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_owned()))
            .collect();
        body.insert("permissions".into(), Value::Array(list));
    }
    let offer = client
        .send(
            reqwest::Method::POST,
            "/v1/pairing",
            Body::Json(Value::Object(body)),
        )
        .await?;
    let link = offer["link"].as_str().unwrap_or_default();
    let id = offer["id"].as_str().unwrap_or_default().to_owned();
    if wait {
        print_qr(link)?;
    }
    println!("{link}");
    println!("code: {}", offer["code"].as_str().unwrap_or("?"));
    eprintln!(
        "on the new device: volli pair join <link or code>   (expires {}; gives {})",
        offer["expires_at"].as_str().unwrap_or("?"),
        offer["permissions"]
            .as_array()
            .map(|p| p
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .unwrap_or_default()
    );
    if !wait {
        return Ok(());
    }
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let list: Value = client.get("/v1/pairing").await?;
        let Some(request) = list["requests"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["id"] == id.as_str())
        else {
            continue;
        };
        if request["state"] != "pending" {
            println!("{}", request["state"].as_str().unwrap_or("?"));
            return Ok(());
        }
        eprintln!(
            "{} asks to join ({}); check code {} — it must match the one it shows. Approve? [y/N] ",
            request["device_name"].as_str().unwrap_or("?"),
            request["peer_id"].as_str().unwrap_or("?"),
            request["check_code"].as_str().unwrap_or("?"),
        );
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        let approve = matches!(answer.trim(), "y" | "Y" | "yes");
        return pair_decide(client, &id, approve).await;
    }
}

/// `volli pair join`
pub(crate) async fn pair_join(
    client: &Client,
    link_or_code: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = serde_json::Map::new();
    let key = if link_or_code.trim().starts_with("volli://") {
        "link"
    } else {
        "code"
    };
    body.insert(key.into(), Value::String(link_or_code.trim().to_owned()));
    if let Some(name) = name {
        body.insert("device_name".into(), Value::String(name.to_owned()));
    }
    let joining = client
        .send(
            reqwest::Method::POST,
            "/v1/pairing/join",
            Body::Json(Value::Object(body)),
        )
        .await?;
    println!(
        "check code {} — approve on the other device if it shows the same",
        joining["check_code"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `volli backup setup`
pub(crate) async fn backup_setup(client: &Client, rotate: bool) -> anyhow::Result<()> {
    let answer = client
        .send(
            reqwest::Method::POST,
            "/v1/backup/setup",
            Body::Json(serde_json::json!({ "rotate": rotate })),
        )
        .await?;
    println!("Your recovery phrase (write it down; it is not shown again):\n");
    for (i, word) in answer["phrase"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .enumerate()
    {
        println!("  {:>2}. {word}", i + 1);
    }
    println!(
        "\nWith these words alone, `volli restore --phrase` brings this user back on a new \
         node: contacts, settings and history. Friends' nodes that offer room now hold the \
         backup (`volli backup status`)."
    );
    Ok(())
}

/// `volli backup status`
pub(crate) async fn backup_status(client: &Client) -> anyhow::Result<()> {
    let b: Value = client.get("/v1/backup").await?;
    let state = b["state"].as_str().unwrap_or("?");
    if state == "off" {
        println!("no backup held by friends: `volli backup setup` makes one");
    } else {
        println!(
            "backup #{} of {} ({state}): {} of {} holders needed; {}",
            b["seq"],
            b["updated_at"].as_str().unwrap_or("never"),
            b["k"],
            b["n"],
            match b["can_lose"].as_u64() {
                Some(n) => format!("{n} may vanish before it is lost"),
                None => "too few hold it whole to restore it".into(),
            }
        );
        for h in b["holders"].as_array().into_iter().flatten() {
            println!(
                "  slot {}  {}  {}  {}  {} bytes{}",
                h["slot"],
                h["name"].as_str().unwrap_or("?"),
                if h["online"] == true {
                    "online "
                } else {
                    "offline"
                },
                if h["current"] == true {
                    "current"
                } else {
                    "behind "
                },
                h["bytes"],
                h["refused"]
                    .as_str()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            );
        }
        if let Some(e) = b["last_error"].as_str() {
            println!("last refresh failed: {e}");
        }
    }
    println!(
        "held here for contacts: {} bytes for {} of them (each may keep {} bytes)",
        b["held"]["bytes"], b["held"]["contacts"], b["held"]["offer_bytes"]
    );
    Ok(())
}

/// `volli backup now`
pub(crate) async fn backup_now(client: &Client) -> anyhow::Result<()> {
    let r = client
        .send(reqwest::Method::POST, "/v1/backup/refresh", Body::None)
        .await?;
    println!(
        "backup #{}: {} of {} parts sealed anew, {} bytes sent; {} holders hold it",
        r["seq"], r["parts_sealed"], r["parts"], r["bytes_sent"], r["holders"]
    );
    Ok(())
}

/// `volli restore --phrase`: restores the running fresh node, then waits for it to come
/// back as the user's device.
pub(crate) async fn restore_phrase(
    client: &Client,
    phrase: &str,
    bootstrap: &[String],
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let r = client
        .send(
            reqwest::Method::POST,
            "/v1/backup/restore",
            Body::Json(serde_json::json!({ "phrase": phrase.trim(), "bootstrap": bootstrap })),
        )
        .await?;
    let user = r["user_id"].as_str().unwrap_or_default().to_owned();
    println!(
        "restored backup #{} of {} ({} documents, from {} holders{}); restarting as {user}",
        r["seq"],
        r["made_at"].as_str().unwrap_or("?"),
        r["documents"],
        r["holders_used"],
        match r["shares_rejected"].as_u64() {
            Some(0) | None => String::new(),
            Some(n) => format!(", {n} damaged shares set aside"),
        }
    );
    for _ in 0..600 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if let Ok(node) = client.get::<Value>("/v1/node").await
            && node["user_id"] == user.as_str()
        {
            println!(
                "back as the user's device in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }
    }
    bail!("the node did not come back as the restored user within a minute")
}

/// `volli pair approve|reject`
pub(crate) async fn pair_decide(client: &Client, id: &str, approve: bool) -> anyhow::Result<()> {
    let path = format!(
        "/v1/pairing/{}/{}",
        encode(id),
        if approve { "approve" } else { "reject" }
    );
    let answer = client
        .send(reqwest::Method::POST, &path, Body::None)
        .await?;
    println!("{}", answer["state"].as_str().unwrap_or("?"));
    Ok(())
}

/// `volli devices`
pub(crate) async fn devices(client: &Client) -> anyhow::Result<()> {
    let list: Value = client.get("/v1/devices").await?;
    for d in list["devices"].as_array().into_iter().flatten() {
        println!(
            "{}{}  {}  [{}]{}",
            if d["this_device"] == true { "* " } else { "  " },
            d["peer_id"].as_str().unwrap_or("?"),
            d["name"].as_str().unwrap_or("?"),
            d["permissions"]
                .as_array()
                .map(|p| p
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            if d["revoked"] == true {
                "  revoked"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn names(v: &Value) -> String {
    v.as_array()
        .map(|p| {
            p.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `volli clients`
pub(crate) async fn clients(client: &Client) -> anyhow::Result<()> {
    let list: Value = client.get("/v1/clients").await?;
    let clients = list["clients"].as_array().cloned().unwrap_or_default();
    if clients.is_empty() {
        eprintln!(
            "no clients; add one with `volli clients add --name phone --scopes read,messages`"
        );
    }
    for c in clients {
        println!(
            "{}  {:<20} [{}]  created {}  last used {}",
            c["id"].as_str().unwrap_or("?"),
            c["name"].as_str().unwrap_or("?"),
            names(&c["scopes"]),
            c["created_at"].as_str().unwrap_or("?"),
            c["last_used_at"].as_str().unwrap_or("never"),
        );
    }
    Ok(())
}

/// `volli clients add --print-token`
pub(crate) async fn create_client(
    client: &Client,
    name: &str,
    scopes: &[&str],
) -> anyhow::Result<()> {
    let created = client
        .send(
            reqwest::Method::POST,
            "/v1/clients",
            Body::Json(serde_json::json!({"name": name, "scopes": scopes})),
        )
        .await?;
    println!("{}", created["token"].as_str().unwrap_or_default());
    eprintln!(
        "client {} ({}) with scopes {}; the token is shown only this once",
        created["id"].as_str().unwrap_or("?"),
        created["name"].as_str().unwrap_or("?"),
        names(&created["scopes"])
    );
    Ok(())
}

/// `volli clients add`
pub(crate) async fn offer_client_login(
    client: &Client,
    name: &str,
    scopes: &[&str],
    ttl: Option<u64>,
    api_url: Option<&str>,
    qr: bool,
) -> anyhow::Result<()> {
    let mut body = serde_json::json!({"name": name, "scopes": scopes});
    if let Some(ttl) = ttl {
        body["ttl_secs"] = ttl.into();
    }
    if let Some(url) = api_url {
        body["api_url"] = url.into();
    }
    let offer = client
        .send(
            reqwest::Method::POST,
            "/v1/clients/login-codes",
            Body::Json(body),
        )
        .await?;
    let link = offer["link"].as_str().unwrap_or_default();
    let app_url = offer["app_url"].as_str().unwrap_or(link);
    if qr {
        print_qr(app_url)?;
    }
    println!("{app_url}");
    println!("{link}");
    let api = offer["api_url"].as_str().unwrap_or("?");
    eprintln!(
        "scan it with the phone's camera (the web app opens logged in), or give a client the code {} and the address {api}; it works once, until {}",
        offer["code"].as_str().unwrap_or("?"),
        offer["expires_at"].as_str().unwrap_or("?"),
    );
    if api.contains("://127.") || api.contains("://localhost") || api.contains("://[::1]") {
        eprintln!(
            "note: {api} is reachable only from this machine; pass --api-url with the address \
             a phone reaches the node at"
        );
    }
    Ok(())
}

/// `volli contacts`
pub(crate) async fn contacts(client: &Client) -> anyhow::Result<()> {
    let list: Value = client.get("/v1/contacts").await?;
    for c in list["contacts"].as_array().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("?");
        let own = c["display_name"].as_str().unwrap_or(name);
        println!(
            "{name}{}  {}  ({} device(s), since {})",
            if own == name {
                String::new()
            } else {
                format!(" (calls themselves {own})")
            },
            c["user_id"].as_str().unwrap_or("?"),
            c["devices"].as_array().map_or(0, Vec::len),
            c["added_at"].as_str().unwrap_or("?")
        );
    }
    for p in list["pending"].as_array().into_iter().flatten() {
        println!(
            "{}  {}  (pending: {} attempt(s){})",
            p["name"].as_str().unwrap_or("(invite)"),
            p["user_id"].as_str().unwrap_or("?"),
            p["attempts"],
            p["last_error"]
                .as_str()
                .map(|e| format!(", {e}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `volli contacts rename WHO [NAME]`
pub(crate) async fn rename_contact(
    client: &Client,
    who: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let id = contact_id(client, who).await?;
    let c = client
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/contacts/{}", encode(&id)),
            Body::Json(serde_json::json!({ "name": name })),
        )
        .await?;
    println!(
        "{} is now {} (they call themselves {})",
        c["user_id"].as_str().unwrap_or("?"),
        c["name"].as_str().unwrap_or("?"),
        c["display_name"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// `volli profile`
pub(crate) async fn profile(client: &Client) -> anyhow::Result<()> {
    let p: Value = client.get("/v1/profile").await?;
    println!(
        "{}  ({})",
        p["name"].as_str().unwrap_or("?"),
        if p["avatar"] == true {
            "with a picture"
        } else {
            "no picture"
        }
    );
    Ok(())
}

/// `volli profile set-name NAME`
pub(crate) async fn set_name(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .send(
            reqwest::Method::PUT,
            "/v1/profile",
            Body::Json(serde_json::json!({ "name": name })),
        )
        .await?;
    profile(client).await
}

/// `volli profile set-avatar FILE`
pub(crate) async fn set_avatar(client: &Client, path: &std::path::Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    client
        .send(
            reqwest::Method::PUT,
            "/v1/profile/avatar",
            Body::Image(bytes),
        )
        .await?;
    profile(client).await
}

/// `volli search TEXT`
pub(crate) async fn search(
    client: &Client,
    text: &str,
    with: Option<&str>,
    group: Option<&str>,
    limit: u32,
) -> anyhow::Result<()> {
    let mut path = format!("/v1/search?q={}&limit={limit}", encode(text));
    if let Some(with) = with {
        path.push_str(&format!(
            "&with={}",
            encode(&contact_id(client, with).await?)
        ));
    }
    if let Some(group) = group {
        path.push_str(&format!("&group={}", group_id(client, group).await?));
    }
    let found: Value = client.get(&path).await?;
    let names = Names::load(client).await?;
    let results = found["results"].as_array().cloned().unwrap_or_default();
    if results.is_empty() {
        println!("nothing found");
    }
    for r in &results {
        let m = &r["message"];
        let place = match (r["with"].as_str(), r["group"].as_str()) {
            (_, Some(g)) => names.group(g),
            (Some(w), None) => names.user(w),
            _ => "?".to_owned(),
        };
        println!(
            "{}  {:<16}  {:<12}  {}",
            m["sent_at"].as_str().unwrap_or("?"),
            place,
            names.user(m["from"].as_str().unwrap_or("?")),
            r["snippet"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// People's and groups' names, to print instead of ids: this user is "me", a contact is
/// its name, anyone else a short id.
pub(crate) struct Names {
    me: String,
    users: std::collections::HashMap<String, String>,
    groups: std::collections::HashMap<String, String>,
}

impl Names {
    pub(crate) async fn load(client: &Client) -> anyhow::Result<Self> {
        let node: Value = client.get("/v1/node").await?;
        let contacts: Value = client.get("/v1/contacts").await?;
        let groups: Value = client.get("/v1/groups").await.unwrap_or(Value::Null);
        let users = contacts["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c["user_id"].as_str()?.to_owned(),
                    c["name"].as_str()?.to_owned(),
                ))
            })
            .collect();
        let groups = groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|g| Some((g["id"].as_str()?.to_owned(), g["name"].as_str()?.to_owned())))
            .collect();
        Ok(Self {
            me: node["user_id"].as_str().unwrap_or_default().to_owned(),
            users,
            groups,
        })
    }

    /// A user's name.
    pub(crate) fn user(&self, id: &str) -> String {
        if id == self.me {
            return "me".to_owned();
        }
        match self.users.get(id) {
            Some(name) => name.clone(),
            None => format!("{}…", id.get(..8).unwrap_or(id)),
        }
    }

    /// A group's name.
    pub(crate) fn group(&self, id: &str) -> String {
        match self.groups.get(id) {
            Some(name) => name.clone(),
            None => format!("{}…", id.get(..8).unwrap_or(id)),
        }
    }
}

/// `volli contacts add`
pub(crate) async fn add_contact(
    client: &Client,
    link: &str,
    name: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "invite": link });
    if let Some(name) = name {
        body["name"] = name.into();
    }
    let answer = client
        .send(reqwest::Method::POST, "/v1/contacts", Body::Json(body))
        .await?;
    if answer["state"] == "pending" {
        println!(
            "the inviter is unreachable right now; {} will be added as soon as their node answers",
            answer["user_id"].as_str().unwrap_or("?")
        );
    } else {
        println!(
            "added {} ({})",
            answer["name"].as_str().unwrap_or("?"),
            answer["user_id"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `volli peers`
pub(crate) async fn peers(client: &Client) -> anyhow::Result<()> {
    let list: Value = client.get("/v1/peers").await?;
    for p in list["peers"].as_array().into_iter().flatten() {
        let sources: Vec<&str> = p["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{}  {}  {}  user: {}  via: {}",
            p["peer_id"].as_str().unwrap_or("?"),
            if p["connected"] == true {
                "connected   "
            } else {
                "disconnected"
            },
            p["addrs"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .unwrap_or("-"),
            p["user_id"].as_str().unwrap_or("-"),
            if sources.is_empty() {
                "-".to_owned()
            } else {
                sources.join(",")
            }
        );
    }
    Ok(())
}

/// A contact's user id from a user id or a contact name.
pub(crate) async fn contact_id(client: &Client, who: &str) -> anyhow::Result<String> {
    if crate::contacts::Contacts::parse_user(who).is_some() {
        return Ok(who.to_owned());
    }
    let list: Value = client.get("/v1/contacts").await?;
    let all = list["contacts"].as_array().cloned().unwrap_or_default();
    // This user's name for them first, then their own.
    let mut matches: Vec<&Value> = all.iter().filter(|c| c["name"] == who).collect();
    if matches.is_empty() {
        matches = all.iter().filter(|c| c["display_name"] == who).collect();
    }
    match matches.as_slice() {
        [one] => Ok(one["user_id"].as_str().unwrap_or_default().to_owned()),
        [] => anyhow::bail!("no contact named {who:?} (see `volli contacts`)"),
        _ => anyhow::bail!("several contacts are named {who:?}; use the user id"),
    }
}

pub(crate) async fn send(client: &Client, to: &str, text: &str) -> anyhow::Result<()> {
    let to = contact_id(client, to).await?;
    let answer = client
        .send(
            reqwest::Method::POST,
            "/v1/messages",
            Body::Json(serde_json::json!({ "to": to, "body": text })),
        )
        .await?;
    println!(
        "{} {}",
        answer["status"].as_str().unwrap_or("?"),
        answer["id"].as_str().unwrap_or("?")
    );
    Ok(())
}

/// Message `id`, as the node shows it.
async fn message(client: &Client, id: &str) -> anyhow::Result<Value> {
    if id.parse::<volli_core::MessageId>().is_err() {
        anyhow::bail!("{id:?} is not a message id (32 hex digits, as `volli messages` shows)");
    }
    client.get(&format!("/v1/messages/{}", encode(id))).await
}

pub(crate) async fn reply(client: &Client, id: &str, text: &str) -> anyhow::Result<()> {
    let m = message(client, id).await?;
    let me: Value = client.get("/v1/node").await?;
    let mut body = serde_json::json!({ "body": text, "reply_to": id });
    if let Some(group) = m["group"].as_str() {
        body["group"] = group.into();
    } else {
        let other = if m["from"] == me["user_id"] {
            &m["to"]
        } else {
            &m["from"]
        };
        body["to"] = other.clone();
    }
    let answer = client
        .send(reqwest::Method::POST, "/v1/messages", Body::Json(body))
        .await?;
    println!(
        "{} {}",
        answer["status"].as_str().unwrap_or("?"),
        answer["id"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub(crate) async fn react(
    client: &Client,
    id: &str,
    emoji: &str,
    remove: bool,
) -> anyhow::Result<()> {
    message(client, id).await?;
    let m = if remove {
        client
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/messages/{}/reactions/{}", encode(id), encode(emoji)),
                Body::None,
            )
            .await?
    } else {
        client
            .send(
                reqwest::Method::POST,
                &format!("/v1/messages/{}/reactions", encode(id)),
                Body::Json(serde_json::json!({ "emoji": emoji })),
            )
            .await?
    };
    let reactions: Vec<String> = m["reactions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            format!(
                "{} {}",
                r["emoji"].as_str().unwrap_or("?"),
                r["from"].as_array().map_or(0, Vec::len)
            )
        })
        .collect();
    println!(
        "reactions: {}",
        if reactions.is_empty() {
            "none".to_owned()
        } else {
            reactions.join("  ")
        }
    );
    Ok(())
}

pub(crate) async fn edit(client: &Client, id: &str, text: &str) -> anyhow::Result<()> {
    message(client, id).await?;
    let m = client
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/messages/{}", encode(id)),
            Body::Json(serde_json::json!({ "body": text })),
        )
        .await?;
    println!("edited {}", m["id"].as_str().unwrap_or("?"));
    Ok(())
}

pub(crate) async fn unsend(client: &Client, id: &str) -> anyhow::Result<()> {
    message(client, id).await?;
    client
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/messages/{}?for=everyone", encode(id)),
            Body::None,
        )
        .await?;
    println!("deleted {id} for everyone");
    Ok(())
}

pub(crate) async fn messages(client: &Client, with: &str, limit: usize) -> anyhow::Result<()> {
    let with = contact_id(client, with).await?;
    let list: Value = client
        .get(&format!(
            "/v1/messages?with={}&limit={limit}",
            encode(&with)
        ))
        .await?;
    let names = Names::load(client).await?;
    print_messages(&list, &names);
    Ok(())
}

/// A conversation's messages, one per line: id, time, sender, status and what it says
/// (a reply's quote, a file, a deleted message, reactions, "edited").
fn print_messages(list: &Value, names: &Names) {
    let messages = list["messages"].as_array().cloned().unwrap_or_default();
    let text_of = |id: &str| {
        messages
            .iter()
            .find(|m| m["id"] == id)
            .and_then(|m| m["body"].as_str())
            .map(|b| b.chars().take(30).collect::<String>())
    };
    for m in &messages {
        let mut what = match m["kind"].as_str() {
            Some("file") => format!(
                "[file] {} ({})",
                m["file"]["name"].as_str().unwrap_or("?"),
                size(m["file"]["size"].as_u64().unwrap_or(0))
            ),
            Some("system") => match m["system"]["timer"].as_u64() {
                Some(0) => "[disappearing messages off]".to_owned(),
                Some(secs) => format!("[messages disappear after {secs} s]"),
                None => format!("[{}]", m["system"]),
            },
            _ if m["deleted"] == true => "[deleted]".to_owned(),
            _ => m["body"].as_str().unwrap_or("").to_owned(),
        };
        if let Some(reply) = m["reply_to"].as_str() {
            let quoted = text_of(reply).unwrap_or_else(|| "an earlier message".into());
            what = format!("(re: {quoted:?}) {what}");
        }
        if m["edited_at"].is_string() && m["deleted"] != true {
            what.push_str("  (edited)");
        }
        let reactions: Vec<String> = m["reactions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{}{}",
                    r["emoji"].as_str().unwrap_or("?"),
                    r["from"].as_array().map_or(0, Vec::len)
                )
            })
            .collect();
        if !reactions.is_empty() {
            what.push_str(&format!("  [{}]", reactions.join(" ")));
        }
        println!(
            "{}  {}  {:<12}  {:<9}  {}",
            m["id"].as_str().unwrap_or("?"),
            m["sent_at"].as_str().unwrap_or("?"),
            names.user(m["from"].as_str().unwrap_or("?")),
            m["status"].as_str().unwrap_or("?"),
            what
        );
    }
}

/// A group's id: given as one, or the one group with this name.
async fn group_id(client: &Client, which: &str) -> anyhow::Result<String> {
    if crate::conversations::parse_group(which).is_some() {
        return Ok(which.to_owned());
    }
    let list: Value = client.get("/v1/groups").await?;
    let matches: Vec<&Value> = list["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|g| g["name"] == which)
        .collect();
    match matches.as_slice() {
        [one] => Ok(one["id"].as_str().unwrap_or_default().to_owned()),
        [] => anyhow::bail!("no group named {which:?} (see `volli groups`)"),
        _ => anyhow::bail!("several groups are named {which:?}; use the id"),
    }
}

fn print_group(g: &Value, names: &Names) {
    println!(
        "{}  {}  (epoch {})",
        g["name"].as_str().unwrap_or("?"),
        g["id"].as_str().unwrap_or("?"),
        g["epoch"]
    );
    for m in g["members"].as_array().into_iter().flatten() {
        let devices = m["devices"].as_array().map_or(0, Vec::len);
        let id = m["user_id"].as_str().unwrap_or("?");
        println!(
            "  {:<6}  {:<16}  {id}  {devices} device(s)",
            m["role"].as_str().unwrap_or("?"),
            names.user(id),
        );
    }
}

pub(crate) async fn groups(client: &Client) -> anyhow::Result<()> {
    let list: Value = client.get("/v1/groups").await?;
    let groups = list["groups"].as_array().cloned().unwrap_or_default();
    if groups.is_empty() {
        println!("no groups yet (create one with `volli groups create NAME --members …`)");
    }
    for g in &groups {
        println!(
            "{}  {:<24}  {} member(s)",
            g["id"].as_str().unwrap_or("?"),
            g["name"].as_str().unwrap_or("?"),
            g["members"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(())
}

pub(crate) async fn group_create(
    client: &Client,
    name: &str,
    members: &[&str],
) -> anyhow::Result<()> {
    let mut ids = Vec::with_capacity(members.len());
    for m in members {
        ids.push(contact_id(client, m).await?);
    }
    let g = client
        .send(
            reqwest::Method::POST,
            "/v1/groups",
            Body::Json(serde_json::json!({ "name": name, "members": ids })),
        )
        .await?;
    print_group(&g, &Names::load(client).await?);
    Ok(())
}

pub(crate) async fn group_show(client: &Client, group: &str) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let g: Value = client.get(&format!("/v1/groups/{id}")).await?;
    print_group(&g, &Names::load(client).await?);
    Ok(())
}

pub(crate) async fn group_add(client: &Client, group: &str, user: &str) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let user = contact_id(client, user).await?;
    let g = client
        .send(
            reqwest::Method::POST,
            &format!("/v1/groups/{id}/members"),
            Body::Json(serde_json::json!({ "user_id": user })),
        )
        .await?;
    print_group(&g, &Names::load(client).await?);
    Ok(())
}

/// Removes `user` from the group, or this user (leaves) without one.
pub(crate) async fn group_remove(
    client: &Client,
    group: &str,
    user: Option<&String>,
) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let user = match user {
        Some(u) => contact_id(client, u).await?,
        None => {
            let node: Value = client.get("/v1/node").await?;
            node["user_id"].as_str().unwrap_or_default().to_owned()
        }
    };
    let g = client
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/groups/{id}/members/{}", encode(&user)),
            Body::None,
        )
        .await?;
    print_group(&g, &Names::load(client).await?);
    Ok(())
}

pub(crate) async fn group_role(
    client: &Client,
    group: &str,
    user: &str,
    role: &str,
) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let user = contact_id(client, user).await?;
    let g = client
        .send(
            reqwest::Method::PUT,
            &format!("/v1/groups/{id}/members/{}", encode(&user)),
            Body::Json(serde_json::json!({ "role": role })),
        )
        .await?;
    print_group(&g, &Names::load(client).await?);
    Ok(())
}

pub(crate) async fn group_rename(client: &Client, group: &str, name: &str) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let g = client
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/groups/{id}"),
            Body::Json(serde_json::json!({ "name": name })),
        )
        .await?;
    print_group(&g, &Names::load(client).await?);
    Ok(())
}

pub(crate) async fn group_send(client: &Client, group: &str, text: &str) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let answer = client
        .send(
            reqwest::Method::POST,
            "/v1/messages",
            Body::Json(serde_json::json!({ "group": id, "body": text })),
        )
        .await?;
    println!(
        "{} {}",
        answer["status"].as_str().unwrap_or("?"),
        answer["id"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub(crate) async fn group_messages(
    client: &Client,
    group: &str,
    limit: usize,
) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    let names = Names::load(client).await?;
    let list: Value = client
        .get(&format!("/v1/messages?group={id}&limit={limit}"))
        .await?;
    print_messages(&list, &names);
    Ok(())
}

/// Bytes in a readable unit.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} kB", b / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} MB", b / 1e6),
        _ => format!("{:.2} GB", b / 1e9),
    }
}

fn print_transfer(t: &Value, names: &Names) {
    let peer = match t["group"].as_str() {
        Some(g) => names.group(g),
        None => names.user(t["peer"].as_str().unwrap_or("?")),
    };
    let via = via_names(t, names);
    println!(
        "{}  {:<8} {:<9} {:>10}  {}  {}{}{}",
        t["id"].as_str().unwrap_or("?"),
        t["direction"].as_str().unwrap_or("?"),
        t["state"].as_str().unwrap_or("?"),
        size(t["size"].as_u64().unwrap_or(0)),
        t["name"].as_str().unwrap_or("?"),
        peer,
        via.map(|v| format!("  (waiting at {v}'s node)"))
            .unwrap_or_default(),
        t["error"]
            .as_str()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default()
    );
}

/// The names of the friends holding transfer `t` for an offline recipient, if any.
fn via_names(t: &Value, names: &Names) -> Option<String> {
    let via: Vec<String> = t["via"]
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .map(|u| names.user(u))
        .collect();
    (!via.is_empty()).then(|| via.join(" and "))
}

/// `volli transfers`
pub(crate) async fn transfers(client: &Client) -> anyhow::Result<()> {
    let list: Value = client.get("/v1/transfers").await?;
    let all = list["transfers"].as_array().cloned().unwrap_or_default();
    if all.is_empty() {
        println!("no transfers");
    }
    let names = Names::load(client).await?;
    for t in &all {
        print_transfer(t, &names);
    }
    Ok(())
}

/// `volli transfers accept|decline|pause|resume|cancel ID`
pub(crate) async fn transfer_action(client: &Client, id: &str, action: &str) -> anyhow::Result<()> {
    let path = format!("/v1/transfers/{}/{action}", encode(id));
    let t = client
        .send(reqwest::Method::POST, &path, Body::None)
        .await?;
    print_transfer(&t, &Names::load(client).await?);
    Ok(())
}

/// `volli send-file CONTACT PATH`
pub(crate) async fn send_file(
    client: &Client,
    to: &str,
    path: &std::path::Path,
    upload: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let to = contact_id(client, to).await.or_else(|e| {
        // This user's own id is not a contact, but names its other devices.
        if crate::contacts::Contacts::parse_user(to).is_some() {
            Ok(to.to_owned())
        } else {
            Err(e)
        }
    })?;
    offer_file(client, ("to", &to), path, upload, wait).await
}

/// `volli groups send-file GROUP PATH`
pub(crate) async fn group_send_file(
    client: &Client,
    group: &str,
    path: &std::path::Path,
    upload: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let id = group_id(client, group).await?;
    offer_file(client, ("group", &id), path, upload, wait).await
}

/// Offers `path` to `target` (`("to", user)` or `("group", id)`), by path or uploaded.
async fn offer_file(
    client: &Client,
    (key, value): (&str, &str),
    path: &std::path::Path,
    upload: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let t = if upload {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("{} has no usable file name", path.display()))?;
        let file = tokio::fs::File::open(path)
            .await
            .with_context(|| format!("cannot read {}", path.display()))?;
        let len = file.metadata().await?.len();
        let url = format!(
            "/v1/transfers?{key}={}&name={}",
            encode(value),
            encode(name)
        );
        eprintln!("uploading {} ({})…", path.display(), size(len));
        client
            .send(reqwest::Method::POST, &url, Body::File(file, len))
            .await?
    } else {
        let absolute = std::fs::canonicalize(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        eprintln!("encrypting and hashing {}…", absolute.display());
        client
            .send(
                reqwest::Method::POST,
                "/v1/transfers",
                Body::Json(serde_json::json!({key: value, "path": absolute.to_string_lossy()})),
            )
            .await?
    };
    let id = t["id"].as_str().unwrap_or_default().to_owned();
    println!("{id}");
    if wait {
        follow(client, &id).await?;
    }
    Ok(())
}

/// Follows a transfer with a progress line until it ends.
pub(crate) async fn follow(client: &Client, id: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let path = format!("/v1/transfers/{}", encode(id));
    let names = Names::load(client).await?;
    let mut samples: std::collections::VecDeque<(std::time::Instant, u64)> =
        std::collections::VecDeque::new();
    loop {
        let t: Value = client.get(&path).await?;
        let state = t["state"].as_str().unwrap_or("?").to_owned();
        let done = t["bytes_done"].as_u64().unwrap_or(0);
        let total = t["size"].as_u64().unwrap_or(0);
        let now = std::time::Instant::now();
        samples.push_back((now, done));
        while samples.len() > 2 && now.duration_since(samples[0].0).as_secs_f64() > 5.0 {
            samples.pop_front();
        }
        let (t0, d0) = samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let rate = if secs > 0.0 {
            (done - d0.min(done)) as f64 / secs
        } else {
            0.0
        };
        let line = match state.as_str() {
            "offered" if let Some(v) = via_names(&t, &names) => format!(
                "{} is away: the file waits at {v}'s node until they are back…",
                names.user(t["peer"].as_str().unwrap_or("?"))
            ),
            "offered" => format!(
                "waiting for {} to accept…",
                match t["group"].as_str() {
                    Some(g) => format!("the members of {}", names.group(g)),
                    None => names.user(t["peer"].as_str().unwrap_or("?")),
                }
            ),
            "paused" => format!(
                "paused ({}) at {} of {}",
                t["paused_by"].as_str().unwrap_or("?"),
                size(done),
                size(total)
            ),
            _ => {
                let pct = if total > 0 {
                    done as f64 * 100.0 / total as f64
                } else {
                    100.0
                };
                let eta = if rate > 0.0 {
                    format!("ETA {:.0} s", (total - done.min(total)) as f64 / rate)
                } else {
                    "ETA ?".into()
                };
                format!(
                    "{} / {} ({pct:.0} %)  {}/s  {eta}",
                    size(done),
                    size(total),
                    size(rate as u64)
                )
            }
        };
        eprint!("\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
        match state.as_str() {
            "completed" => {
                eprintln!();
                println!("completed, BLAKE3 {}", t["blake3"].as_str().unwrap_or("?"));
                return Ok(());
            }
            "failed" | "declined" | "cancelled" => {
                eprintln!();
                bail!(
                    "the transfer was {state}{}",
                    t["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
        }
    }
}

/// `volli transfers save ID PATH`
pub(crate) async fn save(
    client: &Client,
    id: &str,
    path: &std::path::Path,
    overwrite: bool,
) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let t: Value = client.get(&format!("/v1/transfers/{}", encode(id))).await?;
    // The name comes from the sender: only ever a plain file name, and never one that is
    // there already (a `.bashrc` sent into the home directory is saved beside it).
    let sent_name = t["name"]
        .as_str()
        .map(std::path::Path::new)
        .and_then(std::path::Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_owned();
    let (dir, wanted) = if path.is_dir() {
        (path.to_owned(), None)
    } else {
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."))
            .to_owned();
        if path.exists() && !overwrite {
            bail!(
                "{} exists already; pass --overwrite to replace it",
                path.display()
            );
        }
        (dir, Some(path.to_owned()))
    };
    let url = format!("{}/v1/transfers/{}/content", client.base(), encode(id));
    let mut response = client
        .http
        .get(&url)
        .bearer_auth(&client.token)
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        bail!(
            "the node answered {status}: {} ({})",
            body["error"]["message"].as_str().unwrap_or(""),
            body["error"]["code"].as_str().unwrap_or("unknown")
        );
    }
    // A new file of our own beside the target: never one that exists, nor a symlink
    // someone placed there.
    let mut random = [0u8; 8];
    getrandom::fill(&mut random)?;
    let tmp = dir.join(format!(
        ".{sent_name}.{}.part",
        volli_core::transfer::hex(&random)
    ));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut hasher = blake3::Hasher::new();
    let written: anyhow::Result<()> = async {
        while let Some(chunk) = response.chunk().await? {
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        Ok(())
    }
    .await;
    drop(file);
    let hash = hasher.finalize().to_hex().to_string();
    if let Err(e) = written {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
    }
    if Some(hash.as_str()) != t["blake3"].as_str() {
        let _ = tokio::fs::remove_file(&tmp).await;
        bail!("the saved file's BLAKE3 hash does not match the transfer's; nothing was kept");
    }
    let target = match wanted {
        Some(target) if overwrite => {
            tokio::fs::rename(&tmp, &target).await?;
            target
        }
        // A hard link, unlike a rename, fails rather than replace a file that appeared in
        // the meantime.
        Some(target) => {
            let linked = tokio::fs::hard_link(&tmp, &target).await;
            let _ = tokio::fs::remove_file(&tmp).await;
            linked.with_context(|| format!("cannot save as {}", target.display()))?;
            target
        }
        None => {
            let mut saved = None;
            for n in 0..1000 {
                let candidate = dir.join(numbered(&sent_name, n));
                match tokio::fs::hard_link(&tmp, &candidate).await {
                    Ok(()) => {
                        saved = Some(candidate);
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => {
                        let _ = tokio::fs::remove_file(&tmp).await;
                        return Err(e)
                            .with_context(|| format!("cannot save into {}", dir.display()));
                    }
                }
            }
            let _ = tokio::fs::remove_file(&tmp).await;
            saved.ok_or_else(|| {
                anyhow::anyhow!("no free name for {sent_name} in {}", dir.display())
            })?
        }
    };
    println!("saved {} (BLAKE3 {hash})", target.display());
    Ok(())
}

/// `name`, or for `n > 0` `name (n)` with the extension kept: `photo (2).jpg`.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() => format!("{stem} ({n}).{ext}"),
        _ => format!("{name} ({n})"),
    }
}
