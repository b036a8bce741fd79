// Retention rules: how long messages are kept, by default (settings page) and per
// conversation (conversation page). The node checks them; its message is shown as it is.
import { useState } from "preact/hooks";
import { api, ok, type S } from "../client";
import { ErrorNote, useAction, useLoad } from "../ui";

export type Rule = S["Rule"];
export type Rules = S["Rules"];

export function useRetention() {
  return useLoad(() => ok(api.GET("/v1/retention")), ["settings", "messages"]);
}

export async function saveRules(rules: Rules): Promise<Rules> {
  return ok(api.PUT("/v1/retention", { body: rules }));
}

/** "Keep everything" or the rule's limits, in words. */
export function describe(rule: Rule | undefined): string {
  const parts = [];
  if (rule?.days) parts.push(`${rule.days} day${rule.days === 1 ? "" : "s"}`);
  if (rule?.keep_last) parts.push(`the last ${rule.keep_last}`);
  return parts.length ? `Keeps ${parts.join(", at most ")}` : "Keeps every message";
}

function number(text: string): number | undefined {
  const t = text.trim();
  return t === "" ? undefined : Number(t);
}

/** Edits one rule: empty fields mean no limit. */
export function RuleForm(props: {
  rule: Rule | undefined;
  title: string;
  save: (rule: Rule) => Promise<void>;
  extra?: preact.ComponentChildren;
}) {
  const [days, setDays] = useState(props.rule?.days?.toString() ?? "");
  const [last, setLast] = useState(props.rule?.keep_last?.toString() ?? "");
  const action = useAction();
  return (
    <form
      class="panel"
      data-testid="retention"
      onSubmit={(e) => {
        e.preventDefault();
        void action.run(async () => {
          const rule: Rule = {};
          const d = number(days);
          const n = number(last);
          if (d !== undefined) rule.days = d;
          if (n !== undefined) rule.keep_last = n;
          await props.save(rule);
        });
      }}
    >
      <h2>{props.title}</h2>
      <p class="muted">
        {describe(props.rule)}. Older messages are deleted on all of your devices; empty fields mean no limit.
      </p>
      <div class="row">
        <label>
          Days to keep
          <input type="number" min={1} inputMode="numeric" value={days} onInput={(e) => setDays(e.currentTarget.value)} />
        </label>
        <label>
          Newest messages to keep
          <input type="number" min={1} inputMode="numeric" value={last} onInput={(e) => setLast(e.currentTarget.value)} />
        </label>
      </div>
      <div class="row">
        <button type="submit" disabled={action.busy}>
          Save
        </button>
        {props.extra}
      </div>
      <ErrorNote error={action.error} />
    </form>
  );
}
