// The Node clients of benchmark 8: K stores and one follower, through a Hocuspocus server.
//
//   node client.mjs --url ws://127.0.0.1:PORT --db FILE --k K --per-store N [--rate R]
//
// Same documents and layout as benchmark 3b's light clients (benchmarks/b3_light.py):
// every store writes `sales/<store>/<period>` (root map "t": sale id -> the record's
// canonical JSON text) and `stock/<store>` (root map "t": "<sku>\x1f<client id>" ->
// [increments, decrements]), two transactions (two updates) per sale; HQ writes
// `catalog` once. Each store is one HocuspocusProviderWebsocket carrying its three
// documents; the follower is one more socket subscribed to every store's documents.
//
// --rate 0 (bulk): every store writes as fast as it can, round-robin, as 3b does.
// --rate R: every store writes R sales/s (the K stores staggered: K*R sales/s in all).
//
// Prints "START" on stdout when the first sale is about to be written (the driver
// samples the server's CPU time then), and when done one JSON line:
//   acked_s   every update acknowledged (SyncStatus) and the follower holds every sale
//   disk_s    the server's SQLite file holds every sale (read back and decoded here)
//   lat_*_ms  write-to-follower latency of each sale (same process, same clock)
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

import { HocuspocusProvider, HocuspocusProviderWebsocket } from "@hocuspocus/provider";
import Database from "better-sqlite3";
import WebSocket from "ws";
import * as Y from "yjs";

