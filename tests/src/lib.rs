//! End-to-end harness: starts real `volli` processes, as a user would, and drives them
//! through the public API.
//!
//! The binary is `$VOLLI_BIN` if set, else `volli` next to the test executable's `deps/`
//! directory, brought up to date with `cargo build` on first use.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod hostile;
pub mod nat;
pub mod netns;

/// Path to the `volli` binary under test.
pub fn volli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("VOLLI_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap();
        let dir = if dir.ends_with("deps") {
            dir.parent().unwrap()
        } else {
            dir
        };
        let bin = dir.join("volli");
        // Make sure the binary matches the sources even when only this crate's tests were
        // asked for (cargo builds it for the workspace's tests, not for this package's).
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "-p", "volli-node", "--bin", "volli"]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build
            .env("CARGO_TARGET_DIR", dir.parent().unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "building the volli binary failed");
        assert!(bin.exists(), "no volli binary at {}", bin.display());
        bin
    })
    .clone()
}

/// The compile cache shared by every test node (and the other crates' tests), so each
/// plugin compiles once per build rather than once per node.
pub fn plugin_cache() -> PathBuf {
    target_dir().join("tmp").join("plugin-cache")
}

/// The cargo target directory the tests were built in.
pub fn target_dir() -> PathBuf {
    volli_bin()
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// Root of the repository.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `volli ARGS` to completion (a client command) and returns its output.
pub fn volli(args: &[&str]) -> Output {
    Command::new(volli_bin())
        .args(args)
        .env_remove("VOLLI_API")
        .env_remove("VOLLI_TOKEN")
        .output()
        .unwrap()
}

/// A `volli serve` process with its own data dir.
pub struct Node {
    child: Option<Child>,
    /// The node's data dir.
    pub data_dir: PathBuf,
    /// Its API base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// Its admin token.
    pub token: String,
    log: PathBuf,
    http: reqwest::Client,
}

/// Options for starting a node.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Another node binary than [`volli_bin`] (a previous release's).
    pub bin: Option<PathBuf>,
    /// Extra command-line arguments after `serve`.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// TOML appended to the test configuration (which turns the LAN off: tests must not
    /// send multicast to the host's network).
    pub config: String,
    /// Run inside this network namespace (`ip netns exec`).
    pub netns: Option<String>,
    /// API listen address instead of 127.0.0.1:0.
    pub api_listen: Option<String>,
    /// libp2p listen address instead of /ip4/127.0.0.1/tcp/0; empty: none given, the node's
    /// defaults (in a namespace of the test's own: they take fixed ports).
    pub p2p_listen: Option<String>,
    /// A PEM certificate the test's HTTP client trusts (for a node serving TLS).
    pub tls_root: Option<String>,
}

impl Node {
    /// Starts a node in `data_dir` with an API on a free loopback port and waits for `/health`.
    pub async fn start(data_dir: &Path) -> Node {
        Self::start_with(data_dir, Options::default()).await
    }

    /// Like [`Node::start`] with extra arguments and environment.
    pub async fn start_with(data_dir: &Path, options: Options) -> Node {
        let mut node = Self::spawn(data_dir, &options);
        node.wait_ready().await;
        node
    }

