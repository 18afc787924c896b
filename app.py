"""Interaction Studio entry point: ``python app.py [serve|doctor]``."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

MAX_UPLOAD = "50mb"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Interaction Studio: 3D human-object contact in the browser.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="start the web app (default)")
    serve.add_argument("--models", default=None, help="models directory (default: $STUDIO_MODELS or models/)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    doctor = commands.add_parser("doctor", help="list model files found, missing, and where each goes")
    doctor.add_argument("--models", default=None, help="models directory (default: $STUDIO_MODELS or models/)")
    return parser


def build_engine(models: str | None, device: str = "auto"):
    """The one Engine of this process, with every model the studio and the CLIs use registered."""
    from engine.contact.predict import register_contact_models
    from engine.paths import models_dir
    from engine.runtime import Engine, EngineConfig

    engine = Engine(EngineConfig(models_dir=models_dir(models), device=device))
    register_contact_models(engine)
    return engine


def doctor(models: str | None) -> int:
    from engine.assets import doctor_report
    from engine.paths import models_dir

    print(doctor_report(models_dir(models)).format())
    print()
    print(build_engine(models).status().format())
    return 0


def serve(models: str | None, host: str, port: int) -> int:
    from engine.paths import models_dir
    from studio.preview import build_preview

    demo = build_preview(models_dir(models))
    demo.queue(default_concurrency_limit=1, api_open=False)
    demo.launch(server_name=host, server_port=port, max_file_size=MAX_UPLOAD, show_error=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return doctor(args.models)
    if args.command in (None, "serve"):
        return serve(getattr(args, "models", None), getattr(args, "host", "127.0.0.1"), getattr(args, "port", 7860))
    return 2


if __name__ == "__main__":
    sys.exit(main())
