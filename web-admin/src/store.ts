// Stores: a value and who listens to it. Each concern (the chat list, a timeline, contacts…)
// has one, fed by the API and the event stream; views only render what stores hold.
import { useLayoutEffect, useReducer, useRef } from "preact/hooks";

export class Store<T> {
  #subs = new Set<() => void>();
  constructor(public value: T) {}
  set(value: T) {
    if (value === this.value) return;
    this.value = value;
    for (const f of [...this.#subs]) f();
  }
  update(f: (v: T) => T) {
    this.set(f(this.value));
  }
  subscribe(f: () => void): () => void {
    this.#subs.add(f);
    return () => this.#subs.delete(f);
  }
}

/** The store's value, re-rendering the component when it changes. */
export function useStore<T>(store: Store<T>): T {
  const [, force] = useReducer((n: number) => n + 1, 0);
  const seen = useRef(store.value);
  seen.current = store.value;
  useLayoutEffect(() => {
    if (seen.current !== store.value) force(0);
    return store.subscribe(() => force(0));
  }, [store]);
  return store.value;
}

// A small key-value table in IndexedDB: what the app last had, for opening offline.
const DB = "volli";
let db: Promise<IDBDatabase> | null = null;
function open(): Promise<IDBDatabase> {
  db ??= new Promise((resolve, reject) => {
    const r = indexedDB.open(DB, 1);
    r.onupgradeneeded = () => r.result.createObjectStore("kv");
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
  return db;
}

export const idb = {
  async get<T>(key: string): Promise<T | undefined> {
    const d = await open();
    return new Promise((resolve, reject) => {
      const r = d.transaction("kv").objectStore("kv").get(key);
      r.onsuccess = () => resolve(r.result as T | undefined);
      r.onerror = () => reject(r.error);
    });
  },
  async set(key: string, value: unknown): Promise<void> {
    const d = await open();
    return new Promise((resolve, reject) => {
      const t = d.transaction("kv", "readwrite");
      t.objectStore("kv").put(value, key);
      t.oncomplete = () => resolve();
      t.onerror = () => reject(t.error);
    });
  },
  async clear(): Promise<void> {
    const d = await open();
    return new Promise((resolve, reject) => {
      const t = d.transaction("kv", "readwrite");
      t.objectStore("kv").clear();
      t.oncomplete = () => resolve();
      t.onerror = () => reject(t.error);
    });
  },
};
