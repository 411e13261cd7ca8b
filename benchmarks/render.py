"""Renders benchmarks/results/latest.json as markdown.

``python benchmarks/render.py [latest.json]`` writes ``latest.md`` beside the
JSON and ``docs/performance.md`` (the table, then ``benchmarks/analysis.md``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "performance.md"
ANALYSIS = HERE / "analysis.md"

SYSTEMS = [
    "regcache",
    "nginx",
    "distribution",
    "direct",
    "distribution-proxy",
    "asgi-uvicorn",
    "wsgi-gunicorn",
]
LABELS = {
    "regcache": "regcache",
    "nginx": "nginx",
    "distribution": "distribution",
    "direct": "upstream direct",
    "distribution-proxy": "distribution proxy",
    "asgi-uvicorn": "ASGI adapter (uvicorn)",
    "wsgi-gunicorn": "WSGI adapter (gunicorn)",
}


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(ours: float, theirs: float) -> str:
    if not theirs:
        return ""
    return f" ({ours / theirs:.2f}x)"


def table(result: dict[str, Any]) -> str:
    scenarios = result["scenarios"]
    present = [s for s in SYSTEMS if any(s in sc["figures"] for sc in scenarios)]
    lines = [
        "Medians over the rounds; the ratio in brackets is regcache's figure over that "
        "system's (for ↓ rows lower is better, so a ratio below 1 favours regcache).",
        "",
        "| scenario | unit | " + " | ".join(LABELS[s] for s in present) + " |",
        "|---|---|" + "---:|" * len(present),
    ]
    for sc in scenarios:
        figures = sc["figures"]
        ours = figures.get("regcache")
        cells = []
        for system in present:
            if system not in figures:
                cells.append("")
                continue
            value = figures[system]
            cell = fmt(value)
            if system != "regcache" and ours is not None:
                cell += ratio(ours, value)
            cells.append(cell)
        arrow = "↑" if sc["higher_is_better"] else "↓"
        lines.append(f"| {sc['name']} | {sc['unit']} {arrow} | " + " | ".join(cells) + " |")
    lines += ["", "Spread (min to max over the rounds):", ""]
    lines += [
        "| scenario | " + " | ".join(LABELS[s] for s in present) + " |",
        "|---|" + "---:|" * len(present),
    ]
    for sc in scenarios:
        cells = [
            f"{fmt(sc['min'][s])} to {fmt(sc['max'][s])}" if s in sc["min"] else "" for s in present
        ]
        lines.append(f"| {sc['name']} | " + " | ".join(cells) + " |")
    cpu_rows = [sc for sc in scenarios if sc.get("cpu_s_per_gib")]
    if cpu_rows:
        lines += [
            "",
            "Server CPU seconds per GiB sent (utime + stime of the server process "
            "and its children; lower is better):",
            "",
        ]
        lines += [
            "| scenario | " + " | ".join(LABELS[s] for s in present) + " |",
            "|---|" + "---:|" * len(present),
        ]
        for sc in cpu_rows:
            cpu = sc["cpu_s_per_gib"]
            ours = cpu.get("regcache")
            cells = []
            for s in present:
                if s not in cpu:
                    cells.append("")
                    continue
                cell = fmt(cpu[s])
                if s != "regcache" and ours is not None:
                    cell += ratio(ours, cpu[s])
                cells.append(cell)
            lines.append(f"| {sc['name']} | " + " | ".join(cells) + " |")
    latency_rows = [sc for sc in scenarios if sc.get("p50_ms")]
    if latency_rows:
        lines += [
            "",
            "Request latency under that load, p50 / p99 in ms, and server CPU ms "
            "per 1000 requests:",
            "",
        ]
        lines += [
            "| scenario | " + " | ".join(LABELS[s] for s in present) + " |",
            "|---|" + "---:|" * len(present),
        ]
        for sc in latency_rows:
            cells = []
            for s in present:
                if s not in sc["p50_ms"]:
                    cells.append("")
                    continue
                cpu = sc.get("cpu_ms_per_1k_requests", {}).get(s)
                cell = f"{fmt(sc['p50_ms'][s])} / {fmt(sc['p99_ms'][s])}"
                if cpu is not None:
                    cell += f"; {fmt(cpu)} CPU ms"
                cells.append(cell)
            lines.append(f"| {sc['name']} | " + " | ".join(cells) + " |")
    notes = [sc for sc in scenarios if sc.get("note")]
    if notes:
        lines += [""] + [f"- {sc['name']}: {sc['note']}" for sc in notes]
    return "\n".join(lines) + "\n"


def machine_line(result: dict[str, Any]) -> str:
    m = result["machine"]
    parts = [
        f"{m.get('cpu') or 'unknown CPU'}, {m.get('cores')} cores, {m.get('memory_gib')} GiB",
        f"Linux {m.get('kernel')}",
        f"Python {m.get('python')}",
        m.get("nginx", ""),
        m.get("distribution", ""),
        (m.get("curl", "").split(" (")[0]),
        m.get("wrk", "").split(" [")[0],
        m.get("uvicorn", ""),
        m.get("gunicorn", ""),
        f"pinning: {m.get('pinning')}",
        f"{m.get('rounds')} rounds" + (" (quick mode)" if m.get("quick") else ""),
    ]
    return "; ".join(p for p in parts if p)


def render(result: dict[str, Any]) -> str:
    return (
        f"Run of {result['date']} ({result.get('duration_s', '?')} s) on: "
        f"{machine_line(result)}.\n\n" + table(result)
    )


def write_all(path: Path, docs: bool = True) -> None:
    result = json.loads(path.read_text())
    body = render(result)
    path.with_suffix(".md").write_text("# Benchmark results\n\n" + body)
    analysis = ANALYSIS.read_text() if ANALYSIS.exists() else ""
    if result["machine"].get("quick") or not docs:
        return  # a quick run checks the harness; it does not replace the published figures
    DOCS.write_text(
        "# Performance\n\n"
        "These figures come from `benchmarks/run` (see `benchmarks/README.md`). "
        "They compare regcache with nginx serving the same files and with "
        "distribution (`docker-registry`), on one small machine, over loopback. "
        "Read them as ratios measured in the same run, not as absolute numbers.\n\n"
        "## Results\n\n" + body + "\n" + analysis
    )


if __name__ == "__main__":
    write_all(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "results" / "latest.json")
