"""The relay's web console in a real browser (headless Chromium over the DevTools protocol).

A relay and two POS processes (examples/demo.py's helpers) sell the last unit
of milk while offline, which opens one conflict.  The test logs into the
console with the admin token, finds the conflict in the queue, opens it,
voids one of the two sales with a checkbox and a click, and checks through
the stores that everything converges.  Clicks and typing are real input
events (``Input.dispatchMouseEvent`` / ``Input.insertText``), not
``element.click()``.

Chromium is required: the test FAILS (it does not skip) when
``/usr/bin/chromium`` (or ``$TIENDASYNC_CHROMIUM``) is missing; ``make test``
installs it first (``scripts/prereqs.sh``).  ``TIENDASYNC_SCREENSHOTS=1`` also writes the
screenshots used by ``docs/console.md`` into ``docs/img/console-*.png``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import demo  # noqa: E402  (examples/demo.py: Store, free_port, tiendasync, admin)

from tests.support.processes import Pos  # noqa: E402
from tiendasync.model.actions import ACTIONS  # noqa: E402
from tiendasync.model.docnames import DATA_TYPES  # noqa: E402

CHROMIUM = os.environ.get("TIENDASYNC_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("TIENDASYNC_SCREENSHOTS") == "1"
IMG_DIR = ROOT / "docs" / "img"
HOST = demo.HOST
#: a landscape tablet (and the size of the docs' screenshots)
VIEWPORT = (1180, 820)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]

pytestmark = pytest.mark.timeout(120)


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.1)


# -- the browser ---------------------------------------------------------------------------


class CDPError(RuntimeError):
    pass


#: Runs in every page the browser loads: records each error the console's notice bar
#: shows, however briefly (a poll clears it 2 s later), in sessionStorage.
_NOTICE_RECORDER = """
document.addEventListener('DOMContentLoaded', () => {
  const el = document.getElementById('notice');
  if (!el) return;
  new MutationObserver(() => {
    if (el.hidden || !el.textContent || !el.classList.contains('notice-error')) return;
    const seen = JSON.parse(sessionStorage.getItem('test.notices') || '[]');
    if (seen[seen.length - 1] !== el.textContent) seen.push(el.textContent);
    sessionStorage.setItem('test.notices', JSON.stringify(seen));
  }).observe(el, { childList: true, characterData: true, subtree: true, attributes: true });
});
"""


class Chromium:
    """Headless Chromium driven over one DevTools websocket (flattened page session)."""

    def __init__(self, profile: Path) -> None:
        self.proc = subprocess.Popen(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
        )
        self.stderr_tail: list[str] = []
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._drain, args=(lines,), daemon=True).start()
        url = None
        deadline = time.monotonic() + 30
        while url is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line.startswith("DevTools listening on "):
                url = line.split(" on ", 1)[1].strip()
            elif time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise AssertionError(
                    "chromium did not print its DevTools URL:\n" + "".join(self.stderr_tail[-20:])
                )
        self._exit = contextlib.ExitStack()
        self.ws: ClientConnection = self._exit.enter_context(
            connect(url, max_size=None, open_timeout=10)
        )
        self._next = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Page.addScriptToEvaluateOnNewDocument", {"source": _NOTICE_RECORDER})
        self._viewport(*VIEWPORT)

    def _drain(self, lines: queue.Queue[str]) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # keep reading: a full pipe would block chromium
            self.stderr_tail = [*self.stderr_tail[-50:], line]
            lines.put(line)

    def close(self) -> None:
        exit_stack = getattr(self, "_exit", None)
        if exit_stack is not None:
            exit_stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    # -- protocol --------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0) -> Any:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if self.session is not None:
            message["sessionId"] = self.session
        self.ws.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while True:
            raw = self.ws.recv(timeout=max(0.01, deadline - time.monotonic()))
            answer = json.loads(raw)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise CDPError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def js(self, expression: str) -> Any:
        """Evaluate in the page (promises awaited) and return the JSON value."""
        result = self.call(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise CDPError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 20.0) -> Any:
        return wait_until(lambda: self.js(expression), what, timeout)

    def error_notices(self) -> list[str]:
        """Every error the console showed in its notice bar (kept across reloads)."""
        seen: list[str] = json.loads(
            self.js("sessionStorage.getItem('test.notices') || '[]'") or "[]"
        )
        return seen

    def page_errors(self) -> list[str]:
        out = []
        for ev in self.events:
            if ev.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(ev["params"]["exceptionDetails"])[:500])
            elif ev.get("method") == "Runtime.consoleAPICalled" and ev["params"]["type"] in (
                "error",
                "assert",
            ):
                out.append(json.dumps(ev["params"]["args"])[:500])
        return out

    # -- user actions ----------------------------------------------------------------------

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", {"url": url})

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (scrolled into view)."""
        box = self.wait(
            f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
                if (!el) return null;
                el.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = el.getBoundingClientRect();
                if (!r.width || !r.height) return null;
                return {{x: r.left + r.width / 2, y: r.top + r.height / 2}}; }})()""",
            f"a visible {selector}",
        )
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                {
                    "type": kind,
                    "x": box["x"],
                    "y": box["y"],
                    "button": "left",
                    "buttons": 0 if kind == "mouseReleased" else 1,
                    "clickCount": 1,
                },
            )

    def type_into(self, selector: str, text: str) -> None:
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", {"text": text})

    def press_enter(self) -> None:
        self.call(
            "Input.dispatchKeyEvent",
            {
                "type": "keyDown",
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
                "text": "\r",
            },
        )
        self.call(
            "Input.dispatchKeyEvent",
            {"type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13},
        )

    def _viewport(self, width: int, height: int, mobile: bool = False) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )

    def screenshot(self, name: str, *, full_page: bool = True) -> None:
        if not SCREENSHOTS:
            return
        self.js("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        width, height = self.js("[window.innerWidth, window.innerHeight]")
        if full_page:  # grow the viewport to the page, shoot, and put it back
            full = int(self.js("document.documentElement.scrollHeight"))
            self._viewport(width, max(height, full))
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        if full_page:
            self._viewport(width, height)
        IMG_DIR.mkdir(parents=True, exist_ok=True)
        (IMG_DIR / f"console-{name}.png").write_bytes(base64.b64decode(data))


# -- the cluster (relay + two tills), as in examples/demo.py ----------------------------------


class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stores: list[demo.Store] = []
        self.relay: subprocess.Popen[str] | None = None
        relay_db = str(workdir / "relay.db")
        self.relay_db = relay_db
        self.port, self.admin_port = demo.free_port(), demo.free_port()
        self.tokens = {
            r: demo.tiendasync(
                "relay", "token", "add", "--db", relay_db, "--tenant", "acme", "--replica", r
            )
            for r in ("caja-1", "caja-2")
        }
        self.admin_token = demo.tiendasync("relay", "token", "add", "--db", relay_db, "--admin")
        with (workdir / "relay.log").open("w") as relay_log:
            self.relay = subprocess.Popen(
                [
                    demo.PY,
                    "-m",
                    "tiendasync",
                    "relay",
                    "--db",
                    relay_db,
                    "--host",
                    HOST,
                    "--port",
                    str(self.port),
                    "--admin-port",
                    str(self.admin_port),
                ],
                stdout=subprocess.DEVNULL,
                stderr=relay_log,
                text=True,
            )
        wait_until(self._up, "the relay's admin port answers")
        url = f"ws://{HOST}:{self.port}"
        self.caja1 = demo.Store(workdir, "caja-1", url, self.tokens["caja-1"])
        self.caja2 = demo.Store(workdir, "caja-2", url, self.tokens["caja-2"])
        self.stores = [self.caja1, self.caja2]

    @property
    def console_url(self) -> str:
        return f"http://{HOST}:{self.admin_port}/console/"

    def _up(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.admin_port}/healthz", timeout=1):
                return True
        except OSError:
            return False

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return demo.admin(self.admin_port, self.admin_token, method, path, body)

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.relay is not None and self.relay.poll() is None:
            self.relay.terminate()
            try:
                self.relay.wait(10)
            except subprocess.TimeoutExpired:
                self.relay.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()


@contextlib.contextmanager
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    """The browser, or a FAILED test (never a skip) when Chromium is not installed."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(
            f"the console test needs Chromium at {CHROMIUM} (Debian package "
            "`chromium`: apt-get install -y chromium; make test installs it), "
            "or set TIENDASYNC_CHROMIUM to another build",
            pytrace=False,
        )
    b = Chromium(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()


# -- the test ------------------------------------------------------------------------------


def test_static_console_needs_no_token_but_data_does(cluster: Cluster) -> None:
    with urllib.request.urlopen(cluster.console_url, timeout=5) as r:
        page = r.read().decode()
        assert r.status == 200 and "app.js" in page
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    for path in ("/api/sync/tenants/", "/api/sync/queue/C-x/sales/", "/api/sync/model/"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{HOST}:{cluster.admin_port}{path}", timeout=5)
        assert err.value.code == 401


def test_console_resolves_the_last_unit_conflict(cluster: Cluster, tmp_path: Path) -> None:
    with chromium(tmp_path) as browser:
        run_console_flow(cluster, browser)


def run_console_flow(cluster: Cluster, browser: Chromium) -> None:
    started = time.monotonic()
    caja1, caja2 = cluster.caja1, cluster.caja2
    tills = cluster.stores

    # The seed's flow: both tills sell the last unit of milk while offline.
    caja1.do("product CAFE-500 450 Café 500 g")
    caja1.do("product LECHE-1L 120 Leche 1 L")
    caja1.do("receive CAFE-500 10")
    caja1.do("receive LECHE-1L 1")
    for till in tills:
        till.do("online")
    for till in tills:
        till.do("wait-synced 20")
    wait_until(lambda: caja2.do("stock LECHE-1L") == 1, "caja-2 sees the last unit")
    for till in tills:
        till.do("offline")
    s1 = caja1.do("sell CAFE-500 2 LECHE-1L 1")["id"]
    s2 = caja2.do("sell LECHE-1L 1")["id"]
    for till in tills:
        till.do("online")
    for till in tills:
        till.do("wait-synced 20")

    # Log in (Spanish by default).
    browser.navigate(cluster.console_url)
    browser.wait("!!document.querySelector('#login-form input[type=password]')", "the login form")
    assert browser.js("document.documentElement.lang") == "es"
    assert (
        browser.js("document.querySelector('#login-form label').textContent")
        == "Token de administrador"
    )
    browser.screenshot("login", full_page=False)
    browser.type_into("#login-form input[type=password]", "not-the-token")
    browser.click("#login-submit")
    browser.wait(
        "/no válido/.test(document.querySelector('#login-error').textContent)",
        "a wrong token is refused",
    )
    browser.type_into("#login-form input[type=password]", cluster.admin_token)
    browser.press_enter()  # the form submits from the keyboard too
    browser.wait("location.hash === '#/conflicts'", "the console opens on the queue")
    assert browser.js("sessionStorage.getItem('tiendasync.console.token')") == cluster.admin_token

    # The queue finds the conflict by itself (polling).
    rows = browser.wait(
        """(() => { const rows = [...document.querySelectorAll('tr[data-conflict]')];
            return rows.length ? rows.map(r => ({id: r.dataset.conflict,
                                                 text: r.textContent})) : null; })()""",
        "the conflict appears in the queue",
    )
    assert len(rows) == 1, rows
    conflict_id = rows[0]["id"]
    assert "LECHE-1L" in rows[0]["text"] and "caja-1, caja-2" in rows[0]["text"]
    browser.wait(
        "document.querySelector('#open-count').textContent === '1'",
        "the nav badge counts one open conflict",
    )

    # Stores page: both online; edit a config through the form.
    browser.click("#mainnav a[data-route=stores]")
    browser.wait(
        "document.querySelectorAll('.store-card .badge-online').length === 2",
        "both tills show online",
    )
    browser.screenshot("stores")
    browser.click("[data-replica=caja-2] [data-action=edit-config]")
    # the priority inputs are the model's data types, in the table's order
    assert browser.js(
        "[...document.querySelectorAll('[data-replica=caja-2] input[data-type]')]"
        ".map(i => i.dataset.type)"
    ) == list(DATA_TYPES)
    browser.type_into("[data-replica=caja-2] input[name=interval_s]", "15")
    browser.type_into("[data-replica=caja-2] input[name=sales_months]", "6")
    browser.screenshot("stores-config")
    browser.click("[data-replica=caja-2] button[type=submit]")
    browser.wait(
        "/caja-2/.test(document.querySelector('[data-replica=caja-2] .inline-msg').textContent)",
        "the config is saved",
    )
    configs = {
        c["replica"]: c["config"] for c in cluster.api("GET", "/api/sync/config/")["results"]
    }
    assert configs["caja-2"]["interval_s"] == 15 and configs["caja-1"]["interval_s"] == 30
    assert configs["caja-2"]["sales_months"] == 6 and configs["caja-1"]["sales_months"] == 13
    browser.click("[data-replica=caja-1] [data-action=sync-now]")
    browser.wait(
        "/caja-1/.test(document.querySelector('[data-replica=caja-1] .inline-msg').textContent)",
        "sync now is requested",
    )

    # Sync log, filtered by store.
    browser.click("#mainnav a[data-route=log]")
    browser.wait("document.querySelectorAll('tr[data-session]').length >= 2", "the sync log")
    browser.screenshot("log")
    browser.js("""(() => { const s = document.querySelector('select[name=replica]');
                  s.value = 'caja-2'; s.dispatchEvent(new Event('change')); })()""")
    browser.wait(
        """(() => { const rows = [...document.querySelectorAll('tr[data-session]')];
                    return rows.length > 0
                           && rows.every(r => /caja-2/.test(r.textContent)); })()""",
        "the log shows only caja-2's sessions",
    )

    # Back to the queue, open the conflict.
    browser.click("#mainnav a[data-route=conflicts]")
    browser.wait("!!document.querySelector('tr[data-conflict]')", "the queue again")
    browser.screenshot("conflicts")
    browser.click(f"tr[data-conflict='{conflict_id}'] a")
    sales = browser.wait(
        """(() => { const rows = [...document.querySelectorAll('tr[data-sale]')];
            return rows.length === 2 ? rows.map(r => [r.dataset.sale, r.textContent]) : null;
         })()""",
        "the conflict page lists both sales",
    )
    assert sorted(s for s, _ in sales) == sorted([s1, s2])
    assert any("caja-1" in text for s, text in sales if s == s1)
    assert any("caja-2" in text for s, text in sales if s == s2)
    facts = browser.js("document.querySelector('.facts-grid').textContent")
    assert "LECHE-1L" in facts and "tienda-1" in facts and "-1" in facts
    for action in ("accept", "adjust", "recount", "transfer", "void", "custom"):
        assert browser.js(f"!!document.getElementById('act-{action}')"), action
    # the forms a stock conflict with sales offers, and no others
    assert browser.js(
        "[...document.querySelectorAll('#resolve-box form.action')].map(f => f.id)"
    ) == ["act-accept", "act-adjust", "act-recount", "act-transfer", "act-void", "act-custom"]
    # the custom action menu lists exactly the actions table, as the API serves it
    menu = browser.js(
        "[...document.querySelectorAll('#act-custom select[name=action] option')].map(o => o.value)"
    )
    served = [a["name"] for a in cluster.api("GET", "/api/sync/model/")["actions"]]
    assert menu == served == list(ACTIONS)
    labels = browser.js(
        "[...document.querySelectorAll('#act-custom select[name=action] option')]"
        ".map(o => o.textContent)"
    )
    assert labels[menu.index("accept")] == "Aceptar (accept)", labels
    browser.screenshot("conflict")
    if SCREENSHOTS:  # the same page on a portrait tablet
        browser._viewport(768, 1024, mobile=True)
        browser.screenshot("tablet-portrait", full_page=False)
        browser._viewport(*VIEWPORT)

    # Resolve it: tick caja-2's sale and click "void selected sales".
    browser.type_into("#resolve-box input[type=text]", "ana (admin)")
    browser.click(f"input[data-sale-id='{s2}']")
    assert browser.js(f"document.querySelector(\"input[data-sale-id='{s2}']\").checked")
    browser.click("#act-void-btn")
    browser.wait(
        "!!document.querySelector('#conflict-status .badge-resolved')",
        "the console shows the conflict resolved",
    )
    browser.wait(
        f"/anulada/i.test(document.querySelector(\"tr[data-sale='{s2}']\").textContent)",
        "the voided sale reads voided",
    )
    box = browser.js("document.querySelector('.resolution').textContent")
    # the voided sale as people name it
    assert s2 not in box and "sale_ids" not in box and "Ventas: caja-2 · " in box, box
    browser.screenshot("conflict-resolved")

    # The stores converge: same non-negative stock, the conflict resolved everywhere.
    wait_until(
        lambda: all(t.do("stock LECHE-1L") == 0 for t in tills), "leche stock is 0 on both tills"
    )
    wait_until(
        lambda: all(t.do("snapshot")["conflicts"].get(conflict_id) == "resolved" for t in tills),
        "the conflict reads resolved on both tills",
    )
    assert caja1.do("stock CAFE-500") == 8
    snaps = [t.do("snapshot") for t in tills]
    assert snaps[0] == snaps[1]
    relay_view = cluster.api("GET", f"/api/sync/queue/{conflict_id}/")
    assert relay_view["status"] == "resolved"
    assert relay_view["resolution"]["action"] == "void"
    assert relay_view["resolution"]["params"] == {"sale_ids": [s2]}
    assert relay_view["resolution"]["by"] == "ana (admin)"

    # English, remembered across reloads; the session survives a reload too.
    browser.click(".lang-switch button[data-lang=en]")
    browser.wait(
        "document.querySelector('#page-title').textContent.startsWith('Conflict ')",
        "the page switches to English",
    )
    assert browser.js("localStorage.getItem('tiendasync.console.lang')") == "en"
    browser.navigate(cluster.console_url + "#/conflicts")
    browser.wait(
        "document.querySelector('#mainnav a[data-route=log]')?.textContent === "
        "'Sync log' && !document.querySelector('#mainnav').hidden",
        "English after a reload, still logged in",
    )
    browser.js("""(() => { const s = document.querySelector('select[name=status]');
                  s.value = ''; s.dispatchEvent(new Event('change')); })()""")
    browser.wait(
        "!!document.querySelector('tr[data-conflict] .badge-resolved')",
        "the resolved conflict with the 'all' filter",
    )
    browser.screenshot("conflicts-en")

    # Log out: the token is gone and the data routes refuse without it.
    browser.click("#logout")
    browser.wait("location.hash === '#/login'", "back at the login form")
    assert browser.js("sessionStorage.getItem('tiendasync.console.token')") is None
    assert browser.page_errors() == []
    assert browser.error_notices() == []
    assert time.monotonic() - started < 40, time.monotonic() - started


# -- the conflict page tells the truth -----------------------------------------------------

#: Words of the Spanish interface that must not be left on an English page (none is data).
SPANISH_ONLY = (
    "Cajas",
    "Abierto",
    "Resolver",
    "correcto",
    "sincronización",
    "Existencias",
    "Venta",
)
#: Words of the English interface (and raw relay names) that must not be left on a Spanish page.
ENGLISH_ONLY = (
    "resolutions",
    "rejected",
    "Resolved",
    "Stores",
    "Tills",
    "Sales",
    "Yjs client",
    "bad or revoked token",
    "The relay says",
)


def _state(browser: Chromium) -> str:
    return str(browser.js("document.querySelector('#conflict-status .badge')?.textContent || ''"))


def _movements(browser: Chromium) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = browser.js(
        """[...document.querySelectorAll('#timeline-box tr[data-kind]')].map(r => ({
             kind: r.dataset.kind, delta: Number(r.dataset.delta),
             balance: r.lastElementChild.textContent, text: r.textContent}))"""
    )
    return rows


def _open_conflict(browser: Chromium, cluster: Cluster, conflict_id: str) -> None:
    browser.navigate(cluster.console_url + "#/conflict/" + conflict_id)
    browser.wait(
        "!!document.querySelector('#timeline-box tr[data-kind], #timeline-box .empty')"
        " && !!document.querySelector('#resolve-box h2')",
        f"conflict {conflict_id} with its movements",
    )


_PAGE_TEXT_JS = (
    "document.querySelector('main').innerText + document.querySelector('header').innerText"
)


def _page_text(browser: Chromium) -> str:
    return str(browser.js(_PAGE_TEXT_JS))


def _switch_language_and_back(
    browser: Chromium, english_title: str, english: tuple[str, ...] = ()
) -> None:
    """No English word of the interface on this Spanish page; in EN, its title in
    English, the ``english`` texts shown and no Spanish word of the interface left."""
    left = [w for w in ENGLISH_ONLY if w in _page_text(browser)]
    assert not left, ("Spanish page", english_title, left)
    browser.click(".lang-switch button[data-lang=en]")
    browser.wait(
        f"document.querySelector('#page-title').textContent.startsWith({json.dumps(english_title)})",
        f"the page reads {english_title!r} in English",
    )
    if english:  # the page's data comes after its title
        browser.wait(
            f"(() => {{ const text = {_PAGE_TEXT_JS};"
            f" return {json.dumps(list(english))}.every(w => text.includes(w)); }})()",
            f"{english_title!r} shows {english} in English",
        )
    text = _page_text(browser)
    left = [w for w in SPANISH_ONLY if w in text]
    assert not left, (english_title, left)
    browser.click(".lang-switch button[data-lang=es]")
    browser.wait("document.documentElement.lang === 'es'", "back in Spanish")


def test_console_tells_how_a_conflict_got_there(tmp_path: Path) -> None:
    """A partial adjustment, a typo'd SKU remapped to the real one, stores and tills
    counted as what they are, every page in both languages."""
    cluster = Cluster(tmp_path)
    token3 = demo.tiendasync(
        "relay",
        "token",
        "add",
        "--db",
        str(tmp_path / "relay.db"),
        "--tenant",
        "acme",
        "--replica",
        "caja-3",
    )
    caja3 = Pos(tmp_path, "caja-3", "tienda-2", f"ws://{HOST}:{cluster.port}", token3)
    try:
        with chromium(tmp_path) as browser:
            run_truth_flow(cluster, caja3, browser)
    finally:
        caja3.close()
        cluster.close()


def run_truth_flow(cluster: Cluster, caja3: Pos, browser: Chromium) -> None:
    caja1, caja2 = cluster.caja1, cluster.caja2
    tills = [caja1, caja2]
    caja1.do("product CAFE-500 450 Café 500 g")
    caja1.do("product PAN 95 Pan de barra")
    caja1.do("receive PAN 1")
    caja3.do("receive PAN 4")
    for command in ("online", "wait-synced 20"):
        for till in tills:
            till.do(command)
        caja3.do(command)
    wait_until(lambda: caja2.do("stock PAN") == 1, "caja-2 sees the bread")
    for till in tills:
        till.do("offline")
    pan1 = caja1.do("sell PAN 2")["id"]
    caja1.do("sell CAFE-500 1")  # none received: the coffee conflict the remap adds to
    pan2 = caja2.do("sell PAN 1")["id"]
    typo = caja2.do("sell CAFE-5OO 1")["id"]  # the letter O for the digit 0
    for till in tills:
        till.do("online")
    for till in tills:
        till.do("wait-synced 20")

    def queue() -> dict[tuple[str, str], dict[str, Any]]:
        items = cluster.api("GET", "/api/sync/queue/?status=open")["results"]
        return {(c["invariant"], c["sku"]): c for c in items}

    found = wait_until(
        lambda: (
            (q := queue())
            and ("non_negative_stock", "PAN") in q
            and ("unknown_product", "CAFE-5OO") in q
            and ("non_negative_stock", "CAFE-500") in q
            and q
        ),
        "the bread and the typo conflicts open",
    )
    pan = found[("non_negative_stock", "PAN")]["id"]
    coffee = found[("non_negative_stock", "CAFE-500")]["id"]
    unknown = found[("unknown_product", "CAFE-5OO")]["id"]

    # log in; the queue names products and flags the one the catalog does not have
    browser.navigate(cluster.console_url)
    browser.type_into("#login-form input[type=password]", cluster.admin_token)
    browser.press_enter()
    browser.wait(f"!!document.querySelector(\"tr[data-conflict='{unknown}']\")", "the queue")
    row = browser.js(f"document.querySelector(\"tr[data-conflict='{pan}']\").textContent")
    assert "Pan de barra" in row and "-2" in row, row
    row = browser.js(f"document.querySelector(\"tr[data-conflict='{unknown}']\").textContent")
    assert "No está en el catálogo" in row, row
    # the typo can be told from the real SKU: its letters O are marked as letters
    marked = f"tr[data-conflict='{unknown}'] .sku .lookalike"
    assert browser.js(f'[...document.querySelectorAll("{marked}")].map(e => e.textContent)') == [
        "O",
        "O",
    ]
    assert "gravedad" in row and "Ventas (10 × 100)" in row, row  # the priority in words

    # the bread: two tills sold 3 of the 1 received; the page says -2 and how
    _open_conflict(browser, cluster, pan)
    assert _state(browser) == "Abierto"
    assert "son -2" in browser.js("document.querySelector('#conflict-message').textContent")
    moves = _movements(browser)
    # the receipt, then the two tills' sales in the order they reached the relay
    assert moves[0]["kind"] == "in" and moves[0]["delta"] == 1
    by_delta = {m["delta"]: m for m in moves[1:] if m["kind"] == "sale"}
    assert sorted(by_delta) == [-2, -1] and len(moves) == 3, moves
    assert "caja-1" in by_delta[-2]["text"] and "caja-2" in by_delta[-1]["text"]
    running = [1, 1 + moves[1]["delta"], 1 + moves[1]["delta"] + moves[2]["delta"]]
    assert [m["balance"] for m in moves] == [str(b) for b in running] and running[-1] == -2
    assert "Pan de barra" in browser.js("document.querySelector('.facts-grid').textContent")
    sales = browser.js("[...document.querySelectorAll('tr[data-sale]')].map(r => r.textContent)")
    assert len(sales) == 2 and any("1,90" in s for s in sales), sales  # 2 x 0,95 EUR
    assert all(pan1 not in s and pan2 not in s for s in sales)  # people read till and time

    # adjust by 1 of the 2 missing: partly compensated, still open, and it says so
    browser.type_into("#act-adjust input[name=quantity]", "1")
    browser.click("#act-adjust-btn")
    browser.wait(
        "document.querySelector('#conflict-status .badge')?.textContent === 'Compensado en parte'",
        "the conflict reads partly compensated",
    )
    browser.wait(
        "document.querySelector('#current-value')?.textContent === '-1'", "the current value"
    )
    assert "sigue abierto" in browser.js("document.querySelector('#resolve-result').textContent")
    assert "son -1" in browser.js("document.querySelector('#conflict-message').textContent")
    assert browser.js("!!document.querySelector('.resolution-partial')")
    assert browser.js("!!document.querySelector('#history-box li[data-event=compensated]')")
    assert not browser.js("!!document.querySelector('#history-box li[data-event=resolved]')")
    browser.wait(
        "[...document.querySelectorAll('#timeline-box tr[data-kind]')].slice(-1)[0]"
        "?.dataset.kind === 'resolution'",
        "the adjustment in the movements",
    )
    last = _movements(browser)[-1]
    assert last["delta"] == 1 and last["balance"] == "-1" and "Ajustar" in last["text"]
    browser.screenshot("conflict-partial")
    _switch_language_and_back(browser, "Conflict ")

    # the typo: flagged, the real product suggested, restore disabled and why, remap
    _open_conflict(browser, cluster, unknown)
    facts = browser.js("document.querySelector('#facts-h').parentElement.textContent")
    assert "No está en el catálogo" in facts and "CAFE-500 (Café 500 g)" in facts, facts
    assert browser.js("document.querySelector('#act-restore-btn').disabled")
    assert "nunca estuvo en el catálogo" in browser.js(
        "document.querySelector('#act-restore .why-not').textContent"
    )
    assert browser.js("document.querySelector('#act-remap input[name=sku]').value") == "CAFE-500"
    moves = _movements(browser)
    assert [(m["kind"], m["delta"]) for m in moves] == [("sale", -1)], moves
    browser.screenshot("conflict-typo")
    browser.click("#act-remap-btn")
    browser.wait(
        "document.querySelector('#conflict-status .badge')?.textContent === 'Resuelto'",
        "the typo is resolved by the remap",
    )
    # the real product now carries the remapped sale, and its conflict's movements say so
    _open_conflict(browser, cluster, coffee)
    browser.wait(
        "[...document.querySelectorAll('#timeline-box tr[data-kind]')].length === 2",
        "the remap in CAFE-500's movements",
    )
    sale, move = _movements(browser)
    assert (sale["kind"], sale["delta"], sale["balance"]) == ("sale", -1, "-1"), sale
    assert (move["kind"], move["delta"], move["balance"]) == ("resolution", -1, "-2"), move
    assert "Reasignar" in move["text"] and "reasignada desde CAFE-5OO" in move["text"], move
    assert typo not in move["text"] and "caja-2" in move["text"]
    browser.screenshot("conflict-remapped")

    # all statuses: highest priority first, and at equal priority open before resolved
    browser.navigate(cluster.console_url + "#/conflicts")
    browser.wait("!!document.querySelector('tr[data-conflict]')", "the queue")
    browser.js("""(() => { const s = document.querySelector('select[name=status]');
                  s.value = ''; s.dispatchEvent(new Event('change')); })()""")
    browser.wait(
        "!!document.querySelector('tr[data-conflict] .badge-resolved')"
        " && !!document.querySelector('tr[data-conflict] .badge-partial')",
        "every state in the queue",
    )
    order = browser.js(
        """[...document.querySelectorAll('tr[data-conflict]')].map(r =>
             [Number(r.querySelector('.prio').textContent), r.dataset.state])"""
    )
    ranks = [(-p, s not in ("open", "partial")) for p, s in order]
    assert ranks == sorted(ranks), order
    browser.screenshot("queue-states")
    _switch_language_and_back(browser, "Conflict queue")

    # stores and tills: 2 stores, 3 tills; an offline till cannot be asked to sync
    browser.click("#mainnav a[data-route=stores]")
    browser.wait(
        "/2 tiendas · 3 cajas, 3 en línea/"
        ".test(document.querySelector('#stores-summary')?.textContent)",
        "two stores, three tills",
    )
    assert "tienda-2" in browser.js("document.querySelector('[data-replica=caja-3]').textContent")
    caja3.do("offline")
    browser.wait(
        "document.querySelector('[data-replica=caja-3] [data-action=sync-now]').disabled",
        "sync now is disabled for the offline till",
    )
    why = browser.js("document.querySelector('[data-replica=caja-3] .why-not').textContent")
    assert "Desconectada" in why, why
    assert not browser.js(
        "document.querySelector('[data-replica=caja-1] [data-action=sync-now]').disabled"
    )
    # every data type named in words, the resolutions requests too
    assert "Resoluciones 7" in browser.js(
        "document.querySelector('[data-replica=caja-1]').innerText"
    )
    browser.screenshot("stores-tills")
    _switch_language_and_back(browser, "Stores", ("Resolutions 7",))

    # Yjs followers, one over its token's cap: a rejected row whose relay error is translated
    dash = demo.tiendasync(
        "relay", "token", "add", "--db", cluster.relay_db, "--tenant", "acme", "--replica", "dash-1"
    )
    url = f"ws://{HOST}:{cluster.port}/yjs/acme/catalog?token={dash}"
    with contextlib.ExitStack() as held:
        for _ in range(4):  # the cap (--max-conns-per-token)
            held.enter_context(connect(url, open_timeout=10)).recv(timeout=10)
        with connect(url, open_timeout=10) as ws:
            with contextlib.suppress(Exception):
                while True:
                    ws.recv(timeout=10)
            assert ws.close_code == 4429, ws.close_code

    # the sync log, its results, kinds and errors in the page's language
    browser.click("#mainnav a[data-route=log]")
    browser.wait(
        "[...document.querySelectorAll('tr[data-session]')]"
        ".some(r => /rechazado/.test(r.textContent))",
        "the rejected follower in the sync log",
    )
    log = browser.js("document.querySelector('#log-table').textContent")
    assert "correcto" in log and "sincronización" in log, log
    too_many = "código 4429: demasiadas conexiones con este token (máximo 4)"
    assert "cliente Yjs" in log and too_many in log, log
    browser.screenshot("log-rejected")
    _switch_language_and_back(
        browser,
        "Sync log",
        ("rejected", "Yjs client", "code 4429: too many connections with this token (at most 4)"),
    )

    # the login form too
    browser.click("#logout")
    browser.wait("location.hash === '#/login'", "the login form")
    browser.click(".lang-switch button[data-lang=en]")
    browser.wait(
        "document.querySelector('#login-form label').textContent === 'Admin token'",
        "the login form in English",
    )
    browser.click(".lang-switch button[data-lang=es]")
    assert browser.page_errors() == []
    assert browser.error_notices() == []
