// The Volli app: chats first (list and thread as two screens on a phone, two panes on a wide
// screen), people, settings, and the node's own pages inside it — one app with one login.
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, onLoggedOut, session } from "./client";
import * as data from "./data";
import { useStore } from "./store";
import { registerWorker, startNotifications, title } from "./notify";
import { LiveContext, topic, type Live } from "./ui";
import { ChatList } from "./app/home";
import { Thread } from "./app/thread";
import { AddContact, ContactInfo, GroupInfo, NewChat, Profile } from "./app/people";
import { ADMIN_PAGES, adminVisible, applyTheme, currentTheme, Settings } from "./app/settings";
import { Login, redeemFragment } from "./app/login";
import { Backup } from "./app/backup";
import { Bar } from "./app/bits";
import { Overview } from "./pages/overview";
import { Contacts } from "./pages/contacts";
import { Peers } from "./pages/peers";
import { Plugins } from "./pages/plugins";
import { Devices } from "./pages/devices";
import { Clients } from "./pages/clients";
import { Transfers } from "./pages/transfers";
import { Settings as NodeSettings } from "./pages/settings";

type Route =
  | { screen: "home" }
  | { screen: "chat"; key: data.Key; focus?: string }
  | { screen: "new" | "add" | "profile" | "settings" | "backup" }
  | { screen: "contact" | "group"; id: string }
  | { screen: "admin"; page: string };

const ADMIN_IDS: string[] = ADMIN_PAGES.map(([id]) => id);

function route(): Route {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [a = "", b, c, d] = parts;
  if (a === "chat" && (b === "u" || b === "g") && c) return { screen: "chat", key: data.keyOf(b, c), ...(d ? { focus: d } : {}) };
  if (a === "new" || a === "add" || a === "profile" || a === "settings" || a === "backup") return { screen: a };
  if ((a === "contact" || a === "group") && b) return { screen: a, id: b };
  if (a === "admin") return { screen: "admin", page: b || "overview" };
  // The admin page's old addresses (#/overview, …) still lead where they did.
  if (ADMIN_IDS.includes(a)) return { screen: "admin", page: a };
  if (a === "conversations" && b) return { screen: "chat", key: data.keyOf("u", b) };
  if (a === "groups" && b) return { screen: "chat", key: data.keyOf("g", b) };
  if (!a && /^\/admin\/?$/.test(location.pathname)) return { screen: "admin", page: "overview" };
  return { screen: "home" };
}

