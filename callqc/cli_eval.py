"""``callqc eval``: rules (+ LLM judge) over a labelled JSONL → precision / recall per check id."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from callqc.evaluation import DEV_SET, DatasetError, EvalResult, Reviewer, Score, evaluate, load_dataset
from callqc.rules.engine import RuleEngine
from callqc.rules.pack import RulePack, RulePackError, default_pack_path, load_rule_pack

_JUDGES = ("none", "xllamacpp", "vllm")
_MODELS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _row(table: Table, s: Score, style: str = "") -> None:
    cells = [s.rule_id, str(s.labels), str(s.findings), str(s.tp), str(s.fp), str(s.fn), str(s.duplicates)]
    cells += [_ratio(s.precision), _ratio(s.recall), _ratio(s.f1)]
    table.add_row(*cells, style=style)


def render(result: EvalResult, console: Console) -> None:
    """The per-id table, group and overall rows, and the false-positive rate on compliant calls."""
    table = Table(title=f"{result.data}: {result.calls} calls, pack {result.pack_version}, judge {result.judge}")
    for column in ("id", "labels", "findings", "TP", "FP", "FN", "dup", "precision", "recall", "F1"):
        if column == "id":
            table.add_column(column, no_wrap=True, min_width=10)
        else:
            table.add_column(column, justify="right")
    for s in result.per_id:
        if s.labels or s.findings:
            _row(table, s)
    table.add_section()
    for s in result.groups:
        _row(table, s, "dim")
    _row(table, result.overall, "bold")
    console.print(table)
    rate = "—" if result.fp_rate_compliant is None else f"{result.fp_rate_compliant:.1%}"
    console.print(
        f"false-positive rate on compliant calls: [bold]{rate}[/] "
        f"({result.compliant_flagged} of {result.compliant_calls} calls with no agent-side label got an agent finding)"
    )
    if result.judge != "none":
        console.print(f"judge needs_review: {result.judge_needs_review} calls; {result.seconds:.1f}s in all")


def _shown(path: Path) -> str:
    """The data path as given in reports: relative to the working directory when under it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _pack(path: Path | None) -> RulePack:
    try:
        return load_rule_pack(path or default_pack_path())
    except RulePackError as exc:
        typer.echo(f"invalid pack {path}: {exc}", err=True)
        raise typer.Exit(code=1) from None


def eval_command(
    data: Annotated[Path, typer.Option(help="labelled JSONL (tests/data/eval/README.md)", dir_okay=False)] = DEV_SET,
    pack: Annotated[Path | None, typer.Option(help="rule pack YAML; default: the bundled pack")] = None,
    judge: Annotated[str, typer.Option(help="none | xllamacpp | vllm")] = "none",
    model: Annotated[str, typer.Option(help="judge model: qwen2.5-coder-0.5b | qwen2.5-coder-1.5b")] = (
        "qwen2.5-coder-1.5b"
    ),
    json_out: Annotated[Path | None, typer.Option("--json", help="also write the full result as JSON here")] = None,
    every: Annotated[
        int, typer.Option(min=1, help="only every N-th call (1st, N+1th, …): a quicker estimate for a slow judge")
    ] = 1,
) -> None:
    """Run rules (and the judge) over labelled calls; print precision / recall per id and overall."""
    if judge not in _JUDGES:
        raise typer.BadParameter(f"must be one of {', '.join(_JUDGES)}", param_hint="--judge")
    if model not in _MODELS:
        raise typer.BadParameter(f"must be one of {', '.join(_MODELS)}", param_hint="--model")
    try:
        calls = load_dataset(data)[::every]
    except (DatasetError, OSError) as exc:
        typer.echo(f"bad data set: {exc}", err=True)
        raise typer.Exit(code=2) from None
    shown = _shown(data) if every == 1 else f"{_shown(data)} (1 call in {every})"
    rule_pack = _pack(pack)
    engine = RuleEngine(rule_pack)
    console = Console()
    console.width = max(console.width, 100)  # the table stays readable when piped (80 columns)
    name = "none" if judge == "none" else f"{judge}:{model}"
    reviewer: Reviewer | None = None
    close = None
    batch = 8
    if judge != "none":
        from callqc.judge import Judge, make_engine
        from callqc.settings import load_settings

        # The operator's judge settings (CALLQC_JUDGE__THREADS, __TIMEOUT_SECONDS, …) with this engine and model.
        settings = load_settings().judge.model_copy(update={"engine": judge, "model": model})
        with console.status(f"loading {model} ({judge})…"):
            llm = make_engine(settings)
        assert llm is not None
        reviewer, close, batch = Judge(llm, rule_pack, settings), llm.close, settings.batch_max_calls
    try:
        with console.status(f"evaluating {len(calls)} calls (judge {name})…") as status:

            def progress(done: int, total: int) -> None:
                status.update(f"evaluating {len(calls)} calls (judge {name}): {done}/{total} judged…")

            result = evaluate(
                calls, engine, reviewer, judge_name=name, data=shown, judge_batch=batch, progress=progress
            )
    finally:
        if close is not None:
            close()
    render(result, console)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(result.model_dump_json(indent=2) + "\n", encoding="utf-8")
        console.print(f"wrote {json_out}")
