// The app's settings: profile, notifications, backup, theme, the node's own pages, logging out.
import { useEffect, useState } from "preact/hooks";
import { api, ok, message as errorText, session } from "../client";
import * as data from "../data";
import { useStore } from "../store";
import { disablePush, enablePush, push, setSound, sound, title } from "../notify";
import { ErrorNote } from "../ui";
import { Avatar, Bar, Icon } from "./bits";

/** The node's pages, reached from the settings; the ones a login may not use are not shown. */
export const ADMIN_PAGES = [
  ["overview", "Overview", "read"],
  ["contacts", "Contacts and invites", "read"],
  ["peers", "Peers", "read"],
  ["plugins", "Plugins", "read"],
  ["devices", "Devices", "read"],
  ["clients", "Clients and push", "admin"],
  ["transfers", "Transfers", "read"],
  ["settings", "Node settings and retention", "read"],
] as const;

export function adminVisible(scope: string): boolean {
  return scope === "admin" ? data.can("admin") : data.can("admin") || session.kind() === "admin";
}

export type Theme = "system" | "light" | "dark";

/** The theme in force: this device's choice, else the node's `ui.theme`, else the system's. */
export function currentTheme(settings: Record<string, unknown>): Theme {
  const local = localStorage.getItem("volli.theme") as Theme | null;
  const synced = settings["ui.theme"];
  const t = local ?? (typeof synced === "string" ? synced : "system");
  return t === "dark" || t === "light" ? t : "system";
}

export function applyTheme(t: Theme) {
  if (t === "system") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = t;
}

