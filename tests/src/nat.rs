//! A small internet of network namespaces: a bridge in the root namespace as the WAN, hosts
//! on it with public addresses, and homes behind routers that translate addresses with
//! nftables `masquerade` (port-preserving, or `random`), optionally with a UPnP daemon.
//! Needs root, `ip` and `nft`. Torn down on drop.
//!
//! ```text
//!   root ns ── bridge (WAN, 11.x.y.0/24) ──┬── public host (<wan>.2..)
//!       │                                 └── router k (<wan>.(100+k)) ── home k (192.168.k.2)
//!       └── management link per home (10.<m>.<k>.1/30 ↔ .2/30): the test reaches the
//!           home node's API there, and nothing else passes on it.
//! ```
//!
//! Home nodes listen for peers on their LAN address only; the "internet" is the one /24, so
//! nothing ever leaves the machine.
//!
//! [`Internet::delay`] puts a home's router a few milliseconds from the rest of the WAN (a
//! provider namespace between them, whose routing passes every packet through a delay line
//! on a tun device: `delay_line.py`, run with `python3`).
//!
//! [`Internet::with_ipv6`] adds IPv6 beside it, without translation: the WAN is
//! `2001:db8:<id>::/64`, home k's LAN `2001:db8:<id>:k::/64` routed through its router,
//! which lets out what the home starts and drops what arrives unasked, as home routers do.

use std::process::Command;

/// How a home's router maps addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// `masquerade`: keeps the source port when it can, as most home routers do (hole
    /// punching works).
    PortPreserving,
    /// `masquerade random`: a random port for every new mapping (hole punching fails).
    Random,
    /// Port-preserving, with a UPnP IGD / NAT-PMP daemon (`miniupnpd`) that forwards ports
    /// on request.
    Upnp,
}

/// What a router does with a packet that arrives unasked at its WAN address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stray {
    /// Drops it silently (`iifname "wan0" ct state new drop`).
    Drop,
    /// Rejects it with a filter rule, as OpenWrt's wan zone does by default: TCP RST, ICMP
    /// port unreachable. The rejected packet leaves no connection-tracking entry behind.
    Reject,
    /// Has no input filter: the kernel answers it (TCP RST, ICMP port unreachable) as a
    /// closed port — the sender sees what [`Stray::Reject`] sends, but the router's
    /// connection tracking keeps an entry for the packet it answered, which takes that
    /// pair of addresses and ports from its own side's later packets for a while.
    Open,
}

/// A home router: how it maps ports and what it does with stray packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Router {
    /// Port-preserving or random ([`Nat::Upnp`] is not a choice here).
    pub nat: Nat,
    /// Drop or reject.
    pub stray: Stray,
}

impl Router {
    /// A short name for tables: `drop/pp`, `reject/random`.
    pub fn name(&self) -> String {
        format!(
            "{}/{}",
            match self.stray {
                Stray::Drop => "drop",
                Stray::Reject => "reject",
                Stray::Open => "open",
            },
            match self.nat {
                Nat::Random => "random",
                _ => "pp",
            }
        )
    }
}

/// A carrier-grade NAT: a router between the WAN and the homes behind it, whose inside is
/// `100.64.<c>.0/24` (RFC 6598 shared address space).
#[derive(Clone, Debug)]
pub struct Carrier {
    ns: String,
    inside: String,
    index: u32,
}

/// A host on the internet: its namespace and addresses.
#[derive(Clone, Debug)]
pub struct Host {
    /// Its network namespace.
    pub ns: String,
    /// The address it listens for peers on.
    pub addr: String,
    /// The address its API listens on (reachable from the test).
    pub api: String,
    /// Its router's namespace and WAN address, for a home.
    pub router: Option<(String, String)>,
    /// Its global IPv6 address, on an internet with IPv6.
    pub addr6: Option<String>,
}

/// The WAN and everything attached to it.
pub struct Internet {
    id: u32,
    bridge: String,
    wan: String,
    namespaces: Vec<String>,
    links: Vec<String>,
    daemons: Vec<std::process::Child>,
    /// The daemons' configuration and log directories, removed with the internet.
    dirs: Vec<std::path::PathBuf>,
    hosts: u32,
    homes: u32,
    /// The IPv6 prefix (`2001:db8:<id>`), on an internet with IPv6.
    v6: Option<String>,
    /// IPv6 routes every namespace on the WAN has: a home's prefix and its router.
    v6_routes: Vec<(String, String)>,
    /// Namespaces on the WAN (public hosts and routers), which learn each home's route.
    on_wan: Vec<String>,
    /// Carrier NATs made so far.
    carriers: u32,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn in_ns(ns: &str, program: &str, args: &[&str]) {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all);
}

