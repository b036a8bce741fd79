// The admin page: a hash-routed app over the public API, live through /v1/events.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, ok, onLoggedOut, session, message, type Event } from "./client";
import { connect, type Status } from "./events";
import { ErrorNote, LiveContext, topic, type Live } from "./ui";
import { Overview } from "./pages/overview";
import { Contacts } from "./pages/contacts";
import { Conversations } from "./pages/conversations";
import { Groups } from "./pages/groups";
import { Peers } from "./pages/peers";
import { Plugins } from "./pages/plugins";
import { Devices } from "./pages/devices";
import { Clients } from "./pages/clients";
import { Transfers } from "./pages/transfers";
import { Settings } from "./pages/settings";

const PAGES = [
  ["overview", "Overview"],
  ["contacts", "Contacts"],
  ["conversations", "Conversations"],
  ["groups", "Groups"],
  ["peers", "Peers"],
  ["plugins", "Plugins"],
  ["devices", "Devices"],
  ["clients", "Clients"],
  ["transfers", "Transfers"],
  ["settings", "Settings"],
] as const;

function route(): [string, string | undefined] {
  const [page, arg] = location.hash.replace(/^#\/?/, "").split("/", 2);
  return [page || "overview", arg ? decodeURIComponent(arg) : undefined];
}

/** A one-time code from `volli admin` arrives in the fragment (never sent to the server). */
async function redeemCode(): Promise<string | null> {
  const code = new URLSearchParams(location.hash.replace(/^#/, "")).get("code");
  if (!code) return null;
  history.replaceState(null, "", location.pathname);
  try {
    const s = await ok(api.POST("/v1/admin/session", { body: { code } }));
    session.set(s.token);
    return null;
  } catch (e) {
    return message(e);
  }
}

function App() {
  const [ready, setReady] = useState(false);
  const [loggedIn, setLoggedIn] = useState(!!session.get());
  const [loginError, setLoginError] = useState<string | null>(null);
  useEffect(() => {
    void redeemCode().then((error) => {
      setLoginError(error);
      setLoggedIn(!!session.get());
      setReady(true);
    });
    return onLoggedOut(() => {
      setLoggedIn(false);
      setLoginError("Your session ended. Run `volli admin` again to log in.");
    });
  }, []);
  if (!ready) return <p class="loading">Loading…</p>;
  return loggedIn ? <Shell onLogout={() => setLoggedIn(false)} /> : <Login error={loginError} />;
}

function Login({ error }: { error: string | null }) {
  return (
    <main class="login">
      <h1>Volli node</h1>
      <ErrorNote error={error} />
      <p>To log in, run this on the node's machine and open the link it prints:</p>
      <pre>volli admin</pre>
      <p class="muted">Each link works once, for ten minutes. The session ends when you close this tab.</p>
    </main>
  );
}

function Shell({ onLogout }: { onLogout: () => void }) {
  const [[page, arg], setRoute] = useState(route());
  const [live, setLive] = useState<Live>({ ticks: {}, last: null });
  const [status, setStatus] = useState<Status>("connecting");
  const [menu, setMenu] = useState(false);
  useEffect(() => {
    const onHash = () => {
      setRoute(route());
      setMenu(false);
      document.getElementById("page-title")?.focus();
    };
    window.addEventListener("hashchange", onHash);
    const close = connect((e: Event) => {
      const t = e.type === "resync" || e.type === "ready" ? "resync" : topic(e);
      setLive((l) => ({ ticks: { ...l.ticks, [t]: (l.ticks[t] ?? 0) + 1 }, last: e }));
    }, setStatus);
    return () => {
      window.removeEventListener("hashchange", onHash);
      close();
    };
  }, []);
  const logout = async () => {
    try {
      await api.DELETE("/v1/admin/session");
    } finally {
      session.clear();
      onLogout();
    }
  };
  return (
    <LiveContext.Provider value={live}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="top">
        <span class="brand">Volli node</span>
        <span class={`live ${status}`} role="status" data-testid="live">
          {status === "live" ? "live" : status === "connecting" ? "connecting…" : "offline, retrying"}
        </span>
        <button type="button" class="small menu" aria-expanded={menu} aria-controls="nav" onClick={() => setMenu(!menu)}>
          Menu
        </button>
      </header>
      <div class="layout">
        <nav id="nav" class={menu ? "open" : ""} aria-label="Pages">
          <ul class="plain">
            {PAGES.map(([id, label]) => (
              <li key={id}>
                <a href={`#/${id}`} aria-current={page === id ? "page" : undefined}>
                  {label}
                </a>
              </li>
            ))}
          </ul>
          <button type="button" class="small" onClick={logout}>
            Log out
          </button>
        </nav>
        <main id="main">{pageFor(page, arg)}</main>
      </div>
    </LiveContext.Provider>
  );
}

function pageFor(page: string, arg: string | undefined) {
  switch (page) {
    case "overview":
      return <Overview />;
    case "contacts":
      return <Contacts />;
    case "conversations":
      return <Conversations with={arg} />;
    case "groups":
      return <Groups id={arg} />;
    case "peers":
      return <Peers />;
    case "plugins":
      return <Plugins />;
    case "devices":
      return <Devices />;
    case "clients":
      return <Clients />;
    case "transfers":
      return <Transfers />;
    case "settings":
      return <Settings />;
    default:
      return (
        <section>
          <h1 id="page-title" tabIndex={-1}>
            Not found
          </h1>
          <p>
            There is no page “{page}”. <a href="#/overview">Go to the overview.</a>
          </p>
        </section>
      );
  }
}

render(<App />, document.getElementById("app")!);
