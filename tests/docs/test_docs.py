"""The documentation is tested: every ```python block runs against the current code.

How blocks run
--------------
* The ```python blocks of one file run **in order, sharing one namespace**,
  like the cells of a notebook, so a page can build an example step by step
  (open a replica in block 1, sell in block 2...).  Each file starts from an
  empty namespace in its **own fresh temporary working directory**, so
  relative paths such as ``"tienda-1.db"`` never touch the checkout and
  pages never see each other's files.
* A failing block is reported as ``docs/x.md, python block N (line L)``
  with the traceback pointing into the block.
* Only blocks fenced exactly as ```python run.  Anything that is not meant
  to run (it needs a relay, it shows a shell session, an excerpt or a
  signature) is fenced ```text, ```bash or similar.  An unlabelled fence
  is an error, so runnable code cannot hide by accident.
* docs/django.md's blocks are a Django project's files: they run there,
  in tests/docs/test_django_doc.py.
* After a page's blocks finish, no background sync thread may still be
  running: a snippet that starts one must stop it.

Besides running the snippets, this module checks that relative links
resolve and that the API reference (docs/api.md) names every public name
of ``tiendasync`` with signatures that match the code.
"""

from __future__ import annotations

import gc
import inspect
import re
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tiendasync
from tiendasync.store.catalog import Catalog
from tiendasync.store.client import SyncReport
from tiendasync.store.conflicts import Conflict, ConflictBook
from tiendasync.store.inventory import Inventory
from tiendasync.store.locations import Locations
from tiendasync.store.queue import SyncQueue
from tiendasync.store.sales import Sales
from tiendasync.store.synclog import SyncLog

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: Pages written by other parts of the project: linked from the index, may
#: not exist yet in a given checkout, and then their links are not checked.
OTHERS_PAGES = {"benchmarks.md", "admin-api.md", "console.md", "security.md", "reliability.md"}

#: Fence labels allowed; ``python`` is the only one that runs here.  The one ``js``
#: block of docs/yjs.md runs under Node in tests/e2e/test_yjs_node.py.
LABELS = {"python", "text", "bash", "console", "json", "toml", "ini", "sql", "http", "diff", "js"}

_FENCE = re.compile(r"^ {0,3}(`{3,})\s*([\w+-]*)\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    number: int  # 1-based among the file's python blocks (0 for other labels)
    line: int  # 1-based line of the opening fence
    label: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}, python block {self.number} (line {self.line})"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def blocks(path: Path) -> Iterator[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, label = match.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{fence}`*\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            where = path.relative_to(ROOT)
            raise AssertionError(f"{where}: fence at line {start + 1} never closes")
        i += 1
        if label == "python":
            number += 1
        yield Block(path, number if label == "python" else 0, start + 1, label, "\n".join(body))


def python_blocks(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.label == "python"]


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


# -- the snippets run ---------------------------------------------------------------


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tiendasync-sync" and t.is_alive()]


#: Pages whose ```python blocks are files of another program, run by their own test:
#: docs/django.md's are a Django project's files (tests/docs/test_django_doc.py).
FILES_OF_ANOTHER_PROGRAM = {"django.md"}


@pytest.mark.parametrize("path", doc_files(), ids=_ids(doc_files()))
def test_python_blocks_run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    todo = [] if path.name in FILES_OF_ANOTHER_PROGRAM else python_blocks(path)
    if not todo:
        return  # nothing to run (protocol tables, operations guides...)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"docs_{path.stem.replace('-', '_')}"}
    before = set(_sync_threads())
    try:
        for block in todo:
            try:
                code = compile(block.code, f"<{block.where}>", "exec")
                exec(code, namespace)
            except Exception:
                pytest.fail(f"{block.where} failed:\n{traceback.format_exc()}", pytrace=False)
    finally:
        # Close whatever replica a page left open, so temp dirs can go.
        for value in list(namespace.values()):
            if isinstance(value, tiendasync.Replica):
                value.close()
        namespace.clear()
        gc.collect()
    leftover = set(_sync_threads()) - before
    assert not leftover, f"{path.relative_to(ROOT)} left background sync running: {leftover}"


def test_every_fence_is_labelled() -> None:
    problems = []
    for path in doc_files():
        for block in blocks(path):
            if block.label not in LABELS:
                problems.append(f"{path.relative_to(ROOT)} line {block.line}: {block.label!r}")
    assert not problems, "unlabelled or unknown fences (use python/text/bash...):\n" + "\n".join(
        problems
    )