fn nft(ns: &str, rules: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft runs");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), rules.as_bytes())
        .expect("rules written");
    let out = child.wait_with_output().expect("nft finishes");
    assert!(
        out.status.success(),
        "nft: {}\n{rules}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Internet {
    /// The WAN bridge, with `<wan>.1/24` in the root namespace.
    pub fn new() -> Self {
        let id = std::process::id() % 10_000;
        // A routable-looking prefix, as real WAN addresses are (UPnP and AutoNAT treat
        // private ranges differently); only the one /24, on a bridge of this machine.
        let wan = format!("11.{}.{}", 150 + (id / 250) % 50, id % 250);
        Self::on(id, wan)
    }

    /// An "internet" in a private range (`10.<200..249>.x.0/24`), as a company or campus
    /// network, or a carrier's inside, is: AutoNAT counts no address in it as public.
    pub fn private_range() -> Self {
        let id = std::process::id() % 10_000;
        Self::on(id, format!("10.{}.{}", 200 + (id / 250) % 50, id % 250))
    }

    fn on(id: u32, wan: String) -> Self {
        let bridge = format!("wan{id}");
        let _ = Command::new("ip").args(["link", "del", &bridge]).output();
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{wan}.1/24"), "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        Self {
            id,
            bridge,
            wan,
            namespaces: Vec::new(),
            links: Vec::new(),
            daemons: Vec::new(),
            dirs: Vec::new(),
            hosts: 0,
            homes: 0,
            v6: None,
            v6_routes: Vec::new(),
            on_wan: Vec::new(),
            carriers: 0,
        }
    }

    /// A carrier-grade NAT on the WAN (at `<wan>.(200+c)`), mapping ports as `nat` says;
    /// homes go behind it with [`Internet::home_behind_carrier`].
    pub fn carrier(&mut self, nat: Nat) -> Carrier {
        self.carriers += 1;
        let c = self.carriers;
        let ns = self.namespace(format!("inet{}c{c}", self.id));
        self.veth(&format!("ic{}w{c}", self.id), "wan0", &ns, true);
        in_ns(
            &ns,
            "ip",
            &[
                "addr",
                "add",
                &format!("{}.{}/24", self.wan, 200 + c),
                "dev",
                "wan0",
            ],
        );
        in_ns(&ns, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        let random = if nat == Nat::Random { " random" } else { "" };
        // A carrier's NAT answers nothing that arrives unasked at its address.
        nft(
            &ns,
            &format!(
                "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority 100;\n    oifname \"wan0\" masquerade{random}\n  }}\n}}\n\
                 table ip filter {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    iifname \"wan0\" ct state new drop\n  }}\n}}\n"
            ),
        );
        Carrier {
            ns,
            inside: format!("100.64.{c}"),
            index: c,
        }
    }

    /// A home behind `router`, itself behind the carrier NAT `carrier` (double NAT).
    pub fn home_behind_carrier(&mut self, carrier: &Carrier, router: Router) -> Host {
        self.home_at(router, Some(carrier))
    }

    /// A home behind `router` (see [`Internet::home`]).
    pub fn home_behind(&mut self, router: Router) -> Host {
        self.home_at(router, None)
    }

    /// The same, with IPv6 beside IPv4 (global addresses, no translation).
    pub fn with_ipv6() -> Self {
        let mut net = Self::new();
        net.v6 = Some(format!("2001:db8:{:x}", net.id));
        net
    }

    /// Gives `ns` the IPv6 address `addr/64` on `dev`, usable at once (no duplicate address
    /// detection on these links).
    fn addr6(ns: &str, addr: &str, dev: &str) {
        in_ns(
            ns,
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                dev,
                "nodad",
            ],
        );
    }

    /// A namespace joined the WAN: it learns the homes' routes.
    fn joined_wan(&mut self, ns: &str) {
        for (prefix, via) in &self.v6_routes {
            in_ns(ns, "ip", &["-6", "route", "add", prefix, "via", via]);
        }
        self.on_wan.push(ns.to_owned());
    }
    fn namespace(&mut self, name: String) -> String {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(&["netns", "add", &name]);
        in_ns(&name, "ip", &["link", "set", "lo", "up"]);
        self.namespaces.push(name.clone());
        name
    }

    /// A veth pair: `outer` in the root namespace (on the bridge when `bridged`), `inner`
    /// in `ns`.
    fn veth(&mut self, outer: &str, inner: &str, ns: &str, bridged: bool) {
        let _ = Command::new("ip").args(["link", "del", outer]).output();
        // The inner end is made inside `ns` at once: a common name such as `wan0` never
        // exists in the root namespace, where tests running side by side would collide on it.
        ip(&[
            "link", "add", outer, "type", "veth", "peer", "name", inner, "netns", ns,
        ]);
        if bridged {
            ip(&["link", "set", outer, "master", &self.bridge]);
        }
        ip(&["link", "set", outer, "up"]);
        in_ns(ns, "ip", &["link", "set", inner, "up"]);
        self.links.push(outer.to_owned());
    }

    /// A host with a public address on the WAN.
    pub fn public_host(&mut self) -> Host {
        self.hosts += 1;
        let n = self.hosts + 1;
        let ns = self.namespace(format!("inet{}p{n}", self.id));
        let (outer, inner) = (format!("ip{}p{n}", self.id), "wan0".to_owned());
        self.veth(&outer, &inner, &ns, true);
        let addr = format!("{}.{n}", self.wan);
        in_ns(
            &ns,
            "ip",
            &["addr", "add", &format!("{addr}/24"), "dev", &inner],
        );
        let addr6 = self.v6.clone().map(|p| {
            let a = format!("{p}::{n:x}");
            Self::addr6(&ns, &a, &inner);
            a
        });
        if self.v6.is_some() {
            self.joined_wan(&ns);
        }
        Host {
            ns,
            api: addr.clone(),
            addr,
            router: None,
            addr6,
        }
    }

    /// A home behind a router of kind `nat`: returns the home host (its LAN address is the
    /// one it listens on; the router's WAN address is what the internet sees).
    pub fn home(&mut self, nat: Nat) -> Host {
        self.home_at(
            Router {
                nat,
                stray: Stray::Drop,
            },
            None,
        )
    }

    fn home_at(&mut self, kind: Router, carrier: Option<&Carrier>) -> Host {
        let nat = kind.nat;
        self.homes += 1;
        let k = self.homes;
        let router = self.namespace(format!("inet{}r{k}", self.id));
        let home = self.namespace(format!("inet{}h{k}", self.id));
        // The router's WAN side: on the WAN, or inside a carrier's NAT.
        let wan_addr = match carrier {
            None => {
                let wan_addr = format!("{}.{}", self.wan, 100 + k);
                self.veth(&format!("ir{}w{k}", self.id), "wan0", &router, true);
                in_ns(
                    &router,
                    "ip",
                    &["addr", "add", &format!("{wan_addr}/24"), "dev", "wan0"],
                );
                wan_addr
            }
            Some(carrier) => {
                let wan_addr = format!("{}.{}", carrier.inside, 2 + k);
                let (outer, inner) = (format!("ic{}c{k}", self.id), format!("ih{}c{k}", self.id));
                let _ = Command::new("ip").args(["link", "del", &outer]).output();
                ip(&[
                    "link", "add", &outer, "type", "veth", "peer", "name", &inner,
                ]);
                ip(&["link", "set", &outer, "netns", &carrier.ns]);
                ip(&["link", "set", &inner, "netns", &router]);
                let port = format!("in{k}");
                in_ns(&carrier.ns, "ip", &["link", "set", &outer, "name", &port]);
                in_ns(&router, "ip", &["link", "set", &inner, "name", "wan0"]);
                in_ns(
                    &carrier.ns,
                    "ip",
                    &[
                        "addr",
                        "add",
                        &format!("{}.1/32", carrier.inside),
                        "dev",
                        &port,
                    ],
                );
                in_ns(&carrier.ns, "ip", &["link", "set", &port, "up"]);
                in_ns(
                    &carrier.ns,
                    "ip",
                    &["route", "add", &format!("{wan_addr}/32"), "dev", &port],
                );
                in_ns(
                    &router,
                    "ip",
                    &["addr", "add", &format!("{wan_addr}/32"), "dev", "wan0"],
                );
                in_ns(&router, "ip", &["link", "set", "wan0", "up"]);
                in_ns(
                    &router,
                    "ip",
                    &[
                        "route",
                        "add",
                        &format!("{}.1", carrier.inside),
                        "dev",
                        "wan0",
                    ],
                );
                in_ns(
                    &router,
                    "ip",
                    &[
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{}.1", carrier.inside),
                    ],
                );
                let _ = carrier.index;
                wan_addr
            }
        };
        // The home's LAN: a veth pair between router and home, not through the root. Like a
        // home router, it forwards what its LAN starts and the answers to that, and drops
        // anything else that arrives from the WAN (no RST, no service of its own).
        let (lan_r, lan_h) = (format!("ir{}l{k}", self.id), format!("ih{}l{k}", self.id));
        let _ = Command::new("ip").args(["link", "del", &lan_r]).output();
        ip(&[
            "link", "add", &lan_r, "type", "veth", "peer", "name", &lan_h,
        ]);
        ip(&["link", "set", &lan_r, "netns", &router]);
        ip(&["link", "set", &lan_h, "netns", &home]);
        in_ns(&router, "ip", &["link", "set", &lan_r, "name", "lan0"]);
        in_ns(&home, "ip", &["link", "set", &lan_h, "name", "lan0"]);
        in_ns(
            &router,
            "ip",
            &["addr", "add", &format!("192.168.{k}.1/24"), "dev", "lan0"],
        );
        in_ns(&router, "ip", &["link", "set", "lan0", "up"]);
        let lan_addr = format!("192.168.{k}.2");
        in_ns(
            &home,
            "ip",
            &["addr", "add", &format!("{lan_addr}/24"), "dev", "lan0"],
        );
        in_ns(&home, "ip", &["link", "set", "lan0", "up"]);
        in_ns(
            &home,
            "ip",
            &["route", "add", "default", "via", &format!("192.168.{k}.1")],
        );
        in_ns(&router, "sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        let random = if nat == Nat::Random { " random" } else { "" };
        // A router that drops stray packets at its WAN address, one that rejects them with
        // a rule (as OpenWrt's `handle_reject`), or one with no input rule, whose kernel
        // answers them (RST, ICMP port unreachable).
        let stray = match kind.stray {
            Stray::Drop => "\n    iifname \"wan0\" ct state new drop",
            Stray::Reject => {
                "\n    iifname \"wan0\" ct state new meta l4proto tcp reject with tcp reset\n    iifname \"wan0\" ct state new reject"
            }
            Stray::Open => "",
        };
        if nat == Nat::Upnp {
            self.upnp_router(&router, k);
        } else {
            nft(
                &router,
                &format!(
                    "table ip nat {{\n  chain postrouting {{\n    type nat hook postrouting priority 100;\n    oifname \"wan0\" masquerade{random}\n  }}\n}}\n\
                 table ip filter {{\n  chain forward {{\n    type filter hook forward priority 0; policy drop;\n    iifname \"lan0\" accept\n    ct state established,related accept\n  }}\n  chain input {{\n    type filter hook input priority 0; policy accept;{stray}\n  }}\n}}\n"
                ),
            );
        }
        let addr6 = self.v6.clone().map(|p| {
            let (wan6, home6) = (format!("{p}::{:x}", 100 + k), format!("{p}:{k:x}::2"));
            Self::addr6(&router, &wan6, "wan0");
            Self::addr6(&router, &format!("{p}:{k:x}::1"), "lan0");
            Self::addr6(&home, &home6, "lan0");
            in_ns(
                &home,
                "ip",
                &["-6", "route", "add", "default", "via", &format!("{p}:{k:x}::1")],
            );
            in_ns(
                &router,
                "sysctl",
                &["-q", "-w", "net.ipv6.conf.all.forwarding=1"],
            );
            nft(
                &router,
                "table ip6 filter6 {\n  chain forward {\n    type filter hook forward priority 0; policy drop;\n    iifname \"lan0\" accept\n    ct state established,related accept\n    icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem } accept\n  }\n  chain input {\n    type filter hook input priority 0; policy accept;\n    iifname \"wan0\" ct state new meta l4proto != icmpv6 drop\n  }\n}\n",
            );
            // Every namespace on the WAN routes this home's prefix through its router, and
            // the router the earlier homes'.
            let route = (format!("{p}:{k:x}::/64"), wan6);
            for ns in &self.on_wan {
                in_ns(ns, "ip", &["-6", "route", "add", &route.0, "via", &route.1]);
            }
            self.joined_wan(&router);
            self.v6_routes.push(route);
            home6
        });
        // The management link: the API, and nothing else. A /30 of its own per home and
        // per test process.
        let m = format!("10.{}.{}", 100 + (self.id / 250) % 50, self.id % 250);
        let (root_side, home_side) = (format!("{m}.{}", 4 * k + 1), format!("{m}.{}", 4 * k + 2));
        let outer = format!("im{}h{k}", self.id);
        self.veth(&outer, "mgmt0", &home, false);
        ip(&["addr", "add", &format!("{root_side}/30"), "dev", &outer]);
        in_ns(
            &home,
            "ip",
            &["addr", "add", &format!("{home_side}/30"), "dev", "mgmt0"],
        );
        nft(
            &home,
            "table inet mgmt {\n  chain input {\n    type filter hook input priority 0;\n    iifname \"mgmt0\" tcp dport 8470 accept\n    iifname \"mgmt0\" drop\n  }\n  chain output {\n    type filter hook output priority 0;\n    oifname \"mgmt0\" tcp sport 8470 accept\n    oifname \"mgmt0\" drop\n  }\n}\n",
        );
        Host {
            ns: home,
            addr: lan_addr,
            api: home_side,
            router: Some((router, wan_addr)),
            addr6,
        }
    }

    /// The router of home `k` as a UPnP gateway: the same masquerade and firewall, with the
    /// chains `miniupnpd` fills with the forwardings it is asked for, and the daemon itself.
    fn upnp_router(&mut self, router: &str, k: u32) {
        nft(
            router,
            "table inet upnp {\n\
               chain forward {\n type filter hook forward priority 0; policy drop;\n iifname \"lan0\" accept\n ct state established,related accept\n jump miniupnpd\n }\n\
               chain miniupnpd {\n }\n\
               chain prerouting {\n type nat hook prerouting priority -100; policy accept;\n jump prerouting_miniupnpd\n }\n\
               chain prerouting_miniupnpd {\n }\n\
               chain postrouting {\n type nat hook postrouting priority 100; policy accept;\n jump postrouting_miniupnpd\n oifname \"wan0\" masquerade\n }\n\
               chain postrouting_miniupnpd {\n }\n\
               chain input {\n type filter hook input priority 0; policy accept;\n iifname \"wan0\" ct state new drop\n }\n\
             }\n",
        );
        let dir = std::env::temp_dir().join(format!("volli-upnp-{}-{k}", self.id));
        let _ = std::fs::create_dir_all(&dir);
        let conf = dir.join("miniupnpd.conf");
        std::fs::write(
            &conf,
            format!(
                "ext_ifname=wan0\nlistening_ip=lan0\nhttp_port=0\nenable_natpmp=yes\nenable_upnp=yes\n\
                 secure_mode=yes\nsystem_uptime=yes\nuuid=3ca{:05}-0000-4000-8000-00000000000{k}\n\
                 upnp_table_name=upnp\nupnp_nat_table_name=upnp\nupnp_forward_chain=miniupnpd\n\
                 upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n\
                 allow 1024-65535 192.168.0.0/16 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
                self.id
            ),
        )
        .expect("miniupnpd.conf written");
        let log = std::fs::File::create(dir.join("miniupnpd.log")).expect("log file");
        let daemon = Command::new("ip")
            .args(["netns", "exec", router, "/usr/sbin/miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(dir.join("miniupnpd.pid"))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("miniupnpd starts (install miniupnpd-nftables)");
        self.daemons.push(daemon);
        self.dirs.push(dir);
    }

    /// Puts `one_way_ms` of delay each way between `host`'s router and the WAN, as the
    /// path from a home to the rest of the internet has: a namespace between the two (the
    /// home's provider) whose routing sends every packet through a delay line
    /// (`delay_line.py`, a tun device and `python3`; this kernel has no `tc netem`).
    /// Packets keep their order; the TTL drops by two. IPv4 only; a home on the WAN, not
    /// behind a carrier.
    pub fn delay(&mut self, host: &Host, one_way_ms: u32) {
        let (_, wan_addr) = host.router.as_ref().expect("a home");
        let k: u32 = wan_addr
            .strip_prefix(&format!("{}.", self.wan))
            .and_then(|o| o.parse::<u32>().ok())
            .map(|o| o - 100)
            .expect("a home on the WAN, not behind a carrier");
        assert!(self.v6.is_none(), "delay lines carry IPv4 only");
        let isp = self.namespace(format!("inet{}d{k}", self.id));
        // The router's WAN link now ends in the provider's namespace (as `rtr0`); a new
        // link joins the provider to the WAN bridge (as `net0`).
        let old = format!("ir{}w{k}", self.id);
        ip(&["link", "set", &old, "nomaster"]);
        ip(&["link", "set", &old, "netns", &isp]);
        self.links.retain(|l| l != &old);
        in_ns(&isp, "ip", &["link", "set", &old, "name", "rtr0"]);
        in_ns(&isp, "ip", &["link", "set", "dev", "rtr0", "up"]);
        self.veth(&format!("iu{}w{k}", self.id), "net0", &isp, true);
        let script = std::env::temp_dir().join(format!("volli-delay-line-{}.py", self.id));
        std::fs::write(&script, include_str!("delay_line.py")).expect("delay line written");
        let mut line = Command::new("ip")
            .args(["netns", "exec", &isp, "python3"])
            .arg(&script)
            .args(["dly", &one_way_ms.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the delay line");
        let mut ready = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(line.stdout.as_mut().expect("stdout")),
            &mut ready,
        )
        .expect("the delay line starts");
        assert_eq!(ready.trim(), "ready", "the delay line starts");
        self.daemons.push(line);
        // The provider answers ARP for each side on the other's behalf (see below), and forwards
        // whatever arrives from either side into the delay line; what comes back out of it
        // is routed on as usual.
        for setting in [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.rtr0.proxy_arp=1",
            // Answered at once (by default a proxy's answer waits up to 0.8 s).
            "net.ipv4.neigh.net0.proxy_delay=0",
            "net.ipv4.neigh.rtr0.proxy_delay=0",
            "net.ipv4.conf.net0.rp_filter=0",
            "net.ipv4.conf.rtr0.rp_filter=0",
            "net.ipv4.conf.dly.rp_filter=0",
        ] {
            in_ns(&isp, "sysctl", &["-q", "-w", setting]);
        }
        let own = format!("{}.{}/32", self.wan, 150 + k);
        let subnet = format!("{}.0/24", self.wan);
        let router_addr = format!("{wan_addr}/32");
        for args in [
            // Room for what arrives while the delay line waits for a core (a full queue drops).
            vec!["link", "set", "dev", "dly", "txqueuelen", "10000", "up"],
            vec!["addr", "add", &own, "dev", "net0"],
            vec!["route", "add", &subnet, "dev", "net0"],
            vec!["route", "add", &router_addr, "dev", "rtr0"],
            // On the WAN it answers for the router's address alone; towards the router for
            // every other address.
            vec!["neigh", "add", "proxy", wan_addr, "dev", "net0"],
            vec!["rule", "add", "iif", "net0", "lookup", "100", "pref", "100"],
            vec!["rule", "add", "iif", "rtr0", "lookup", "100", "pref", "101"],
            vec!["route", "add", "default", "dev", "dly", "table", "100"],
        ] {
            in_ns(&isp, "ip", &args);
        }
    }

    /// Limits what `host` sends to the WAN to `mbit` megabits per second (a token bucket on
    /// its router's WAN side, or on its own interface for a public host).
    pub fn limit_upload(&self, host: &Host, mbit: u32) {
        let (ns, dev) = match &host.router {
            Some((router, _)) => (router.as_str(), "wan0"),
            None => (host.ns.as_str(), "wan0"),
        };
        in_ns(
            ns,
            "tc",
            &[
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                &format!("{mbit}mbit"),
                "burst",
                "256kb",
                "latency",
                "50ms",
            ],
        );
    }

    /// Makes `host`'s router drop every packet from `from` (a WAN address), before any
    /// translation: a path that is cut, until [`Internet::heal`].
    pub fn cut(&self, host: &Host, from: &str) {
        let (router, _) = host.router.as_ref().expect("a home");
        nft(
            router,
            &format!(
                "table ip cut {{\n  chain prerouting {{\n    type filter hook prerouting priority -300;\n    ip saddr {from} drop\n  }}\n}}\n"
            ),
        );
    }

    /// Undoes [`Internet::cut`].
    pub fn heal(&self, host: &Host) {
        let (router, _) = host.router.as_ref().expect("a home");
        nft(router, "delete table ip cut\n");
    }

    /// Keeps `daemon` (a process started for this internet) until the internet goes.
    pub fn keep(&mut self, daemon: std::process::Child) {
        self.daemons.push(daemon);
    }
}

impl Default for Internet {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for link in &self.links {
            let _ = Command::new("ip").args(["link", "del", link]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .output();
    }
}
