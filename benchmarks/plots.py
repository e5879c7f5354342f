"""PNG plots of a results file (needs matplotlib: the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def available() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        return f"matplotlib not installed ({exc}); pip install -e '.[bench]'"
    return None


def _bars(
    ax: Any, labels: list[str], ours: list[float], base: list[float], base_name: str, unit: str
) -> None:
    import numpy as np

    x = np.arange(len(labels))
    ax.bar(x - 0.2, ours, 0.4, label="tiendasync")
    ax.bar(x + 0.2, base, 0.4, label=base_name)
    ax.set_xticks(x, labels)
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)


def render(results: dict[str, Any], outdir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    figs = results["figures"]
    written: list[Path] = []

    relay = [
        f for f in figs if f["bench"] == "3-relay" and "pycrdt" in f["name"] and "baseline" in f
    ]
    echo = [f for f in figs if f["bench"] == "3-relay" and "echo" in f["name"]]
    if relay or echo:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        if relay:
            _bars(
                axes[0],
                [f["name"].split()[0] for f in relay],
                [f["value"] for f in relay],
                [f["baseline"] for f in relay],
                "pycrdt-websocket + store",
                "sales/s",
            )
            axes[0].set_yscale("log")
            axes[0].set_title("Relay: sales/s end to end (log)")
        if echo:
            axes[1].plot([f["name"].split()[0] for f in echo], [f["ratio"] for f in echo], "o-")
            axes[1].set_title("tiendasync sales/s / websockets echo msgs/s")
            axes[1].set_ylim(bottom=0)
        fig.tight_layout()
        path = outdir / "relay-throughput.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    ratios = [f for f in figs if f.get("ratio") is not None and f.get("target")]
    if ratios:
        fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * len(ratios)))
        names = [f"{f['bench']}: {f['name'][:55]}" for f in ratios]
        colors = ["tab:green" if f.get("met") else "tab:red" for f in ratios]
        ax.barh(names, [f["ratio"] for f in ratios], color=colors)
        ax.set_xscale("log")
        ax.invert_yaxis()
        ax.set_xlabel("ratio to baseline (green: target met, red: missed)")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        path = outdir / "ratios.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)

    wire = [
        f
        for f in figs
        if f["bench"] == "4-wire" and "per sale line" in f["name"] and "streaming" in f["name"]
    ]
    if wire:
        fig, ax = plt.subplots(figsize=(7, 4))
        labels = [f"{f['extra']['lines_per_sale']}-line sales" for f in wire]
        up = [f["value"] for f in wire]
        raw = [f["extra"].get("uncompressed", {}).get("up_per_line", 0.0) for f in wire]
        yjs = [sum(f["extra"].get("yjs_update_bytes_per_line", {}).values()) for f in wire]
        xs = range(len(wire))
        width = 0.38
        ax.bar([x - width / 2 for x in xs], yjs, width, label="uncompressed: Yjs update bytes")
        ax.bar(
            [x - width / 2 for x in xs],
            [r - y for r, y in zip(raw, yjs, strict=True)],
            width,
            bottom=yjs,
            label="uncompressed: frames + websocket framing",
        )
        ax.bar([x + width / 2 for x in xs], up, width, label="compressed (default): everything")
        ax.set_xticks(list(xs), labels)
        ax.axhline(64, color="red", linestyle="--", label="target 64 B")
        ax.set_ylabel("bytes up per sale line")
        ax.legend(fontsize=8)
        ax.set_title("Wire cost of a streamed sale line")
        fig.tight_layout()
        path = outdir / "wire-cost.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def render_long_life(figs: list[dict[str, Any]], outdir: Path) -> list[Path]:
    """``docs/img/long-life.png`` from the long-life benchmark's figures (``--json``):
    per simulated day, the till's ratios with and without generations, and each
    chain relay's RSS against its day 1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    till = [f for f in figs if f["bench"] == "long_life" and "mode" in f.get("extra", {})]
    chain = [f for f in figs if f["bench"] == "long_life" and "arm" in f.get("extra", {})]
    panels = [
        ("stock doc bytes", "stock document / freshly seeded", 2.0),
        ("time per sale", "time per sale (median) / day 1", 1.2),
        ("state-vector entries", "state-vector entries", None),
    ]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(16, 4))
    for ax, (prefix, title, target) in zip(axes, panels, strict=False):
        for mode in ("no relay", "generations"):
            rows = [f for f in till if f["name"].startswith(prefix) and f["extra"]["mode"] == mode]
            value = "value" if prefix.startswith("state") else "ratio"
            ax.plot([f["extra"]["day"] for f in rows], [f[value] for f in rows], "o-", label=mode)
        if target is not None:
            ax.axhline(target, color="red", linestyle="--", label=f"target {target}x")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("simulated day")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    ax = axes[-1]
    for arm in dict.fromkeys(f["extra"]["arm"] for f in chain):
        rows = [f for f in chain if f["extra"]["arm"] == arm]
        ax.plot([f["extra"]["day"] for f in rows], [f["value"] for f in rows], "o-", label=arm)
    ax.set_title("relay RSS (MiB), chain", fontsize=9)
    ax.set_xlabel("simulated day")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = outdir / "long-life.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
