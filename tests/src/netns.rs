//! A small LAN made of network namespaces: a bridge in the root namespace, and one namespace
//! per host with a veth pair onto the bridge. Needs root and `ip` (iproute2). Torn down on
//! drop.

use std::process::Command;

/// Whether this process can build namespaces; when not, the test must be skipped explicitly
/// with `VOLLI_SKIP_NETNS=1` rather than passing silently.
pub fn available() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    root && Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A bridge and hosts attached to it.
pub struct Lan {
    id: u32,
    bridge: String,
    hosts: Vec<String>,
    /// Each host's interface inside its namespace.
    inner: Vec<String>,
    subnet: String,
}

impl Lan {
    /// Creates the bridge, with address `<subnet>.1/24`.
    pub fn new() -> Self {
        // Several LANs in one process each get their own bridge and subnet.
        static MADE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = (std::process::id() + 3_331 * made) % 10_000;
        let bridge = format!("vbr{id}");
        let subnet = format!("10.{}.{}", 200 + (id / 250) % 50, id % 250);
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{subnet}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        Self {
            id,
            bridge,
            hosts: Vec::new(),
            inner: Vec::new(),
            subnet,
        }
    }

    /// Adds a host; returns its namespace name and IPv4 address.
    pub fn host(&mut self) -> (String, String) {
        let n = self.hosts.len() + 2;
        let ns = format!("vns{}h{n}", self.id);
        let outer = format!("vo{}h{n}", self.id);
        let inner = format!("vi{}h{n}", self.id);
        let addr = format!("{}.{n}", self.subnet);
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        self.inner.push(inner.clone());
        ip(&[
            "link", "add", &outer, "type", "veth", "peer", "name", &inner,
        ]);
        ip(&["link", "set", &inner, "netns", &ns]);
        ip(&["link", "set", &outer, "master", &self.bridge]);
        ip(&["link", "set", &outer, "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            &inner,
        ]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", &inner, "up"]);
        ip(&["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        ip(&[
            "netns",
            "exec",
            &ns,
            "ip",
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            &inner,
        ]);
        (ns, addr)
    }
}

impl Lan {
    /// Limits what host `ns` sends to `mbit` megabits per second (a token bucket on its
    /// interface, as a slower link would).
    pub fn limit_rate(&self, ns: &str, mbit: u32) {
        let i = self
            .hosts
            .iter()
            .position(|h| h == ns)
            .expect("a host of this LAN");
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "tc", "qdisc", "replace", "dev"])
            .arg(&self.inner[i])
            .args([
                "root",
                "tbf",
                "rate",
                &format!("{mbit}mbit"),
                "burst",
                "256kb",
                "latency",
                "50ms",
            ])
            .output()
            .expect("tc runs");
        assert!(
            out.status.success(),
            "tc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Whether nftables is here to cut links between namespaces.
pub fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Drops every packet between the hosts at `a` and `b` (in both namespaces), leaving their
/// links to the bridge, and so to the test, as they are: a real partition.
pub fn partition(ns_a: &str, addr_a: &str, ns_b: &str, addr_b: &str) {
    for (ns, other) in [(ns_a, addr_b), (ns_b, addr_a)] {
        let rules = format!(
            "table inet partition {{\n chain input {{ type filter hook input priority 0; ip saddr {other} drop; }}\n              chain output {{ type filter hook output priority 0; ip daddr {other} drop; }}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("nft runs");
        {
            use std::io::Write as _;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(rules.as_bytes())
                .unwrap();
        }
        assert!(child.wait().unwrap().success(), "nft rules in {ns}");
    }
}

/// Undoes [`partition`].
pub fn heal(ns_a: &str, ns_b: &str) {
    for ns in [ns_a, ns_b] {
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "nft",
                "delete",
                "table",
                "inet",
                "partition",
            ])
            .output();
    }
}

impl Default for Lan {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
