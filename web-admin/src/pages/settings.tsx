import { useState } from "preact/hooks";
import { api, ok } from "../client";
import { Confirm, Empty, ErrorNote, Loaded, Page, useAction, useLoad } from "../ui";
import { RuleForm, saveRules, useRetention } from "./retention";

export function Settings() {
  const state = useLoad(() => ok(api.GET("/v1/settings")), ["settings"]);
  return (
    <Page title="Settings">
      <DefaultRetention />
      <p class="muted">Settings are synced to all of your devices. Values are JSON.</p>
      <Loaded state={state} what="settings">
        {(s) => {
          const entries = Object.entries(s.settings as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b));
          return entries.length === 0 ? (
            <Empty>No settings yet.</Empty>
          ) : (
            <ul class="plain">
              {entries.map(([key, value]) => (
                <SettingRow key={key} name={key} value={value} onChange={state.reload} />
              ))}
            </ul>
          );
        }}
      </Loaded>
      <SettingForm onSaved={state.reload} />
    </Page>
  );
}

function DefaultRetention() {
  const rules = useRetention();
  return (
    <Loaded state={rules} what="retention rules">
      {(r) => (
        <RuleForm
          key={JSON.stringify(r.default)}
          title="Message retention"
          rule={r.default}
          save={async (rule) => {
            await saveRules({ ...r, default: rule });
            await rules.reload();
          }}
        />
      )}
    </Loaded>
  );
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`This is not valid JSON: ${(e as Error).message}`);
  }
}

function SettingRow(props: { name: string; value: unknown; onChange: () => void }) {
  const [text, setText] = useState(JSON.stringify(props.value));
  const action = useAction();
  return (
    <li class="panel" data-testid="setting">
      <form
        class="row"
        onSubmit={(e) => {
          e.preventDefault();
          void action.run(async () => {
            await ok(api.PUT("/v1/settings/{key}", { params: { path: { key: props.name } }, body: { value: parse(text) } }));
            props.onChange();
          });
        }}
      >
        <label class="grow">
          <code>{props.name}</code>
          <input class="code" value={text} onInput={(e) => setText(e.currentTarget.value)} />
        </label>
        <button type="submit" class="small" disabled={action.busy}>
          Save
        </button>
        <Confirm
          label="Delete"
          confirm={`Delete ${props.name}`}
          onConfirm={() =>
            action.run(async () => {
              await ok(api.DELETE("/v1/settings/{key}", { params: { path: { key: props.name } } }));
              props.onChange();
            })
          }
        />
      </form>
      <ErrorNote error={action.error} />
    </li>
  );
}

function SettingForm({ onSaved }: { onSaved: () => void }) {
  const [key, setKey] = useState("");
  const [text, setText] = useState("");
  const action = useAction();
  return (
    <form
      class="panel"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          await ok(api.PUT("/v1/settings/{key}", { params: { path: { key: key.trim() } }, body: { value: parse(text) } }));
          setKey("");
          setText("");
          onSaved();
        });
      }}
    >
      <h2>Add a setting</h2>
      <div class="row">
        <label>
          Key
          <input required value={key} onInput={(e) => setKey(e.currentTarget.value)} placeholder="theme" />
        </label>
        <label class="grow">
          Value (JSON)
          <input class="code" required value={text} onInput={(e) => setText(e.currentTarget.value)} placeholder='"dark"' />
        </label>
      </div>
      <button type="submit" disabled={action.busy}>
        Save
      </button>
      <ErrorNote error={action.error} />
    </form>
  );
}
