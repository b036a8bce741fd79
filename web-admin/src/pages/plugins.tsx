import { useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import { Confirm, Empty, ErrorNote, Loaded, Page, size, useAction, useLoad } from "../ui";

export function Plugins() {
  const state = useLoad(() => ok(api.GET("/v1/plugins")), ["plugin"]);
  return (
    <Page title="Plugins">
      <Install onInstalled={state.reload} />
      <Loaded state={state} what="plugins">
        {(list) =>
          list.plugins.length === 0 ? (
            <Empty>No plugins.</Empty>
          ) : (
            <div class="plugins">
              {list.plugins.map((p) => (
                <Plugin key={p.name} plugin={p} onChange={state.reload} />
              ))}
            </div>
          )
        }
      </Loaded>
    </Page>
  );
}

function Plugin({ plugin: p, onChange }: { plugin: S["Plugin"]; onChange: () => void }) {
  const action = useAction();
  const [editing, setEditing] = useState(false);
  const path = { params: { path: { name: p.name } } };
  const act = (f: () => Promise<unknown>) => action.run(async () => (await f(), onChange()));
  return (
    <article class="panel plugin" data-testid={`plugin-${p.name}`} aria-labelledby={`plugin-${p.name}`}>
      <header class="row spread">
        <h2 id={`plugin-${p.name}`}>
          {p.name} <span class="muted small">{p.version}</span>
        </h2>
        <span class={`badge ${p.state === "running" ? "good" : p.state === "failed" ? "bad" : ""}`} data-testid="plugin-state">
          {p.state}
        </span>
      </header>
      <p>{p.description}</p>
      <dl class="facts small">
        <dt>Kind</dt>
        <dd>
          {p.kind}
          {p.builtin && " (built in)"}
        </dd>
        <dt>Asks for</dt>
        <dd>{p.capabilities.join(", ") || "nothing"}</dd>
        <dt>Granted</dt>
        <dd>{p.granted.join(", ") || "nothing"}</dd>
        <dt>Limits</dt>
        <dd>
          {size(p.limits.memory_bytes)} memory, {p.limits.deadline_ms} ms per call, {p.limits.instances} instances
        </dd>
        <dt>Calls</dt>
        <dd>
          {p.stats.calls} calls, {p.stats.errors} errors, {p.stats.traps} traps, {p.stats.timeouts} timeouts,{" "}
          {p.stats.denied} denied, {(p.stats.busy_us / 1000).toFixed(1)} ms busy
        </dd>
        {p.last_error && (
          <>
            <dt>Last error</dt>
            <dd class="error-text">{p.last_error}</dd>
          </>
        )}
      </dl>
      <div class="row">
        {p.enabled ? (
          <button type="button" class="small" disabled={action.busy} onClick={() => act(() => ok(api.POST("/v1/plugins/{name}/disable", path)))}>
            Disable
          </button>
        ) : (
          <button type="button" class="small" disabled={action.busy} onClick={() => act(() => ok(api.POST("/v1/plugins/{name}/enable", path)))}>
            Enable
          </button>
        )}
        <button type="button" class="small" aria-expanded={editing} onClick={() => setEditing(!editing)}>
          Configure
        </button>
        {!p.builtin && (
          <Confirm
            label="Remove"
            confirm={`Remove ${p.name}`}
            disabled={action.busy}
            onConfirm={() => act(() => ok(api.DELETE("/v1/plugins/{name}", path)))}
          />
        )}
      </div>
      <ErrorNote error={action.error} />
      {editing && <Configure name={p.name} onSaved={onChange} />}
    </article>
  );
}

function Configure({ name, onSaved }: { name: string; onSaved: () => void }) {
  const [text, setText] = useState("{\n  \n}");
  const [saved, setSaved] = useState(false);
  const action = useAction();
  return (
    <form
      onSubmit={(e) => {
        e.preventDefault();
        setSaved(false);
        void action.run(async () => {
          let config: Record<string, unknown>;
          try {
            config = JSON.parse(text) as Record<string, unknown>;
          } catch (err) {
            throw new Error(`This is not valid JSON: ${(err as Error).message}`);
          }
          if (config === null || typeof config !== "object" || Array.isArray(config)) {
            throw new Error("The configuration must be a JSON object.");
          }
          await ok(api.PUT("/v1/plugins/{name}/config", { params: { path: { name } }, body: { config } }));
          setSaved(true);
          onSaved();
        });
      }}
    >
      <label>
        Configuration (JSON object; replaces the current one)
        <textarea class="code" rows={6} spellcheck={false} value={text} onInput={(e) => setText(e.currentTarget.value)} />
      </label>
      <button type="submit" class="small" disabled={action.busy}>
        Save configuration
      </button>
      <ErrorNote error={action.error} />
      {saved && (
        <p class="success" role="status">
          Saved; the plugin was restarted with it.
        </p>
      )}
    </form>
  );
}

function Install({ onInstalled }: { onInstalled: () => void }) {
  const [file, setFile] = useState<File | null>(null);
  const [grant, setGrant] = useState("");
  const [httpAllow, setHttpAllow] = useState("");
  const [done, setDone] = useState<string | null>(null);
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        setDone(null);
        if (!file) return;
        void action.run(async () => {
          const bytes = new Uint8Array(await file.arrayBuffer());
          const query: { grant?: string; http_allow?: string } = {};
          if (grant.trim()) query.grant = grant.trim();
          if (httpAllow.trim()) query.http_allow = httpAllow.trim();
          const plugin = await ok(
            api.POST("/v1/plugins", {
              params: { query },
              body: bytes as unknown as string,
              bodySerializer: (b: unknown) => b as BodyInit,
              headers: { "Content-Type": "application/wasm" },
            }),
          );
          setDone(`Installed ${plugin.name} ${plugin.version}.`);
          onInstalled();
        });
      }}
    >
      <h2>Install a plugin</h2>
      <div class="row">
        <label>
          Component (.wasm)
          <input type="file" accept=".wasm,application/wasm" required onChange={(e) => setFile(e.currentTarget.files?.[0] ?? null)} />
        </label>
        <label>
          Grant (comma-separated)
          <input placeholder="kv,http" value={grant} onInput={(e) => setGrant(e.currentTarget.value)} />
        </label>
        <label>
          Hosts http may reach
          <input placeholder="example.org" value={httpAllow} onInput={(e) => setHttpAllow(e.currentTarget.value)} />
        </label>
      </div>
      <button type="submit" disabled={action.busy || !file}>
        {action.busy ? "Installing…" : "Install"}
      </button>
      <ErrorNote error={action.error} />
      {done && (
        <p class="success" role="status">
          {done}
        </p>
      )}
    </form>
  );
}
