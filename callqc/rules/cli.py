"""``callqc rules ...``: validate a rule pack, or run it over a JSONL of transcripts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from callqc.rules.engine import RuleEngine
from callqc.rules.native import BACKENDS
from callqc.rules.pack import RulePackError, load_rule_pack
from callqc.rules.records import CallRecord, record_to_call

rules_app = typer.Typer(help="Compliance rule packs: validate, and check transcripts.", no_args_is_help=True)

PackArg = Annotated[Path, typer.Argument(help="rule pack YAML", exists=True, dir_okay=False)]
_BACKEND_HELP = f"matcher: {' | '.join(BACKENDS)}"
_BATCH = 256  # calls per scan


def _engine(pack_path: Path, backend: str) -> RuleEngine:
    if backend not in BACKENDS:
        raise typer.BadParameter(f"backend must be one of {', '.join(BACKENDS)}")
    try:
        return RuleEngine(load_rule_pack(pack_path), backend=backend)
    except RulePackError as exc:
        typer.echo(f"invalid pack {pack_path}: {exc}", err=True)
        raise typer.Exit(code=1) from None


@rules_app.command()
def validate(
    pack: PackArg,
    backend: Annotated[str, typer.Option(help=_BACKEND_HELP)] = "auto",
) -> None:
    """Check a pack against the schema and compile it; exit 1 naming the rule and reason if bad."""
    engine = _engine(pack, backend)
    rules = engine.pack.rules
    typer.echo(
        f"ok: {pack} version {engine.version}, {len(rules)} rules "
        f"({sum(r.enabled for r in rules)} enabled), {engine.pattern_count} patterns, {engine.backend}"
    )


@rules_app.command()
def check(
    pack: PackArg,
    jsonl: Annotated[Path, typer.Argument(help="one call per line: call_id, language, turns, metadata")],
    as_json: Annotated[bool, typer.Option("--json", help="print findings per call as JSON")] = False,
    backend: Annotated[str, typer.Option(help=_BACKEND_HELP)] = "auto",
) -> None:
    """Run a pack over transcripts and print hits per rule."""
    engine = _engine(pack, backend)
    findings_per_rule: Counter[str] = Counter()
    calls_per_rule: Counter[str] = Counter()
    calls_out = []
    pending: list[CallRecord] = []

    def flush() -> None:  # one scan per batch of calls
        results = engine.evaluate_many([c.transcript for c in pending], [c.metadata for c in pending])
        for call, findings in zip(pending, results, strict=True):
            findings_per_rule.update(f.rule_id for f in findings)
            calls_per_rule.update({f.rule_id for f in findings})
            calls_out.append({"call_id": call.call_id, "findings": [f.model_dump(mode="json") for f in findings]})
        pending.clear()

    with jsonl.open(encoding="utf-8") as lines:
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                pending.append(record_to_call(line))
            except ValueError as exc:  # includes JSON and pydantic validation errors
                typer.echo(f"{jsonl}:{lineno}: {exc}", err=True)
                raise typer.Exit(code=2) from None
            if len(pending) >= _BATCH:
                flush()
    flush()
    if as_json:
        summary = {
            "pack_version": engine.version,
            "backend": engine.backend,
            "calls": len(calls_out),
            "hits_per_rule": dict(sorted(findings_per_rule.items())),
            "results": calls_out,
        }
        typer.echo(json.dumps(summary, ensure_ascii=False, indent=2))
        return
    table = Table(title=f"{pack.name} v{engine.version} over {len(calls_out)} calls ({engine.backend})")
    for column in ("rule", "name", "severity", "category", "findings", "calls"):
        table.add_column(column, justify="right" if column in ("findings", "calls") else "left")
    for rule in engine.pack.rules:
        if findings_per_rule[rule.id]:
            table.add_row(
                rule.id,
                rule.name,
                rule.severity.value,
                rule.category,
                str(findings_per_rule[rule.id]),
                str(calls_per_rule[rule.id]),
            )
    Console().print(table)
