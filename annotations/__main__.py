"""``python -m annotations import|next|export|stats|migrate --db URL``: the store from the command line."""
from __future__ import annotations

import argparse
import json
import sys

from tqdm import tqdm

from engine.errors import InputError, MissingAssetError


def store_options(default) -> argparse.ArgumentParser:
    """--db and --data, accepted before the subcommand and after it (``default``: SUPPRESS on the
    subcommands, so that a value given before the subcommand is not overwritten)."""
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--db", default=default, help="SQLAlchemy URL (default: $STUDIO_DB or sqlite under var/)")
    options.add_argument("--data", default=default, help="folder for stored images and objects (default: var/annotations)")
    return options


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m annotations", description=__doc__, parents=[store_options(None)])
    commands = parser.add_subparsers(dest="command", required=True)
    common = {"parents": [store_options(argparse.SUPPRESS)]}
    commands.add_parser("migrate", help="create or upgrade the database schema", **common)
    batch = commands.add_parser("import", help="import a folder, .zip, .csv, .jsonl or an export folder", **common)
    batch.add_argument("source")
    batch.add_argument("--labels", default="", help="'|'-separated labels for images without a manifest")
    batch.add_argument("--topology", help="body of the tasks without one (default: the best body installed in "
                                          "--models: smplh-6890, smplx-10475, smpl-6890, else openbody-v1)")
    batch.add_argument("--models", help="the server's models folder (default: $STUDIO_MODELS or models/): tasks on "
                                        "a body whose file is missing there are refused")
    batch.add_argument("--force", action="store_true",
                       help="import tasks on a body the server cannot show (no annotator can paint them until "
                            "its file is installed)")
    batch.add_argument("--redundancy", type=int, default=3)
    batch.add_argument("--priority", type=int, default=0)
    batch.add_argument("--allow-repeat", action="store_true", help="import a batch that was imported before")
    nxt = commands.add_parser("next", help="assign the next task to a worker and print it as JSON", **common)
    nxt.add_argument("worker")
    export = commands.add_parser("export", help="write training data (DAMON npz, PIAD txt, manifest)", **common)
    export.add_argument("out")
    export.add_argument("--format", choices=("studio", "interactvlm"), default="studio",
                        help="'studio': npz + PIAD files + manifest; 'interactvlm': the InteractVLM release's "
                             "DAMON human-contact folder (damon/<split>/...), read by its own training code")
    export.add_argument("--split", choices=("train", "test"), default="train", help="interactvlm format: the split")
    export.add_argument("--source", choices=("consensus", "gold"), default="consensus")
    export.add_argument("--min-agreement", type=float)
    export.add_argument("--agreement-metric", choices=("kappa", "iou"), default="kappa")
    export.add_argument("--include-flagged", action="store_true")
    export.add_argument("--only-qualified", action="store_true")
    export.add_argument("--min-annotators", type=int, default=1)
    export.add_argument("--weighted", action="store_true", help="weight votes by gold accuracy")
    export.add_argument("--models", help="models dir, for the SMPL-X variant through smpl_to_smplx.pkl")
    commands.add_parser("stats", help="print QC: gold accuracy per annotator, agreement per task", **common)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from annotations.store import Store

    try:
        store = Store(args.db, data_dir=args.data)
        print(json.dumps(run(store, args), indent=1, default=str))
    except (InputError, MissingAssetError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def run(store, args) -> dict:
    if args.command == "migrate":
        return {"migrated": store.url.split("@")[-1]}
    if args.command == "import":
        from annotations.batch import BatchDefaults, import_batch
        from engine.paths import models_dir

        defaults = BatchDefaults(labels=tuple(filter(None, args.labels.split("|"))), topology=args.topology,
                                 redundancy=args.redundancy, priority=args.priority)
        report = import_batch(store, args.source, defaults=defaults, allow_repeat=args.allow_repeat,
                              models_dir=models_dir(args.models), force=args.force)
        return report.__dict__
    if args.command == "next":
        from annotations.workflow import next_task

        annotator = store.ensure_annotator(args.worker)
        assignment = next_task(store, annotator.id)
        return {"task": None} if assignment is None else {
            "assignment": assignment.id, "task": assignment.task.id, "kind": assignment.task.kind,
            "labels": assignment.task.labels, "topology": assignment.task.topology,
            "image": str(assignment.task.image.path), "gold": assignment.task.is_gold}
    if args.command == "export":
        return export(store, args)
    return stats(store)


def export(store, args) -> dict:
    from annotations.export import ExportFilters, export_interactvlm, export_training_data

    filters = ExportFilters(source=args.source, min_agreement=args.min_agreement,
                            agreement_metric=args.agreement_metric, exclude_flagged=not args.include_flagged,
                            only_qualified=args.only_qualified, min_annotators=args.min_annotators,
                            weighted=args.weighted)
    progress = lambda items: tqdm(items, desc="export", file=sys.stderr)
    if args.format == "interactvlm":
        manifest = export_interactvlm(store, args.out, filters, models_dir=args.models, split=args.split,
                                      progress=progress)
    else:
        manifest = export_training_data(store, args.out, filters, models_dir=args.models, progress=progress)
    return {"export_id": manifest.export_id, "format": args.format, "directory": str(manifest.directory),
            "content_hash": manifest.content_hash, "counts": manifest.counts}


def stats(store) -> dict:
    from annotations.review import quality_report

    report = quality_report(store)
    return {"submissions": report.total_submissions,
            "annotators": [a.__dict__ for a in report.annotators],
            "tasks": [{"task_id": t.task_id, "submissions": t.submissions, "flags": t.flags,
                       "fleiss_kappa": t.agreement.fleiss_kappa, "mean_pairwise_iou": t.agreement.mean_pairwise_iou}
                      for t in report.tasks]}


if __name__ == "__main__":
    sys.exit(main())