export function Settings({ onLogout }: { onLogout: () => void }) {
  useEffect(() => title.set("Settings"), []);
  const m = useStore(data.me);
  const settings = useStore(data.settings);
  const pushState = useStore(push);
  const soundOn = useStore(sound);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  // The choice shows at once; the node's copy of it follows.
  const [chosen, setChosen] = useState<Theme | null>(null);
  const theme = chosen ?? currentTheme(settings);
  const name = m.profile?.name || m.node?.device_name || "You";
  // The choice shows at once; the node's copy of it follows.
  const [receiptsChosen, setReceiptsChosen] = useState<boolean | null>(null);
  const receipts = receiptsChosen ?? settings["receipts.read"] !== false;
  const setTheme = async (t: Theme) => {
    setChosen(t);
    applyTheme(t);
    if (data.can("settings")) {
      localStorage.removeItem("volli.theme");
      try {
        if (t === "system") await ok(api.DELETE("/v1/settings/{key}", { params: { path: { key: "ui.theme" } } }));
        else await ok(api.PUT("/v1/settings/{key}", { params: { path: { key: "ui.theme" } }, body: { value: t } }));
        data.settings.update((s) => {
          const { ["ui.theme"]: _old, ...rest } = s;
          return t === "system" ? rest : { ...rest, "ui.theme": t };
        });
      } catch (e) {
        setError(errorText(e));
      }
    } else {
      localStorage.setItem("volli.theme", t);
      data.settings.update((s) => ({ ...s }));
    }
  };
  const pages = ADMIN_PAGES.filter(([, , scope]) => adminVisible(scope));
  return (
    <section class="screen" aria-labelledby="page-title">
      <Bar back="#/">
        <h1 id="page-title" tabIndex={-1}>
          Settings
        </h1>
      </Bar>
      <div class="screen-body">
        <a class="chat profile-link" href="#/profile">
          <Avatar id={m.node?.user_id ?? "me"} name={name} url={m.avatar} size={56} />
          <span class="chat-main">
            <span class="chat-title">{name}</span>
            <span class="preview">Profile: your name, picture and user id</span>
          </span>
        </a>

        <section class="panel" aria-labelledby="backup-link-h">
          <h2 id="backup-link-h">Backup</h2>
          <ul class="plain links">
            <li>
              <a href="#/backup">
                <span>
                  Backup held by friends
                  <span class="muted small block">An encrypted copy on your friends' nodes, restored with a recovery phrase</span>
                </span>{" "}
                <Icon name="back" />
              </a>
            </li>
          </ul>
        </section>

        <section class="panel" aria-labelledby="notify-h">
          <h2 id="notify-h">Notifications</h2>
          {pushState === "unsupported" ? (
            <p class="muted">This browser cannot show notifications while the app is closed.</p>
          ) : pushState === "blocked" ? (
            <p class="muted">Notifications are blocked for this app; allow them in the browser's site settings.</p>
          ) : (
            <div class="row spread">
              <span>{pushState === "on" ? "This device is notified of new messages." : "This device is not notified while the app is closed."}</span>
              <button
                type="button"
                class={pushState === "on" ? "secondary" : ""}
                disabled={busy}
                onClick={() => {
                  setBusy(true);
                  setError(null);
                  (pushState === "on" ? disablePush() : enablePush())
                    .catch((e) => setError(errorText(e)))
                    .finally(() => setBusy(false));
                }}
              >
                {pushState === "on" ? "Turn off" : "Turn on notifications"}
              </button>
            </div>
          )}
          <label class="inline switch">
            <input type="checkbox" checked={soundOn} onChange={(e) => setSound(e.currentTarget.checked)} /> Play a sound for new messages while the app is open
          </label>
          <p class="muted small">Muted chats stay quiet; mute one from its page.</p>
        </section>

        <section class="panel" aria-labelledby="privacy-h">
          <h2 id="privacy-h">Privacy</h2>
          <label class="inline switch">
            <input
              type="checkbox"
              checked={receipts}
              disabled={!data.can("settings") || busy}
              onChange={(e) => {
                const on = e.currentTarget.checked;
                setReceiptsChosen(on);
                setBusy(true);
                setError(null);
                // On is the default: the setting is only stored when it is off.
                data
                  .setSetting("receipts.read", on ? undefined : false)
                  .catch((err) => (setError(errorText(err)), setReceiptsChosen(null)))
                  .finally(() => setBusy(false));
              }}
            />{" "}
            Send read receipts
          </label>
          <p class="muted small">
            {receipts ? "The people you chat with see when you have read their messages." : "Nobody sees when you have read their messages; your own devices still do."}
            {!data.can("settings") && " This login cannot change it."}
          </p>
        </section>

        <section class="panel" aria-labelledby="theme-h">
          <h2 id="theme-h">Appearance</h2>
          <fieldset class="segmented">
            <legend>Theme</legend>
            {(["system", "light", "dark"] as const).map((t) => (
              <label key={t} class="inline">
                <input type="radio" name="theme" value={t} checked={theme === t} onChange={() => void setTheme(t)} /> {t === "system" ? "As the system" : t === "light" ? "Light" : "Dark"}
              </label>
            ))}
          </fieldset>
        </section>

        {pages.length > 0 && (
          <section class="panel" aria-labelledby="node-h">
            <h2 id="node-h">Your node</h2>
            <ul class="plain links">
              {pages.map(([id, label]) => (
                <li key={id}>
                  <a href={`#/admin/${id}`}>
                    {label} <Icon name="back" />
                  </a>
                </li>
              ))}
            </ul>
          </section>
        )}

        <section class="panel" aria-labelledby="keys-h">
          <h2 id="keys-h">Keyboard shortcuts</h2>
          <dl class="keys">
            <dt>
              <kbd>Ctrl</kbd> <kbd>K</kbd>
            </dt>
            <dd>Search chats</dd>
            <dt>
              <kbd>Alt</kbd> <kbd>↑</kbd> / <kbd>↓</kbd>
            </dt>
            <dd>Previous or next chat</dd>
            <dt>
              <kbd>Ctrl</kbd> <kbd>Alt</kbd> <kbd>N</kbd>
            </dt>
            <dd>New chat</dd>
            <dt>
              <kbd>↑</kbd>
            </dt>
            <dd>Edit your last message (in an empty composer)</dd>
            <dt>
              <kbd>Esc</kbd>
            </dt>
            <dd>Close a menu, cancel a reply, go back</dd>
          </dl>
        </section>

        <section class="panel">
          <p class="muted small">
            Logged in {session.kind() === "admin" ? "as the node's administrator until this tab closes" : `on this device with ${session.scopes().join(", ")}`}. Volli node {m.node?.version}.
          </p>
          <button type="button" class="secondary" onClick={onLogout}>
            Log out
          </button>
        </section>
        <ErrorNote error={error} />
      </div>
    </section>
  );
}