    /// Spawns the process without waiting for it to be ready.
    pub fn spawn(data_dir: &Path, options: &Options) -> Node {
        std::fs::create_dir_all(data_dir).unwrap();
        let _ = std::fs::remove_file(data_dir.join("api.url"));
        let log = data_dir.with_extension("log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let config = data_dir.with_extension("toml");
        let base = if options.config.contains("[network]") {
            ""
        } else {
            "[network]\nlan = false\n"
        };
        std::fs::write(&config, format!("{base}{}\n", options.config)).unwrap();
        let bin = options.bin.clone().unwrap_or_else(volli_bin);
        let mut command = match &options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--api-listen",
                options.api_listen.as_deref().unwrap_or("127.0.0.1:0"),
            ])
            .args(
                match options.p2p_listen.as_deref() {
                    Some("") => None,
                    listen => Some(["--p2p-listen", listen.unwrap_or("/ip4/127.0.0.1/tcp/0")]),
                }
                .into_iter()
                .flatten(),
            )
            .args(&options.args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,loro_internal=warn".into()),
            )
            .env("VOLLI_LOG_FORMAT", "compact")
            .env("VOLLI_PLUGINS_CACHE_DIR", plugin_cache())
            // The test's own environment last: it wins over the defaults above.
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        Node {
            child: Some(child),
            data_dir: data_dir.to_owned(),
            url: String::new(),
            token: String::new(),
            log,
            http: match &options.tls_root {
                Some(pem) => reqwest::Client::builder()
                    .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
                    .build()
                    .unwrap(),
                None => reqwest::Client::new(),
            },
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Resident memory of the process in MiB (Linux), while it runs.
    pub fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits until the node answers `/health` (after [`Node::spawn`]).
    pub async fn wait_until_ready(&mut self) {
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("volli exited early with {status}; log:\n{}", self.log());
            }
            if let Ok(url) = std::fs::read_to_string(self.data_dir.join("api.url")) {
                let url = url.trim().to_owned();
                if let Ok(r) = self.http.get(format!("{url}/health")).send().await
                    && r.status().is_success()
                {
                    self.url = url;
                    self.token = std::fs::read_to_string(self.data_dir.join("admin.token"))
                        .unwrap()
                        .trim()
                        .to_owned();
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node not ready after 60 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` with the token; returns status and JSON body (Null if empty).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(reqwest::Method::GET, path, None).await
    }

    /// A request with the token and an optional JSON body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.request_as(&self.token, method, path, body).await
    }

    /// A request with `token` (a client's, say) and an optional JSON body.
    pub async fn request_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        // A node that restarts in place (after joining another user as a device) closes its
        // idle connections; a GET that raced with that close is safe to repeat.
        let mut attempts = 0;
        let r = loop {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.url))
                .bearer_auth(token);
            if let Some(body) = &body {
                req = req.json(body);
            }
            match req.send().await {
                Ok(r) => break r,
                Err(e) if method == reqwest::Method::GET && attempts < 20 => {
                    attempts += 1;
                    eprintln!("GET {path} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("{method} {path}: {e}"),
            }
        };
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    /// `GET path` without credentials.
    pub async fn get_anonymous(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// This node's user id and peer id.
    pub async fn ids(&self) -> (String, String) {
        let (_, node) = self.get("/v1/node").await;
        (
            node["user_id"].as_str().unwrap().to_owned(),
            node["peer_id"].as_str().unwrap().to_owned(),
        )
    }

    /// Its first listen address with `/p2p/<peer id>` appended.
    pub async fn p2p_addr(&self) -> String {
        let (_, node) = self.get("/v1/node").await;
        let addr = node["listen_addrs"][0]
            .as_str()
            .expect("a listen address")
            .to_owned();
        format!("{addr}/p2p/{}", node["peer_id"].as_str().unwrap())
    }

    /// Polls `GET path` until `check` holds (or panics after `timeout`); returns the body.
    pub async fn wait_for(
        &self,
        path: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (_, body) = self.get(path).await;
            if check(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}; last: {body}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("node already stopped");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "node did not stop within 30 s of SIGTERM; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit on its own; its status, or `None` if it
    /// still runs.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut()?.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port free on loopback right now (for a node that must restart on the same address).
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux): a port the kernel handed
/// out and took back could go to any other test's `tcp/0` listener or outgoing connection
/// before this test's node binds it. Picked at random, so parallel tests do not pick alike, and
/// never twice in one test (nodes started at once would otherwise race for one port).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    const FIRST: u64 = 20_000;
    const COUNT: u64 = 12_000;
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let start = hasher.finish();
    (0..COUNT)
        .map(|i| (FIRST + (start.wrapping_add(i)) % COUNT) as u16)
        .find(|&port| {
            !given.contains(&port)
                && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        })
        .inspect(|&port| given.push(port))
        .expect("a free port below the ephemeral range")
}

/// Options for a node listening for peers on a fixed loopback port.
pub fn on_port(port: u16) -> Options {
    Options {
        p2p_listen: Some(format!("/ip4/127.0.0.1/tcp/{port}")),
        ..Options::default()
    }
}

/// The node's event stream (JSON frames).
pub async fn events(node: &Node) -> impl futures::Stream<Item = Value> + Unpin + use<> {
    events_as(node, &node.token).await
}

/// The node's event stream (JSON frames) opened with `token`.
pub async fn events_as(
    node: &Node,
    token: &str,
) -> impl futures::Stream<Item = Value> + Unpin + use<> {
    use futures::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("{}/v1/events", node.url.replace("http://", "ws://"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    Box::pin(ws.filter_map(|m| async move {
        match m {
            Ok(Message::Text(t)) => serde_json::from_str(&t).ok(),
            _ => None,
        }
    }))
}

/// The next event of type `kind` within `within`, matching `check`.
pub async fn next_event(
    events: &mut (impl futures::Stream<Item = Value> + Unpin),
    kind: &str,
    within: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    use futures::StreamExt as _;
    tokio::time::timeout(within, async {
        loop {
            let e = events.next().await.expect("event stream open");
            if e["type"] == kind && check(&e) {
                return e;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no matching {kind} event within {within:?}"))
}

/// Makes `a` and `b` mutual contacts through an invite from `a`.
pub async fn befriend(a: &Node, b: &Node) {
    let (status, body) = a.post("/v1/invites", serde_json::json!({})).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = b
        .post("/v1/contacts", serde_json::json!({"invite": body["link"]}))
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Waits (20 s at most) until `sender` holds a contact card of `recipient` that names
/// `relay` among its relays: the recipient designated it and told its contacts.
pub async fn wait_until_relay_of(sender: &Node, recipient: &str, relay: &str) {
    sender
        .wait_for(
            &format!("/v1/contacts/{recipient}"),
            Duration::from_secs(20),
            |c| {
                c["relays"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|id| id == relay))
            },
        )
        .await;
}

/// Sends `body` from `from` to user `to` through `POST /v1/messages`; returns the message id.
pub async fn send(from: &Node, to: &str, body: &str) -> String {
    let (status, answer) = from
        .post("/v1/messages", serde_json::json!({"to": to, "body": body}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["status"], "queued");
    answer["id"].as_str().unwrap().to_owned()
}

/// The conversation of `node`'s user with user `with` (up to 500 messages, oldest first).
pub async fn conversation(node: &Node, with: &str) -> Vec<Value> {
    let (status, body) = node
        .get(&format!("/v1/messages?with={with}&limit=500"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["messages"].as_array().unwrap().clone()
}

/// Pairs `new` with `existing` through the API (a link), approves, and waits until `new`
/// has restarted as the user's device. Returns the new device's peer id.
pub async fn pair(existing: &Node, new: &Node, permissions: Option<Vec<&str>>) -> String {
    let mut body = serde_json::json!({});
    if let Some(p) = permissions {
        body["permissions"] = serde_json::json!(p);
    }
    let (status, offer) = existing.post("/v1/pairing", body).await;
    assert_eq!(status, 201, "{offer}");
    let mut existing_events = events(existing).await;
    let mut new_events = events(new).await;
    let (status, joining) = new
        .post(
            "/v1/pairing/join",
            serde_json::json!({"link": offer["link"], "device_name": "second"}),
        )
        .await;
    assert_eq!(status, 202, "{joining}");
    assert_eq!(joining["state"], "waiting_approval");
    let request = next_event(
        &mut existing_events,
        "pairing.request",
        Duration::from_secs(10),
        |_| true,
    )
    .await;
    assert_eq!(
        request["check_code"], joining["check_code"],
        "both show the same code"
    );
    let (_, new_peer) = new.ids().await;
    assert_eq!(request["peer_id"], new_peer.as_str());
    let (status, decided) = existing
        .post(
            &format!("/v1/pairing/{}/approve", offer["id"].as_str().unwrap()),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{decided}");
    assert_eq!(decided["state"], "approved");
    next_event(
        &mut new_events,
        "pairing.completed",
        Duration::from_secs(20),
        |_| true,
    )
    .await;
    let (user, _) = existing.ids().await;
    new.wait_for("/v1/node", Duration::from_secs(30), |n| {
        n["user_id"] == user.as_str()
    })
    .await;
    new_peer
}
