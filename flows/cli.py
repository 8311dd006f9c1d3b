"""The `dataworth` command: run flows, serve deployments, inspect stores, compare reports."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXAMPLES = """\
examples:
  dataworth run nightly                      # the whole nightly valuation on the bundled sample
  dataworth run nightly --landing /data/new --queries q.jsonl --model ./my-model
  dataworth run nightly --workspace /srv/val --params night.json --mode relatif   # flags win over the file
  dataworth run nightly --workspace /srv/new --rank 32 --init pca --estimator empirical --batch-size 8
  dataworth run nightly --workspace /srv/new --eos add   # an EOS after every text, as GPT-2 was trained
  dataworth run ingest --workspace /srv/val  # only log and commit new shards
  dataworth run refresh-fisher --force       # recompute the Fisher snapshot now
  dataworth server                           # Prefect server + UI on http://127.0.0.1:4200
  dataworth server --background --port 4311  # start one detached (or reuse it), wait until healthy
  dataworth server --stop                    # stop the background server
  dataworth serve --cron "0 2 * * *" --timezone Europe/Berlin
  dataworth serve --workspace /srv/val --landing /data/new --model ./my-model
  dataworth serve --params night.json --reports-port 4301   # report links in the UI open on this host
  dataworth stability --seeds 0 1 2          # how much credit moves with the PCA calibration data
  dataworth store info                       # rows, providers, shards, snapshots
  dataworth store verify                     # manifest vs rows vs checksums (exit 1 on damage)
  dataworth store migrate --store URL        # upgrade a store written by an older version
  dataworth report diff .dataworth/reports/A .dataworth/reports/B
  dataworth report diff A B --json           # the same for scripts, with warnings when they differ in scope
  dataworth eval --task classification --check all   # counterfactual accuracy (LDS, brittleness, LOPO)
