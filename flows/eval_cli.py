"""`dataworth eval`: argparse glue over the evaluation package.

    dataworth eval --task austen                  # real text: Jane Austen's novels as providers
    dataworth eval --task breast-cancer           # real classification, LDS over 100 subsets
    dataworth eval --task lm --check lds --subsets 32 --retrains 2 --out eval-results/lm
    dataworth eval --task lm --retrain-command "python train.py --indices {indices} --seed {seed} --out {output}"

The real tasks need the eval extra (pip install 'dataworth[eval]') and, for austen, the Debian
package r-cran-janeaustenr; `lm` and `classification` (self-written data) are for tests and demos.
"""

from __future__ import annotations

import argparse
import json
from fnmatch import fnmatchcase
from pathlib import Path

TASKS = ("austen", "breast-cancer", "classification", "lm")
CHECK_CHOICES = ("lds", "brittleness", "lopo", "all")


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=TASKS, default="breast-cancer",
                        help="ready-made task (default: %(default)s); austen and breast-cancer are real data")
    parser.add_argument("--check", nargs="+", choices=CHECK_CHOICES,
                        help="checks to run (default: the task's; lds and lopo on the real tasks, all on the others)")
    parser.add_argument("--stability-seeds", type=int, metavar="N",
                        help="also measure how stable the shipped default's credit is over N projection seeds "
                        "(PCA init: N calibration halves) (default: 5 on the real tasks, 0 elsewhere)")
    parser.add_argument("--stability-method", metavar="NAME",
                        help="the method whose stability is measured (default: the shipped defaults, "
                        "e.g. logra-pca-r16-true8-a0.1-dot on austen)")
    parser.add_argument("--subsets", type=int, help="LDS: random half-subsets M (default: per task)")
    parser.add_argument("--retrains", type=int, help="retrains R per subset, provider and removal (default: per task)")
    parser.add_argument("--top-k", type=int, help="brittleness: examples removed per query (default: 10)")
    parser.add_argument("--brittleness-queries", type=int, help="brittleness: queries tested (default: per task)")
    parser.add_argument("--methods", nargs="+", metavar="GLOB",
                        help="only methods whose names match (default: the whole suite; see docs/evaluation.md)")
    parser.add_argument("--brittleness-methods", nargs="+", metavar="GLOB",
                        help="methods the brittleness check retrains for (default: the suite's eight, "
                        "or those of --methods)")
    parser.add_argument("--retrain-command", metavar="CMD",
                        help="retrain with this shell command instead of the task's own training; placeholders "
                        "{indices} (JSON list of training indices), {seed}, "
                        "{output} (write a JSON list of query losses there)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the LDS subsets and random removals")
    parser.add_argument("--out", type=Path, help="output directory (default: eval-results/<task>)")
    parser.add_argument("--checkpoint", type=Path,
                        help="retrain outcomes, saved after each retrain; a rerun resumes from it "
                        "(default: <out>/checkpoint.json)")


def _matching(methods, patterns):
    if not patterns:
        return list(methods)
    chosen = [m for m in methods if any(fnmatchcase(m.name, p) for p in patterns)]
    if not chosen:
        raise SystemExit(f"no method matches {patterns}; names look like {methods[0].name}")
    return chosen


def _named(methods, name):
    for method in methods:
        if method.name == name:
            return method
    raise SystemExit(f"no method is named {name}; names look like {methods[0].name}")


def _updated(config, **changes):
    """`config` with the options the user gave (None: not given), validated like the original."""
    return type(config).model_validate({**config.model_dump(), **{k: v for k, v in changes.items() if v is not None}})


def _eval_config(args: argparse.Namespace, defaults):
    from evaluation.runner import CHECKS, EvalConfig

    return EvalConfig(
        checks=(defaults.checks if not args.check
                else CHECKS if "all" in args.check else tuple(dict.fromkeys(args.check))),
        lds=_updated(defaults.lds, subsets=args.subsets, retrains=args.retrains, seed=args.seed),
        lopo=_updated(defaults.lopo, retrains=args.retrains),
        brittleness=_updated(defaults.brittleness, top_k=args.top_k, queries=args.brittleness_queries,
                             retrains=args.retrains, seed=args.seed),
    )


def run_eval(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from evaluation import CommandRetrain, OutcomeCache, evaluate
    from evaluation.corpora import CorpusUnavailableError
    from evaluation.report import render_markdown
    from evaluation.suite import (
        PLANS,
        STABILITY_SEEDS,
        all_methods,
        brittleness_methods,
        headline_methods,
        recommended_method,
    )
    from evaluation.tasks import austen_task, breast_cancer_task, classification_task, language_model_task

    plan = PLANS[args.task]
    try:
        config = _eval_config(args, plan.checks)
    except ValidationError as err:
        print(f"dataworth eval: invalid option: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}")
        return 2
    out = args.out or Path("eval-results") / args.task
    out.mkdir(parents=True, exist_ok=True)
    print(f"building task {args.task} (training its model on all the data)...")
    builders = {"austen": lambda: austen_task(cache_dir=out), "breast-cancer": breast_cancer_task,
                "classification": classification_task, "lm": language_model_task}
    try:
        task = builders[args.task]()
    except (CorpusUnavailableError, ImportError) as err:
        print(f"dataworth eval: task {args.task} cannot run here: {err}")
        return 2
    retrain = CommandRetrain(args.retrain_command) if args.retrain_command else task.retrain
    identity = {**task.identity, "retrain": args.retrain_command or "built-in"}
    cache = OutcomeCache(retrain, task.n_queries, identity, args.checkpoint or out / "checkpoint.json")
    if cache.outcomes:
        print(f"resuming: {len(cache.outcomes)} retrains already in {cache.path}")
    methods = _matching(all_methods(plan), args.methods)
    listed = {m.name for m in methods}
    if args.brittleness_methods:
        brittle = _matching(all_methods(plan), args.brittleness_methods)
    else:  # the suite's brittleness set, narrowed by --methods (evaluate falls back to all listed)
        brittle = [m for m in brittleness_methods(plan) if m.name in listed]
    real = args.task in ("austen", "breast-cancer")
    seeds = STABILITY_SEEDS if args.stability_seeds is None and real else tuple(range(args.stability_seeds or 0))
    chosen = _named(all_methods(plan), args.stability_method) if args.stability_method else recommended_method(plan)
    stability = (chosen, seeds) if len(seeds) > 1 else None
    results = evaluate(task, methods, cache, config, brittle, stability)
    results["headline"] = [m.name for m in headline_methods(plan) if m.name in listed]
    markdown = render_markdown(results)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"written: {out / 'results.json'}, {out / 'results.md'}")
    return 0
