// The real `yjs` + `y-websocket` npm packages against a live relay (driven by
// tests/e2e/test_yjs_node.py, which starts the relay and a POS and checks what this
// prints).  The follow/decode module it runs is the ```js block of docs/yjs.md, so
// the page's snippet is what is tested.
//
// Input: TIENDASYNC_NODE_CONFIG (JSON: relay, tenant, location, tokens, cap, flood, crowd,
// crowdSeconds) and,
// on stdin, JSON lines from the test ({"done": true, "expect": {...}} ends the run).
// Output: one JSON object a line on stdout ({"event": ...}); the last is the summary.

import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import WebSocket from 'ws'

const config = JSON.parse(process.env.TIENDASYNC_NODE_CONFIG)
const started = Date.now()
const now = () => (Date.now() - started) / 1000
const say = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ event, t: now(), ...fields }) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

// -- the snippet of docs/yjs.md, as a module -------------------------------------------
const page = readFileSync(new URL('../../../docs/yjs.md', import.meta.url), 'utf8')
const blocks = [...page.matchAll(/^```js\n([\s\S]*?)^```$/gm)].map((m) => m[1])
if (blocks.length !== 1) throw new Error(`docs/yjs.md: expected one js block, found ${blocks.length}`)
const generated = new URL('.generated/', import.meta.url)
mkdirSync(generated, { recursive: true })
writeFileSync(new URL('yjs-doc.mjs', generated), blocks[0])
const lib = await import(new URL('yjs-doc.mjs', generated))

// -- one follower, with everything y-websocket tells about its connection ----------------
function watch (name, docName, token, { presence = null } = {}) {
  // attempts: the constructor's first connection (its 'connecting' is emitted before we
  // listen), then one per reconnection
  const w = { name, attempts: 1, closes: [], disconnects: 0, closed: null, synced: false }
  w.provider = lib.follow({
    relay: config.relay,
    tenant: config.tenant,
    doc: docName,
    token,
    WebSocket,
    onChange: (doc) => { w.doc = doc },
    onClosed: (event) => {
      w.closed = { code: event.code, reason: event.reason, t: now() }
      say('closed', { name, ...w.closed })
    }
  })
  w.doc = w.provider.doc
  const p = w.provider
  if (presence !== null) p.awareness.setLocalState(presence)
  p.on('status', ({ status }) => {
    if (status === 'connecting') w.attempts++
    if (status === 'disconnected') w.disconnects++
  })
  p.on('connection-close', (event) => {
    const close = { code: event?.code ?? null, reason: event?.reason ?? 'closed locally', t: now() }
    w.closes.push(close)
    say('connection-close', { name, ...close })
  })
  p.on('sync', (synced) => {
    if (synced && !w.synced) say('synced', { name })
    w.synced = w.synced || synced
  })
  return w
}

const until = async (what, predicate, seconds = 15) => {
  const deadline = Date.now() + seconds * 1000
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(50)
  }
}

const tokens = config.tokens
const stockDoc = `stock/${config.location}`

// A dashboard of stock, presence announced; another one on the same document; an idle
// catalog follower with no presence at all (only the relay's keepalives reach it).
const live = watch('live', stockDoc, tokens.live, { presence: { user: 'dash-live' } })
const peer = watch('peer', stockDoc, tokens.peer, { presence: { user: 'dash-peer' } })
const idle = watch('idle', 'catalog', tokens.idle)
// Refusals: a bad token, a write on the read-only endpoint.
const bad = watch('bad', stockDoc, 'not-a-token')
const ro = watch('ro', stockDoc, tokens.ro)

let lastStock = null
live.provider.doc.on('update', () => {
  const stock = lib.stockLevels(live.provider.doc)
  const text = JSON.stringify(stock)
  if (text !== lastStock) {
    lastStock = text
    say('stock', { stock })
  }
})
const seenByLive = new Set()
live.provider.awareness.on('change', () => {
  for (const state of live.provider.awareness.getStates().values()) {
    if (state && state.user) seenByLive.add(state.user)
  }
})

await until('the followers to sync', () => live.synced && peer.synced && idle.synced && ro.synced)
say('ready', { stock: lib.stockLevels(live.provider.doc), catalog: lib.records(idle.provider.doc) })

// A crowd on one token, many more than its cap, for config.crowdSeconds while the rest
// goes on: the refused ones must stop at once (4429), not retry and flood the sync log.
const crowdRun = (async () => {
  const crowd = []
  for (let i = 0; i < config.crowd; i++) crowd.push(watch(`crowd${i}`, 'locations', tokens.crowd))
  await sleep(config.crowdSeconds * 1000)
  const out = {
    attempts: crowd.reduce((n, w) => n + w.attempts, 0),
    synced: crowd.filter((w) => w.synced).length,
    codes: crowd.map((w) => (w.closed ? w.closed.code : null))
  }
  for (const w of crowd) w.provider.destroy()
  return out
})()

// The read-only endpoint: a local write is refused for good (4403), not retried.
ro.provider.doc.getMap(lib.ROOT).set(`EVIL${lib.SEP}1`, [1000, 0])

// One token over its connection cap: the refused connection is not retried (4429).
const cap = []
for (let i = 0; i < config.cap + 1; i++) cap.push(watch(`cap${i}`, 'locations', tokens.cap))
await until('the over-cap refusal', () => cap.some((w) => w.closed !== null), 10)
await sleep(3000)
const capSummary = cap.map((w) => ({ attempts: w.attempts, closed: w.closed, synced: w.synced }))
for (const w of cap) w.provider.destroy()

// A flood of messages: the rate-limit close (4029, retried by y-websocket) is prompt.
const flood = watch('flood', 'locations', tokens.flood)
await until('the flood follower to sync', () => flood.synced)
const floodStart = now()
const ws = flood.provider.ws
const empty = new Uint8Array([1, 1, 0]) // an awareness message with no entries
for (let i = 0; i < config.flood; i++) ws.send(empty)
await until('the rate-limit close', () => flood.closes.length > 0, 20)
const floodClose = { ...flood.closes[0], after: flood.closes[0].t - floodStart }
flood.provider.destroy()

// The presence peer leaves after a while: live sees it go.
await sleep(15000)
const sawPeer = seenByLive.has('dash-peer')
peer.provider.destroy()
await until('the peer to leave', () =>
  ![...live.provider.awareness.getStates().values()].some((s) => s && s.user === 'dash-peer'), 10)
const peerLeft = now()

// Until the test says it is done (it sells meanwhile), then the final stock.
const input = createInterface({ input: process.stdin })
const done = await new Promise((resolve) => {
  input.on('line', (line) => {
    const message = JSON.parse(line)
    if (message.done) resolve(message)
  })
})
await until('the final stock', () => JSON.stringify(lib.stockLevels(live.provider.doc)) ===
  JSON.stringify(done.expect), 15).catch(() => {})

const crowdSummary = await crowdRun
const who = (w) => ({ attempts: w.attempts, disconnects: w.disconnects, closes: w.closes, closed: w.closed })
say('summary', {
  live: { ...who(live), stock: lib.stockLevels(live.provider.doc), saw: [...seenByLive].sort() },
  peer: { sawPeer, peerLeft },
  idle: who(idle),
  bad: who(bad),
  ro: { ...who(ro), evilReachedLive: live.provider.doc.getMap(lib.ROOT).has(`EVIL${lib.SEP}1`) },
  cap: capSummary,
  flood: floodClose,
  crowd: crowdSummary
})
for (const w of [live, idle, bad, ro]) w.provider.destroy()
process.exit(0)
