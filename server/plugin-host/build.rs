#![allow(clippy::expect_used, clippy::unwrap_used)] // a build script reports failure by panicking
//! Builds the plugins in `plugins/` (their own workspace, target `wasm32-wasip2`, release
//! profile) and embeds the built-in ones, so a fresh clone's `cargo run` and `cargo test` just
//! work. Installs the `wasm32-wasip2` target through rustup if it is missing.
//!
//! The nested build uses its own target directory next to this build's (`<target>/wasm-plugins`)
//! so it never waits on the outer build's lock.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Plugins shipped with the node: (name, SDK feature = kind). Each lives in `plugins/<name>`
/// as the package `volli-plugin-<name>`.
const BUILTIN: &[(&str, &str)] = &[
    ("mdns", "discovery"),
    ("dht", "discovery"),
    ("rendezvous", "discovery"),
    ("invite", "discovery"),
    ("friends-only", "relay-policy"),
    ("fs", "file-backend"),
    ("memory", "file-backend"),
];

/// Plugins built for tests only (hostile behaviours); left on disk, not embedded.
const TESTING: &[(&str, &str)] = &[("hostile", "discovery")];

/// The SDK's kind features are exclusive and cargo unifies features within one build, so
/// plugins are built one kind per cargo invocation.
const KINDS: &[&str] = &["discovery", "relay-policy", "file-backend"];

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.join("../..");
    let plugins = root.join("plugins");
    let mut watched = vec![
        "plugins/Cargo.toml".to_owned(),
        "plugins/Cargo.lock".to_owned(),
        "sdk/src".to_owned(),
        "sdk/wit".to_owned(),
        "sdk/Cargo.toml".to_owned(),
    ];
    for (name, _) in BUILTIN.iter().chain(TESTING) {
        watched.push(format!("plugins/{name}/src"));
        watched.push(format!("plugins/{name}/Cargo.toml"));
    }
    for path in watched {
        println!("cargo::rerun-if-changed={}", root.join(path).display());
    }

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let target_root = out.ancestors().nth(4).unwrap_or(&out).to_path_buf();
    let wasm_target_dir = target_root.join("wasm-plugins");

    ensure_wasm_target();

    for kind in KINDS {
        let packages: Vec<&str> = BUILTIN
            .iter()
            .chain(TESTING)
            .filter(|(_, k)| k == kind)
            .map(|(name, _)| *name)
            .collect();
        build_plugins(&plugins, &wasm_target_dir, &packages);
    }

    let built = wasm_target_dir.join(TARGET).join("release");
    let mut code = String::from(
        "/// Built-in plugins: (name, component).\npub(crate) const BUILTIN: &[(&str, &[u8])] = &[\n",
    );
    for (name, _) in BUILTIN {
        let file = out.join(format!("{name}.wasm"));
        copy(&built.join(crate_file(name)), &file);
        let _ = writeln!(
            code,
            "    ({name:?}, include_bytes!({:?})),",
            file.display().to_string()
        );
    }
    code.push_str("];\n");
    let testing_dir = out.join("testing");
    std::fs::create_dir_all(&testing_dir).expect("cannot create the test plugin directory");
    for (name, _) in TESTING {
        copy(
            &built.join(crate_file(name)),
            &testing_dir.join(format!("{name}.wasm")),
        );
    }
    let _ = writeln!(
        code,
        "/// Directory of the test-only plugins.\npub(crate) const TESTING_DIR: &str = {:?};",
        testing_dir.display().to_string()
    );
    std::fs::write(out.join("builtin.rs"), code).expect("cannot write builtin.rs");
}

fn crate_file(name: &str) -> String {
    format!("volli_plugin_{}.wasm", name.replace('-', "_"))
}

fn build_plugins(plugins: &Path, target_dir: &Path, names: &[&str]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--locked",
        "--target",
        TARGET,
        "--manifest-path",
    ])
    .arg(plugins.join("Cargo.toml"))
    .arg("--target-dir")
    .arg(target_dir);
    for name in names {
        cmd.args(["-p", &format!("volli-plugin-{name}")]);
    }
    // Settings meant for the outer (host) build must not leak into the wasm build.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "CLIPPY_CONF_DIR",
        "TARGET",
        "HOST",
        "OPT_LEVEL",
        "PROFILE",
        "DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("cannot run cargo to build the plugins");
    assert!(
        status.success(),
        "building the plugins in {} failed",
        plugins.display()
    );
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("cannot copy {}: {e}", from.display()));
}

/// Installs the wasm32-wasip2 standard library through rustup when it is missing.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let installed = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|dir| dir.exists());
    if installed {
        return;
    }
    println!(
        "cargo::warning=installing the {TARGET} target with rustup (needed for the built-in plugins)"
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .expect("the wasm32-wasip2 target is missing and rustup is not available to install it");
    assert!(status.success(), "`rustup target add {TARGET}` failed");
}
