// The Hocuspocus peer of benchmark 8: @hocuspocus/server with @hocuspocus/extension-sqlite.
//
//   node server.mjs --db FILE --port-file FILE --setting default|every-change
//
// default: Hocuspocus's own settings (debounce 2 s, maxDebounce 10 s): an update is
// acknowledged (SyncStatus) as soon as it is applied in memory and the document is
// stored later. every-change: debounce 0 and maxDebounce 0, so every change stores
// the document (the whole Yjs state, one upsert) at once; the acknowledgement still
// goes out when the update is applied, before that store finishes.
// Listens on 127.0.0.1 on a free port and writes the port to --port-file.
import { writeFileSync } from "node:fs";
import { parseArgs } from "node:util";

import { SQLite } from "@hocuspocus/extension-sqlite";
import { Server } from "@hocuspocus/server";

const { values } = parseArgs({
  options: {
    db: { type: "string" },
    "port-file": { type: "string" },
    setting: { type: "string", default: "default" },
  },
});
if (!values.db || !values["port-file"]) {
  console.error("usage: node server.mjs --db FILE --port-file FILE [--setting default|every-change]");
  process.exit(2);
}
const settings = {
  default: {},
  "every-change": { debounce: 0, maxDebounce: 0 },
}[values.setting];
if (settings === undefined) {
  console.error(`unknown --setting ${values.setting}`);
  process.exit(2);
}

const server = new Server({
  address: "127.0.0.1",
  port: 0,
  quiet: true,
  stopOnSignals: true,
  ...settings,
  extensions: [new SQLite({ database: values.db })],
});
await server.listen();
writeFileSync(values["port-file"], String(server.address.port));
