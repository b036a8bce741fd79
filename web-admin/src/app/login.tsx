// Logging in: the one-time link of `volli admin` (an admin session for this tab), or a client
// login code (`volli clients add`, or Clients on another logged-in device) that gives this
// device a token of its own with that code's scopes, kept so the installed app stays logged in.
import { useState } from "preact/hooks";
import { api, ok, session, message as errorText } from "../client";
import { ErrorNote } from "../ui";
import { ScanButton } from "./people";

/** The code in `volli://login?api=…&code=…`, in this app's `…/#login=CODE`, or the code itself. */
export function loginCode(text: string): string {
  const t = text.trim();
  const hash = /[#&]login=([^&\s]+)/.exec(t);
  if (hash) return decodeURIComponent(hash[1]!);
  if (/^volli:/i.test(t)) {
    const q = t.indexOf("?");
    const code = new URLSearchParams(q >= 0 ? t.slice(q + 1) : "").get("code");
    if (code) return code;
  }
  return t;
}

export async function redeemClientCode(code: string): Promise<void> {
  const created = await ok(api.POST("/v1/clients/login", { body: { code } }));
  session.setClient(created.token, created.scopes);
}

/** A one-time code in the fragment (never sent to the server): `#code=` from `volli admin`, `#login=` for a client. */
export async function redeemFragment(): Promise<string | null> {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  const admin = params.get("code");
  const client = params.get("login");
  if (!admin && !client) return null;
  history.replaceState(null, "", location.pathname === "/admin" || location.pathname === "/admin/" ? "/admin#/admin/overview" : "/#/");
  try {
    if (admin) {
      const s = await ok(api.POST("/v1/admin/session", { body: { code: admin } }));
      session.set(s.token);
    } else await redeemClientCode(client!);
    return null;
  } catch (e) {
    return errorText(e);
  }
}

export function Login({ error, onLoggedIn }: { error: string | null; onLoggedIn: () => void }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [failed, setFailed] = useState<string | null>(null);
  const submit = (value: string) => {
    const code = loginCode(value);
    if (!code) return;
    setBusy(true);
    setFailed(null);
    redeemClientCode(code)
      .then(onLoggedIn)
      .catch((e) => setFailed(errorText(e)))
      .finally(() => setBusy(false));
  };
  return (
    <main class="login" id="main">
      <img class="logo" src="/icon.svg" alt="" width={72} height={72} />
      <h1>Volli</h1>
      <ErrorNote error={failed ?? error} />
      <form
        class="panel"
        onSubmit={(e) => {
          e.preventDefault();
          submit(text);
        }}
      >
        <h2>Log in with a code from your node</h2>
        <p class="muted">
          On a device that is already logged in, open Settings → Clients and push, and show a login code; or run <code>volli clients add --name phone --scopes read,messages,files</code> on the node.
        </p>
        <label>
          Login link or code
          <input value={text} autoComplete="one-time-code" onInput={(e) => setText(e.currentTarget.value)} placeholder="volli://login?…" />
        </label>
        <div class="row">
          <button type="submit" disabled={busy || !text.trim()}>
            {busy ? "Logging in…" : "Log in"}
          </button>
          <ScanButton label="Scan the login QR code" onText={(t) => (setText(t), submit(t))} />
        </div>
      </form>
      <p class="muted">
        On the node's own machine, <code>volli admin</code> prints a link that opens the app with every right, until the tab closes.
      </p>
    </main>
  );
}
