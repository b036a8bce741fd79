// Real `volli` nodes for Node test runner suites (this package's and the admin page's): each
// started with its own data directory and config, the API on a free loopback port.
//
//   VOLLI_BIN   the node binary (default: target/debug/volli of this checkout)
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const checkout = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
export const BIN = resolve(process.env.VOLLI_BIN ?? join(checkout, "target/debug/volli"));

/** A set of nodes under one temporary directory; `stopAll()` ends them and removes it. */
export class Nodes {
  constructor(prefix = "volli-test-") {
    this.root = mkdtempSync(join(tmpdir(), prefix));
    this.all = [];
  }

  /**
   * Starts `volli serve` as `name` (LAN discovery off) and waits for its API: the node has
   * `url`, `token` (the admin token), `dir` and `log` (its stderr so far).
   */
  async start(name, { args = [], config = "", apiListen = "127.0.0.1:0", env = {} } = {}) {
    const dir = join(this.root, name);
    const configPath = `${dir}.toml`;
    writeFileSync(configPath, `[network]\nlan = false\n${config}`);
    const node = { name, dir, args, config, env, log: [] };
    this.all.push(node);
    rmSync(join(dir, "api.url"), { force: true });
    node.child = spawn(
      BIN,
      ["serve", "--config", configPath, "--data-dir", dir, "--api-listen", apiListen, "--p2p-listen", "/ip4/127.0.0.1/tcp/0", ...args],
      {
        env: { ...process.env, RUST_LOG: "warn", VOLLI_PLUGINS_CACHE_DIR: process.env.VOLLI_PLUGINS_CACHE_DIR ?? join(this.root, "plugin-cache"), ...env },
        stdio: ["ignore", "ignore", "pipe"],
      },
    );
    node.child.stderr.on("data", (d) => node.log.push(d.toString()));
    node.child.on("error", (e) => (node.failed = e));
    // A minute is plenty on an idle machine; a busy one (a build beside the tests) needs more.
    for (let i = 0; i < 1800; i++) {
      const url = existsSync(join(dir, "api.url")) ? readFileSync(join(dir, "api.url"), "utf8").trim() : "";
      if (url) {
        node.url = url;
        node.token = readFileSync(join(dir, "admin.token"), "utf8").trim();
        return node;
      }
      if (node.child.exitCode !== null || node.failed) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${name} did not start (${BIN}): ${node.failed?.message ?? ""}\n${node.log.join("")}`);
  }

  /** Stops a node (SIGTERM) and waits until it has exited. */
  async stop(node) {
    if (node.child.exitCode === null && node.child.signalCode === null) {
      const exited = new Promise((r) => node.child.once("exit", r));
      node.child.kill("SIGTERM");
      await exited;
    }
  }

  /** Stops a node and starts it again on the same data directory and API port. */
  async restart(node) {
    await this.stop(node);
    this.all.splice(this.all.indexOf(node), 1);
    const again = await this.start(node.name, { args: node.args, config: node.config, env: node.env, apiListen: new URL(node.url).host });
    return Object.assign(node, again);
  }

  async stopAll() {
    await Promise.all(this.all.map((n) => this.stop(n)));
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** A request with a node's admin token: `{status, body}`. */
export async function call(node, method, path, body) {
  const r = await fetch(node.url + path, {
    method,
    headers: { Authorization: `Bearer ${node.token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}