def test_expected_pages_exist_and_have_examples() -> None:
    for name in (
        "index",
        "quickstart",
        "concepts",
        "api",
        "seed-mapping",
        "protocol",
        "relay",
        "faq",
        "operations",
    ):
        assert (DOCS / f"{name}.md").is_file(), f"docs/{name}.md is missing"
    for path in (ROOT / "README.md", DOCS / "quickstart.md", DOCS / "concepts.md", DOCS / "api.md"):
        assert python_blocks(path), f"{path.relative_to(ROOT)} has no runnable example"


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_resolve() -> None:
    broken = []
    for path in doc_files():
        text = path.read_text(encoding="utf-8")
        # links inside code blocks are not links
        for block in blocks(path):
            text = text.replace(block.code, "")
        for target in _LINK.findall(text):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            file_part = target.split("#", 1)[0]
            resolved = (path.parent / file_part).resolve()
            if resolved.exists():
                continue
            if resolved.parent == DOCS and resolved.name in OTHERS_PAGES:
                continue
            broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_index_links_every_page() -> None:
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    pages = {p.name for p in DOCS.glob("*.md")} | OTHERS_PAGES
    missing = sorted(p for p in pages - {"index.md"} if f"({p}" not in index)
    assert not missing, f"docs/index.md does not link: {missing}"


# -- the API reference matches the code -------------------------------------------------

#: How the headings of docs/api.md name objects.
_OWNERS: dict[str, Any] = {
    "Replica": tiendasync.Replica,
    "r": tiendasync.Replica,
    "r.catalog": Catalog,
    "r.inventory": Inventory,
    "r.locations": Locations,
    "r.sales": Sales,
    "r.queue": SyncQueue,
    "r.log": SyncLog,
    "r.conflicts": ConflictBook,
    "StoreConfig": tiendasync.StoreConfig,
    "config": tiendasync.StoreConfig,
    "SyncReport": SyncReport,
}

_HEADING = re.compile(r"^#{3,4} `")
_NAMED = re.compile(r"`([\w.]+)(\([^`]*\))?`")


def plain_signature(obj: Any) -> str:
    """``inspect.signature`` without annotations or ``self``: ``(a, *, b=1)``."""
    sig = inspect.signature(obj)
    params = [
        p.replace(annotation=inspect.Parameter.empty)
        for p in sig.parameters.values()
        if p.name not in ("self", "cls")
    ]
    return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _api_headings() -> list[tuple[int, str, str]]:
    """``(line, "r.catalog.put", "(sku, fields)")`` for every name in a ###/#### heading."""
    out: list[tuple[int, str, str]] = []
    for number, line in enumerate((DOCS / "api.md").read_text(encoding="utf-8").splitlines(), 1):
        if _HEADING.match(line):
            out.extend((number, name, sig) for name, sig in _NAMED.findall(line) if "." in name)
    return out


def test_api_signatures_match_the_code() -> None:
    checked = 0
    problems = []
    for line, dotted, documented in _api_headings():
        owner_name, _, attr = dotted.rpartition(".")
        owner = _OWNERS.get(owner_name)
        if owner is None:
            continue
        if not hasattr(owner, attr) and attr not in getattr(owner, "__dataclass_fields__", {}):
            problems.append(f"line {line}: {dotted} does not exist")
            continue
        checked += 1
        if not documented:  # a property or attribute: existing is enough
            continue
        actual = plain_signature(getattr(owner, attr))
        if documented != actual:
            problems.append(f"line {line}: {dotted}{documented} but the code has {dotted}{actual}")
    assert checked > 40, f"only {checked} API headings recognised"
    assert not problems, "docs/api.md is out of date:\n" + "\n".join(problems)


def _public_members(cls: type) -> set[str]:
    names = {n for n in vars(cls) if not n.startswith("_")}
    names |= set(getattr(cls, "__dataclass_fields__", {}))
    return {n for n in names if not n.startswith("_")}


def test_api_documents_every_public_member() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    missing = [name for name in tiendasync.__all__ if not re.search(rf"\b{name}\b", text)]
    classes = [
        tiendasync.Replica,
        Catalog,
        Inventory,
        Locations,
        Sales,
        SyncQueue,
        SyncLog,
        tiendasync.StoreConfig,
        tiendasync.ReplicaStatus,
        tiendasync.Sale,
        tiendasync.SaleLine,
        tiendasync.QueueEntry,
        tiendasync.SyncLogEntry,
        tiendasync.StockMovement,
        SyncReport,
        ConflictBook,
        Conflict,
    ]
    for cls in classes:
        for member in sorted(_public_members(cls)):
            if not re.search(rf"[`.]{re.escape(member)}\b", text):
                missing.append(f"{cls.__name__}.{member}")
    assert not missing, "not documented in docs/api.md: " + ", ".join(missing)


def test_queue_statuses_documented() -> None:
    from tiendasync.store.queue import STATUSES

    text = (DOCS / "api.md").read_text(encoding="utf-8")
    assert all(f"`{s}`" in text for s in STATUSES)