"""


def _workspace_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", default=".dataworth", help="state directory (default: %(default)s)")


PARAMETERS_RULE = """\
parameters: the defaults, then --params FILE (JSON of the nightly flow's parameters, as a
deployment holds them), then each flag given: a flag always wins over the file."""
# Each flag of `run`, `serve` and `stability` and the nightly parameter(s) it sets (tasks/params.py).
FLAG_FIELDS = {
    "workspace": ["workspace.root"], "landing": ["landing"], "queries": ["queries"], "mode": ["mode"],
    "top_k": ["top_k"], "model": ["model.name_or_path"], "device": ["model.device"],
    "batch_size": ["model.batch_size"], "max_length": ["model.max_length"], "precision": ["model.precision"],
    "bos": ["model.bos"], "eos": ["model.eos"],
    "rank": ["projection.rank_in", "projection.rank_out"], "init": ["projection.init"],
    "estimator": ["fisher.estimator"], "damping": ["fisher.damping"], "force": ["refresh.force"],
}


def _run_args(parser: argparse.ArgumentParser) -> None:
    parser.description = PARAMETERS_RULE
    parser.add_argument("--params", type=Path, help="JSON file of the nightly flow's parameters; flags override it")
    parser.add_argument("--workspace", help="state directory (default: .dataworth)")
    parser.add_argument("--landing", help="where new shards arrive (default: the bundled sample shards)")
    parser.add_argument("--queries", help="JSONL of model outputs to value (default: bundled queries)")
    parser.add_argument("--model", help="'sample' or a directory saved with save_pretrained")
    parser.add_argument("--device", help="model.device: auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--batch-size", type=int, help="model.batch_size: examples per pass")
    parser.add_argument("--max-length", type=int, help="model.max_length: tokens per example")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="model.precision")
    parser.add_argument("--bos", choices=["auto", "add", "omit"],
                        help="model.bos: BOS before each text and prompt; auto (the default): as the model's "
                        "tokenizer adds it (its config), add: always its bos_token, omit: none; tokenise as "
                        "the model was trained (a new store; an existing one keeps its own)")
    parser.add_argument("--eos", choices=["auto", "add", "omit"],
                        help="model.eos: EOS ending each text and each response; auto (the default): what the "
                        "tokenizer adds after a text and its eos_token after responses, add: always its "
                        "eos_token, omit: none (a new store; an existing one keeps its own)")
    parser.add_argument("--rank", type=int, help="projection.rank_in and rank_out of a new store")
    parser.add_argument("--init", choices=["random", "pca"], help="projection.init of a new store")
    parser.add_argument("--estimator", choices=["auto", "empirical", "true", "exact"],
                        help="fisher.estimator of a new store")
    parser.add_argument("--damping", type=float, help="fisher.damping: alpha of the next Fisher snapshot")
    parser.add_argument("--mode", choices=["dot", "cosine", "relatif"], help="influence mode")
    parser.add_argument("--top-k", type=int, help="top examples per query and provider in the report")
    parser.add_argument("--force", action="store_true", default=None, help="refresh the Fisher even if not due")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dataworth",
        description="Value a language model's training data per provider with LoGra influence functions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run a flow once from the terminal, with progress output")
    run.add_argument("flow", choices=["nightly", "ingest", "refresh-fisher", "score"])
    _run_args(run)

    server = commands.add_parser("server", help="start a local Prefect server and UI (SQLite)")
    server.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    server.add_argument("--port", type=int, default=4200, help="API and UI port (default: %(default)s)")
    how = server.add_mutually_exclusive_group()
    how.add_argument("--background", action="store_true",
                     help="start it detached (or reuse one that answers there) and return once it is healthy")
    how.add_argument("--stop", action="store_true", help="stop the background server of this PREFECT_HOME")
    server.add_argument("--timeout", type=float, default=900.0,
                        help="seconds --background waits for a healthy server (default: %(default)s)")

    serve = commands.add_parser("serve", help="register the deployments and serve them for the UI and schedule")
    _run_args(serve)  # the deployments' default parameters, as for `run`
    serve.add_argument("--cron", default="0 2 * * *", help="nightly schedule (default: %(default)s)")
    serve.add_argument("--timezone", default="UTC", help="IANA time zone of the cron (default: %(default)s)")
    serve.add_argument("--reports-port", type=int, default=4201,
                       help="serve the workspace's reports on 127.0.0.1 at this port, so the report links in the "
                       "UI open (0: none; default: %(default)s)")

    stability = commands.add_parser(
        "stability", help="measure now how provider credit moves with what still moves it (shown on reports; the "
        "nightly run measures it when due): the PCA calibration sample (the default init), or the projection seed "
        "at init=random, and the Fisher's sampled labels (the default estimator for language models)"
    )
    _run_args(stability)
    stability.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                           help="seeds of the calibration draws (PCA: each a random half of the landing data), "
                           "or of the projection (random init), and of the sampled labels (default: 0 1 2)")

    store = commands.add_parser("store", help="inspect the gradient store, or upgrade an older one")
    store.add_argument("action", choices=["info", "verify", "migrate"])
    _workspace_args(store)
    store.add_argument("--store", help="store URL (default: the workspace's store.zarr)")
    store.add_argument("--json", action="store_true", help="machine-readable output")

    from flows.eval_cli import add_eval_arguments

    add_eval_arguments(commands.add_parser("eval", help="counterfactual accuracy checks of the credits"))

    report = commands.add_parser("report", help="work with reports")
    report.add_argument("action", choices=["diff"])
    report.add_argument("a", type=Path, help="older report (report.json or its directory)")
    report.add_argument("b", type=Path, help="newer report")
    report.add_argument("--json", action="store_true", help="machine-readable output (warnings included)")
    # One list of examples: each subcommand's --help shows the lines about it.
    for name, subparser in commands.choices.items():
        subparser.epilog = "examples:\n" + "\n".join(
            line for line in EXAMPLES.splitlines() if line.split()[1:2] == [name])
        subparser.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _flow_params(args: argparse.Namespace):
    """The nightly parameters of PARAMETERS_RULE: the --params file, each flag given set over it."""
    from tasks.params import NightlyParams

    data = json.loads(args.params.read_text()) if args.params else {}
    if not isinstance(data, dict):
        raise ValueError(f"{args.params}: expected a JSON object of parameters, got {type(data).__name__}")
    for flag, fields in FLAG_FIELDS.items():
        if (value := getattr(args, flag)) is None:
            continue
        for field in fields:
            *groups, leaf = field.split(".")
            target = data
            for group in groups:  # merge into the file's group: the flag replaces one field, not the group
                target = target.setdefault(group, {})
                if not isinstance(target, dict):
                    raise ValueError(f"{args.params}: {group} must be an object, not {target!r}")
            target[leaf] = value
    return NightlyParams.model_validate(data)


def _run(args: argparse.Namespace) -> int:
    from prefect.states import State

    from flows import fisher, ingest, nightly, score
    from tasks.params import flow_kwargs

    params = _flow_params(args)
    state: State
    if args.flow == "nightly":
        state = nightly.nightly_valuation(**flow_kwargs(params), return_state=True)
    elif args.flow == "ingest":
        state = ingest.ingest(**flow_kwargs(params.ingest()), return_state=True)
    elif args.flow == "refresh-fisher":
        state = fisher.refresh_fisher(**flow_kwargs(params.refresh_fisher()), return_state=True)
    else:
        state = score.score(**flow_kwargs(params.score()), return_state=True)
    # The flows print their own summaries; end with the one line a script or a person checks.
    print(f"\n{args.flow}: {state.name}" + (f" - {state.message}" if state.message else ""))
    if link := _ui_link(state):
        print(f"in the Prefect UI: {link}")
    return 0 if state.is_completed() else 1


def _ui_link(state) -> str | None:
    """The run's page in the UI of the server it ran against; None for a temporary server, which
    is gone with the run."""
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL

    if not PREFECT_API_URL.value() or not PREFECT_UI_URL.value():
        return None
    return f"{PREFECT_UI_URL.value()}/runs/flow-run/{state.state_details.flow_run_id}"


def _stability(args: argparse.Namespace) -> int:
    from tasks.stability import measure_on_demand

    print(measure_on_demand(_flow_params(args), args.seeds))
    return 0


def _store(args: argparse.Namespace) -> int:
    from storage import StoreError
    from storage.inspect import format_info, store_info, verify_store
    from storage.migrate import migrate_store
    from tasks.params import Workspace

    url = args.store or Workspace(root=args.workspace).store_url
    try:
        if args.action == "migrate":
            print("\n".join(migrate_store(url)))
            return 0
        if args.action == "info":
            info = store_info(url)
            print(json.dumps(info, indent=2, default=str) if args.json else format_info(info))
            return 0
        problems = verify_store(url)
    except StoreError as err:  # a typo in --workspace or an old store deserves one line, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"store": url, "problems": problems}, indent=2))
    else:
        print("\n".join(f"problem: {p}" for p in problems) or f"{url}: OK")
    return 1 if problems else 0


def _report(args: argparse.Namespace) -> int:
    from reporting.diff import diff_reports, format_diff, load_report

    diff = diff_reports(load_report(args.a), load_report(args.b))
    print(diff.model_dump_json(indent=2) if args.json else format_diff(diff))
    return 0


def _server(args: argparse.Namespace) -> int:
    from flows.server import ServerError, ensure_server, start_server, stop_server

    if args.stop:
        print(stop_server())
        return 0
    if not args.background:
        start_server(host=args.host, port=args.port)
    try:
        server = ensure_server(args.host, args.port, timeout=args.timeout)
    except ServerError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"Prefect server ready: {server.ui_url}" + ("" if server.pid else " (already running)"))
    print(f"  in other shells: export PREFECT_API_URL={server.api_url}")
    if server.pid:
        print("  stop it: dataworth server --stop")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from flows.deployments import nightly_schedule, serve_deployments
    from flows.reports_server import serve_reports
    from tasks.params import Workspace
    from tasks.scoring import REPORTS_URL

    params = _flow_params(args)
    nightly_schedule(args.cron, args.timezone)  # a typo is one line now, not a traceback from the API later
    # Absolute, so runs started from the UI find the same state whatever their working directory.
    params = params.model_copy(update={"workspace": Workspace(root=str(params.workspace.path))})
    if args.reports_port and not os.environ.get(REPORTS_URL):  # an operator's own web server wins
        url, _ = serve_reports(params.workspace.reports, port=args.reports_port)
        os.environ[REPORTS_URL] = url  # the flow runs started from here inherit it
        print(f"reports of {params.workspace.path} at {url}/")
    serve_deployments(params, cron=args.cron, timezone=args.timezone)
    return 0


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    from flows.eval_cli import run_eval

    handler = {
        "eval": run_eval,
        "run": _run, "stability": _stability, "store": _store, "report": _report,
        "server": _server, "serve": _serve,
    }
    try:
        return handler[args.command](args)
    except Exception as err:
        from tasks.failures import INPUT_ERRORS, one_line

        if not isinstance(err, INPUT_ERRORS):
            raise
        # Bad input found before a flow ran (a --params file, a queries file for stability):
        # the message names it; a traceback would only bury it.
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