const { values } = parseArgs({
  options: {
    url: { type: "string" },
    db: { type: "string" },
    k: { type: "string", default: "1" },
    "per-store": { type: "string", default: "100" },
    rate: { type: "string", default: "0" },
    timeout: { type: "string", default: "120" },
    skus: { type: "string", default: "20" },
  },
});
const K = Number(values.k);
const PER_STORE = Number(values["per-store"]);
const RATE = Number(values.rate);
const TIMEOUT_MS = Number(values.timeout) * 1000;
const SKUS = Number(values.skus);
const SEP = "\x1f";
const ROOT = "t";
const d = new Date();
const PERIOD = `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const tick = () => new Promise((resolve) => setImmediate(resolve));
const sku = (i) => `SKU-${String(i).padStart(5, "0")}`;

async function until(pred, deadline, interval = 2) {
  while (!pred()) {
    if (performance.now() > deadline) return false;
    await sleep(interval);
  }
  return true;
}

function socket() {
  return new HocuspocusProviderWebsocket({ url: values.url, WebSocketPolyfill: WebSocket });
}

function open(ws, name) {
  const provider = new HocuspocusProvider({
    websocketProvider: ws,
    name,
    document: new Y.Doc(),
    token: "bench",
  });
  provider.attach();
  return provider;
}

const setupDeadline = performance.now() + 60_000;
const allProviders = [];
async function synced(providers) {
  allProviders.push(...providers);
  const ok = await until(() => providers.every((p) => p.isSynced), setupDeadline);
  if (!ok) throw new Error("providers did not sync within 60 s");
}

// HQ writes the catalog (LWW layout: "<sku>\x1f<field>\x1f<writer>" -> [wall, counter, by, json, field, seen]).
const hq = open(socket(), "catalog");
await synced([hq]);
hq.document.transact(() => {
  const root = hq.document.getMap(ROOT);
  const now = Date.now();
  for (let i = 0; i < SKUS; i++) {
    root.set(`${sku(i)}${SEP}name${SEP}${hq.document.clientID}`, [now, i, "hq", `"Producto ${i}"`, "name", null]);
    root.set(`${sku(i)}${SEP}price_cents${SEP}${hq.document.clientID}`, [now, i, "hq", "450", "price_cents", null]);
  }
});

// The follower holds every store's documents; sale ids -> write time give the latency.
const written = new Map();
const latencies = [];
let followerSales = 0;
const followerWs = socket();
const followed = [open(followerWs, "catalog")];
for (let i = 0; i < K; i++) {
  const name = `store-${String(i).padStart(2, "0")}`;
  const sales = open(followerWs, `sales/${name}/${PERIOD}`);
  sales.document.getMap(ROOT).observe((event) => {
    const now = performance.now();
    for (const key of event.keysChanged) {
      followerSales += 1;
      const t = written.get(key);
      if (t !== undefined) latencies.push(now - t);
    }
  });
  followed.push(sales, open(followerWs, `stock/${name}`));
}
await synced(followed);

const stores = [];
for (let i = 0; i < K; i++) {
  const name = `store-${String(i).padStart(2, "0")}`;
  const ws = socket();
  const store = {
    name,
    catalog: open(ws, "catalog"),
    sales: open(ws, `sales/${name}/${PERIOD}`),
    stock: open(ws, `stock/${name}`),
    dec: new Map(),
  };
  stores.push(store);
}
await synced(stores.flatMap((s) => [s.catalog, s.sales, s.stock]));
for (const s of stores) {
  // stock first, so that no sale goes below zero (as 3b does)
  const doc = s.stock.document;
  doc.transact(() => {
    for (let i = 0; i < SKUS; i++) doc.getMap(ROOT).set(`${sku(i)}${SEP}${doc.clientID}`, [1e9, 0]);
  });
}
await until(() => stores.every((s) => s.stock.unsyncedChanges === 0), setupDeadline);

function sell(s, idx, n) {
  const item = sku((n + idx) % SKUS);
  const salesDoc = s.sales.document;
  const stockDoc = s.stock.document;
  const id = `${Date.now().toString(16).padStart(11, "0")}-${n.toString(16)}-${salesDoc.clientID.toString(16)}`;
  written.set(id, performance.now());
  salesDoc.transact(() => {
    salesDoc.getMap(ROOT).set(id, JSON.stringify({ by: s.name, l: [[item, 1, 450]] }));
  });
  const dec = (s.dec.get(item) ?? 0) + 1;
  s.dec.set(item, dec);
  stockDoc.transact(() => {
    stockDoc.getMap(ROOT).set(`${item}${SEP}${stockDoc.clientID}`, [1e9, dec]);
  });
}

const total = K * PER_STORE;
process.stdout.write("START\n");
const t0 = performance.now();
const deadline = t0 + TIMEOUT_MS;
if (RATE > 0) {
  const interval = 1000 / (K * RATE);
  for (let j = 0; j < total; ) {
    const now = performance.now();
    while (j < total && t0 + j * interval <= now) {
      sell(stores[j % K], j % K, Math.floor(j / K));
      j += 1;
    }
    if (j < total) await sleep(Math.max(0, t0 + j * interval - performance.now()));
  }
} else {
  for (let n = 0; n < PER_STORE; n++) {
    for (let i = 0; i < K; i++) sell(stores[i], i, n);
    await tick();
  }
}
const produced = performance.now();

const acked = () =>
  followerSales >= total &&
  stores.every((s) => s.sales.unsyncedChanges === 0 && s.stock.unsyncedChanges === 0);
const ackOk = await until(acked, deadline, 1);
const ackedAt = performance.now();

// Read the server's file back (read-only, a second connection) until it holds every sale.
const names = stores.map((s) => `sales/${s.name}/${PERIOD}`);
let onDisk = 0;
function countOnDisk() {
  let db;
  try {
    db = new Database(values.db, { readonly: true, fileMustExist: true, timeout: 5000 });
    const select = db.prepare('SELECT data FROM "documents" WHERE name = ?');
    let n = 0;
    for (const name of names) {
      const row = select.get(name);
      if (row === undefined) continue;
      const doc = new Y.Doc();
      Y.applyUpdate(doc, row.data);
      n += doc.getMap(ROOT).size;
      doc.destroy();
    }
    return n;
  } catch {
    return 0; // not created yet, or the schema not there yet
  } finally {
    db?.close();
  }
}
const diskOk = await until(
  () => {
    onDisk = countOnDisk();
    return onDisk >= total;
  },
  deadline,
  20,
);
const diskAt = performance.now();

latencies.sort((a, b) => a - b);
const pct = (q) => (latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : null);
const seconds = (t) => (t - t0) / 1000;
process.stdout.write(
  `${JSON.stringify({
    k: K,
    sales: total,
    rate_per_store: RATE,
    produce_s: seconds(produced),
    acked_s: seconds(ackedAt),
    disk_s: seconds(diskAt),
    acked_per_s: (ackOk ? total : followerSales) / seconds(ackedAt),
    disk_per_s: (diskOk ? total : onDisk) / seconds(diskAt),
    follower_sales: followerSales,
    on_disk: onDisk,
    complete: ackOk && diskOk,
    latency_n: latencies.length,
    lat_p50_ms: pct(0.5),
    lat_p99_ms: pct(0.99),
  })}\n`,
);
for (const p of allProviders) p.destroy();
process.exit(0);
