"""Interaction Studio entry point: ``python app.py [serve|doctor|engine]``."""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="app.py", description="Interaction Studio: 3D human-object contact in the browser.")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="start the web app (default)")
    serve.add_argument("--models", default=None, help="models directory (default: $STUDIO_MODELS or models/)")
    serve.add_argument("--db", default=None, help="annotation store URL (default: $STUDIO_DB or SQLite under var/)")
    serve.add_argument("--data", default=None, help="folder for the store's images and objects (default: var/annotations)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7860)
    serve.add_argument("--gpu-concurrency", type=int, default=1, help="GPU-bound events that run at once (default 1)")
    serve.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda[:N]")
    serve.add_argument("--annotator-logins", default=None,
                       help="file of username:password lines; without it annotators use /annotate?worker=ID")
    serve.add_argument("--trusted-proxy", action="append", default=[], metavar="ADDRESS",
                       help="reverse proxy address or network whose X-Forwarded-For is believed (repeatable)")
    serve.add_argument("--require-signed-links", action="store_true",
                       help="annotators need ?worker=ID&sig=HMAC links (needs $STUDIO_WORKER_SECRET)")
    _engine_options(serve)
    doctor = commands.add_parser("doctor", help="list model files found, missing, and where each goes")
    doctor.add_argument("--models", default=None, help="models directory (default: $STUDIO_MODELS or models/)")
    _engine_options(doctor)
    engine = commands.add_parser("engine", help="start (or update) the models on a Ray cluster with Ray Serve")
    engine.add_argument("--config", default=str(ENGINE_CONFIG), help="engine config (default: deploy/engine.toml)")
    engine.add_argument("--address", default=None, help="the cluster's HOST:PORT (default: the config's address)")
    engine.add_argument("--models", default=None, help="models directory as the replicas see it "
                                                      "(default: the config's models_dir, else $STUDIO_MODELS)")
    engine.add_argument("--down", action="store_true", help="delete the config's deployments instead")
    return parser


ENGINE_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "deploy", "engine.toml")


def _engine_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="local",
                        help="local (models in this process, default), ray://HOST:PORT (Ray Serve deployments "
                             "started by `app.py engine` on the cluster whose head is HOST:PORT) or ray (the "
                             "address in --engine-config)")
    parser.add_argument("--engine-config", default=ENGINE_CONFIG,
                        help="which models are deployed and how, for --engine ray://... (default: deploy/engine.toml)")


def build_engine(models: str | None, device: str = "auto", gpu_concurrency: int = 1, engine: str = "local",
                 engine_config: str = ENGINE_CONFIG):
    """The one Engine of this process, with every model the studio and the CLIs use registered.

    ``engine``: ``local`` (every model in this process), ``ray://HOST:PORT`` (the models of ``engine_config``
    through Ray Serve; the others still in this process) or ``ray`` (the same, at the config's address)."""
    from engine.errors import InputError
    from engine.paths import models_dir
    from engine.runtime import Engine, EngineConfig

    local = Engine(EngineConfig(models_dir=models_dir(models), device=device, gpu_concurrency=gpu_concurrency))
    from engine.registry import register_models

    register_models(local)
    if engine.strip().lower() == "local":
        return local
    choice = engine.strip().lower()
    if choice != "ray" and not choice.startswith("ray://"):
        raise InputError(f"--engine must be 'local', 'ray' (the config's address) or ray://HOST:PORT, got {engine!r}")
    from engine.serving import RayEngine, ServeConfig  # ray is imported only for an engine on Ray

    return RayEngine(ServeConfig.from_file(engine_config, address=None if choice == "ray" else engine), local)


def doctor(models: str | None, engine: str = "local", engine_config: str = ENGINE_CONFIG) -> int:
    from engine.assets import doctor_report
    from engine.errors import InputError
    from engine.paths import models_dir

    from studio.server import THREE_BUILD

    print(doctor_report(models_dir(models)).format())
    print()
    try:
        print(build_engine(models, engine=engine, engine_config=engine_config).status().format())
    except InputError as error:
        print(f"Engine: {error}")
    three = THREE_BUILD / "three.module.js"
    state = "[found]  " if three.is_file() else "[missing] (run `make run`, which runs npm ci in studio/web)"
    print(f"\nPainter web assets: {state} {three}")
    return 0


def build_studio(settings, engine: str = "local", engine_config: str = ENGINE_CONFIG):
    """The process's one Studio: one Engine (``engine``: see :func:`build_engine`) and one Store shared by every page."""
    from annotations.store import Store, StoreConfig
    from studio.context import Studio

    engine = build_engine(str(settings.models_dir), settings.device, settings.gpu_concurrency, engine, engine_config)
    config = StoreConfig(unverified_timeout_s=settings.unsigned_assignment_timeout_s)
    return Studio(settings, engine, Store(settings.db_url, data_dir=settings.data_dir, config=config))


def settings_from_args(args):
    from pathlib import Path

    from engine.paths import models_dir
    from studio.settings import StudioSettings, admin_from_env, logins_from_file, worker_secret_from_env

    logins = logins_from_file(args.annotator_logins) if args.annotator_logins else ()
    return StudioSettings(models_dir=models_dir(args.models), db_url=args.db,
                          data_dir=Path(args.data) if args.data else None, gpu_concurrency=args.gpu_concurrency,
                          admin=admin_from_env(), annotator_logins=logins, device=args.device,
                          trusted_proxies=tuple(args.trusted_proxy), worker_secret=worker_secret_from_env(),
                          require_signed_workers=args.require_signed_links)


def serve(args) -> int:
    import uvicorn

    from engine.errors import InputError
    from studio.server import build_server

    try:
        settings = settings_from_args(args)
    except (InputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if settings.admin is None:
        print("note: /admin is closed; set STUDIO_ADMIN_USER and STUDIO_ADMIN_PASSWORD to open it", file=sys.stderr)
    # This server's own upload folder (swept by the studio), unless the deployment names one.
    from engine.paths import var_dir

    os.environ.setdefault("GRADIO_TEMP_DIR", str(var_dir() / "gradio-uploads"))
    try:
        studio = build_studio(settings, args.engine, args.engine_config)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"bodies ready for the painter: {', '.join(studio.warm_up())}")
    app = build_server(studio)
    base = f"http://{args.host}:{args.port}"
    print(f"Interaction Studio on {base}/\n  annotators: {base}/annotate?worker=ID\n  admin:      {base}/admin")
    # Client addresses come from studio.security (X-Forwarded-For only from --trusted-proxy), not uvicorn.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


def start_engine(args) -> int:
    """Deploy (or with --down delete) the config's models on the Ray cluster, then print the cluster's state."""
    from engine.errors import InputError
    from engine.paths import models_dir

    try:
        from engine.serving import RayEngine, ServeConfig, deploy, undeploy

        config = ServeConfig.from_file(args.config, address=args.address)
        if args.down:
            names = undeploy(config)
            print(f"deleted: {', '.join(names) or 'nothing was running'}")
            return 0
        folder = args.models or (str(config.models_dir) if config.models_dir else None)
        local = build_engine(folder, device="cpu")
        names = deploy(config, local.names(), models_dir=str(models_dir(folder)))
        print(f"deployed on {config.address}: {', '.join(names)}")
        print("\n".join(RayEngine(config, local).cluster_status().format()))
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "doctor":
        return doctor(args.models, args.engine, args.engine_config)
    if args.command == "engine":
        return start_engine(args)
    if args.command is None:
        args = _parser().parse_args(["serve", *(argv or [])])
    if args.command == "serve":
        return serve(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