function App() {
  const [ready, setReady] = useState(false);
  const [loggedIn, setLoggedIn] = useState(!!session.get());
  const [loginError, setLoginError] = useState<string | null>(null);
  useEffect(() => {
    void registerWorker();
    const redeem = () =>
      void redeemFragment().then((error) => {
        setLoginError(error);
        setLoggedIn(!!session.get());
        setReady(true);
      });
    redeem();
    // A login link opened in a tab that already shows the app changes only the fragment.
    const onHash = () => /[#&](code|login)=/.test(location.hash) && redeem();
    window.addEventListener("hashchange", onHash);
    const off = onLoggedOut(() => {
      void data.forget();
      setLoggedIn(false);
      setLoginError("Your session ended. Log in again.");
    });
    return () => (off(), window.removeEventListener("hashchange", onHash));
  }, []);
  if (!ready) return <p class="loading">Loading…</p>;
  return loggedIn ? (
    <Shell
      onLogout={() => {
        void data.forget();
        setLoggedIn(false);
      }}
    />
  ) : (
    <Login error={loginError} onLoggedIn={() => (setLoginError(null), setLoggedIn(true))} />
  );
}

function Shell({ onLogout }: { onLogout: () => void }) {
  const [r, setRoute] = useState<Route>(route());
  const [live, setLive] = useState<Live>({ ticks: {}, last: null });
  const settings = useStore(data.settings);
  useStore(data.me);
  useEffect(() => applyTheme(currentTheme(settings)), [settings]);
  useEffect(() => {
    const onHash = () => {
      setRoute(route());
      // Focus moves to the new screen's title, unless the screen has put it somewhere already.
      requestAnimationFrame(() => {
        const main = document.getElementById("main");
        const at = document.activeElement;
        if (at && at !== main && main?.contains(at)) return;
        (document.getElementById("page-title") as HTMLElement | null)?.focus({ preventScroll: true });
      });
    };
    window.addEventListener("hashchange", onHash);
    // The address may have changed between the first render and now.
    setRoute(route());
    void data.start();
    const stopNotes = startNotifications();
    const offEvents = data.lastEvent.subscribe(() => {
      const e = data.lastEvent.value;
      if (!e) return;
      const t = e.type === "resync" || e.type === "ready" ? "resync" : topic(e);
      setLive((l) => ({ ticks: { ...l.ticks, [t]: (l.ticks[t] ?? 0) + 1 }, last: e }));
    });
    // A notification clicked while the app is open: the service worker says where to go.
    const onMessage = (e: MessageEvent) => {
      const url = (e.data as { open?: string } | null)?.open;
      if (url) location.hash = new URL(url, location.origin).hash;
    };
    navigator.serviceWorker?.addEventListener("message", onMessage);
    const onKey = (e: KeyboardEvent) => shortcut(e);
    window.addEventListener("keydown", onKey);
    return () => {
      window.removeEventListener("hashchange", onHash);
      window.removeEventListener("keydown", onKey);
      navigator.serviceWorker?.removeEventListener("message", onMessage);
      offEvents();
      stopNotes();
      data.stop();
    };
  }, []);
  useEffect(() => {
    if (r.screen === "home") title.set("Chats");
  }, [r.screen]);
  const logout = async () => {
    try {
      if (session.kind() === "admin") await api.DELETE("/v1/admin/session");
    } finally {
      session.clear();
      onLogout();
    }
  };
  const home = r.screen === "home";
  return (
    <LiveContext.Provider value={live}>
      <a class="skip" href="#main" onClick={(e) => (e.preventDefault(), document.getElementById("main")?.focus())}>
        Skip to content
      </a>
      <div class={`app ${home ? "at-home" : "at-detail"}`}>
        <aside class="pane-list" aria-label="Chat list">
          <ChatList current={r.screen === "chat" ? r.key : null} />
        </aside>
        <main class="pane-main" id="main" tabIndex={-1}>
          {screen(r, logout)}
        </main>
      </div>
    </LiveContext.Provider>
  );
}

function screen(r: Route, logout: () => void) {
  switch (r.screen) {
    case "home":
      return (
        <div class="placeholder">
          <img src="/icon.svg" alt="" width={96} height={96} />
          <p>Choose a chat, or start a new one.</p>
          <p class="muted small">Messages go from your node to theirs, end-to-end encrypted. Nothing leaves for anywhere else.</p>
        </div>
      );
    case "chat":
      return <Thread key={r.key} chatKey={r.key} focus={r.focus} />;
    case "new":
      return <NewChat />;
    case "add":
      return <AddContact />;
    case "profile":
      return <Profile />;
    case "settings":
      return <Settings onLogout={logout} />;
    case "backup":
      return <Backup />;
    case "contact":
      return <ContactInfo key={r.id} id={r.id} />;
    case "group":
      return <GroupInfo key={r.id} id={r.id} />;
    case "admin":
      return <AdminScreen page={r.page} />;
  }
}

function AdminScreen({ page }: { page: string }) {
  const entry = ADMIN_PAGES.find(([id]) => id === page);
  const allowed = entry && adminVisible(entry[2]);
  return (
    <section class="screen admin">
      <Bar back="#/settings" always>
        <span class="crumb">Settings · Your node</span>
      </Bar>
      <nav class="admin-tabs" aria-label="Pages">
        <ul class="plain">
          {ADMIN_PAGES.filter(([, , s]) => adminVisible(s)).map(([id, label]) => (
            <li key={id}>
              <a href={`#/admin/${id}`} aria-current={page === id ? "page" : undefined}>
                {label.replace(/ and .*/, "")}
              </a>
            </li>
          ))}
        </ul>
      </nav>
      <div class="screen-body">{allowed ? adminPage(page) : <p>There is no page “{page}” here.</p>}</div>
    </section>
  );
}

function adminPage(page: string) {
  switch (page) {
    case "overview":
      return <Overview />;
    case "contacts":
      return <Contacts />;
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
      return <NodeSettings />;
    default:
      return null;
  }
}

/** Desktop shortcuts: search, previous/next chat, new chat, back. */
function shortcut(e: KeyboardEvent) {
  const typing = e.target instanceof HTMLElement && (e.target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(e.target.tagName));
  if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "k") {
    e.preventDefault();
    if (getComputedStyle(document.querySelector(".pane-list")!).display === "none") location.hash = "#/";
    requestAnimationFrame(() => document.getElementById("search")?.focus());
  } else if (e.altKey && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
    e.preventDefault();
    const list = data.chats.value;
    const i = list.findIndex((c) => c.key === data.openChat.value);
    const next = list[e.key === "ArrowUp" ? Math.max(0, i - 1) : Math.min(list.length - 1, i + 1)];
    if (next) location.hash = `#/chat/${next.key.replace(":", "/")}`;
  } else if ((e.ctrlKey || e.metaKey) && e.altKey && e.key.toLowerCase() === "n") {
    e.preventDefault();
    location.hash = "#/new";
  } else if (e.key === "Escape" && !e.defaultPrevented && !typing && !document.querySelector(".dialog, .menu-pop") && location.hash.length > 2) {
    location.hash = "#/";
  }
}

render(<App />, document.getElementById("app")!);
