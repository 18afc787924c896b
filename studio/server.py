"""One FastAPI server: the painter's static files and meshes, and three Gradio apps on their paths.

    /                 the demo (semantic contact, affordance)
    /annotate         the annotator workflow (``?worker=ID`` or a login)
    /admin            the admin console (admin login; closed when no admin account is configured)
    /studio/static/   painter.js and three.js from ``studio/web/node_modules``
    /studio/mesh/     body meshes by topology, task objects by task id (JSON for the painter)
"""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from engine.errors import InputError, MissingAssetError
from studio.admin import build_admin
from studio.annotate import build_annotate
from studio.context import Studio, mesh_json
from studio.demo import EXAMPLES, build_demo
from studio.settings import ADMIN_PASSWORD_ENV, ADMIN_USER_ENV, any_login
from studio.study import add_study_routes

WEB = Path(__file__).resolve().parent / "web"
THREE_BUILD = WEB / "node_modules" / "three" / "build"
API_SCHEMA = re.compile(rb"<script>window\.gradio_api_info = .*?;</script>", re.S)
CLOSED_ADMIN = (f"<h1>Admin console closed</h1><p>Set ${ADMIN_USER_ENV} and ${ADMIN_PASSWORD_ENV} (at least 8 "
                "characters) before starting the server to open it.</p>")


def build_server(studio: Studio) -> FastAPI:
    app = FastAPI(title="Interaction Studio", docs_url=None, redoc_url=None, openapi_url=None)
    add_static_routes(app)
    add_mesh_routes(app, studio)
    add_study_routes(app, studio)
    settings = studio.settings
    if settings.admin is not None:
        hide_schema_from_login_page(app, "/admin")
        mount(app, build_admin(studio), "/admin", studio, auth=settings.admin.check)
    else:
        app.add_api_route("/admin", lambda: HTMLResponse(CLOSED_ADMIN, status_code=503), methods=["GET"])
    mount(app, build_annotate(studio), "/annotate", studio,
          auth=any_login(settings.annotator_logins) if settings.annotator_logins else None)
    mount(app, build_demo(studio), "/", studio)
    return app


def mount(app: FastAPI, page: gr.Blocks, path: str, studio: Studio, auth=None) -> None:
    """Queue the page (REST calls cannot skip the queue) and mount it with the upload limit."""
    page.queue(api_open=False, default_concurrency_limit=studio.settings.store_concurrency)
    gr.mount_gradio_app(app, page, path, auth=auth, max_file_size=studio.settings.max_upload_bytes, show_error=True,
                        allowed_paths=[str(studio.outputs), str(EXAMPLES)], ssr_mode=False,
                        footer_links=["api"] if path == "/" else [])


def hide_schema_from_login_page(app: FastAPI, prefix: str) -> None:
    """Gradio puts every endpoint's schema into the page, even into the login page of an app behind auth;
    before login, the admin page goes out without it (no endpoint names, parameters or choices)."""
    @app.middleware("http")
    async def strip_schema(request: Request, call_next):
        response = await call_next(request)
        if request.method != "GET" or request.url.path not in (prefix, prefix + "/") \
                or "text/html" not in response.headers.get("content-type", ""):
            return response
        body = b"".join([chunk async for chunk in response.body_iterator])
        if b'"auth_required":true' in body:
            body = API_SCHEMA.sub(b"<script>window.gradio_api_info = {};</script>", body)
        headers = {key: value for key, value in response.headers.items() if key.lower() != "content-length"}
        return Response(body, status_code=response.status_code, headers=headers)


def add_static_routes(app: FastAPI) -> None:
    """Only the painter's module and three's build folder are served (never node_modules at large)."""
    app.add_api_route("/studio/static/painter.js", _file_route(WEB / "painter.js", "text/javascript"), methods=["GET"])
    app.mount("/studio/static/three", StaticFiles(directory=THREE_BUILD, check_dir=False), name="three")


def _file_route(path: Path, media_type: str):
    def serve() -> FileResponse:
        if not path.is_file():
            raise HTTPException(404, f"{path.name} is missing; run `make run` (it installs the web assets)")
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})
    return serve


def add_mesh_routes(app: FastAPI, studio: Studio) -> None:
    @app.get("/studio/mesh/body/{topology}.json")
    def body_mesh(topology: str) -> JSONResponse:
        try:
            return JSONResponse(studio.body_mesh_json(topology), headers={"Cache-Control": "max-age=3600"})
        except (InputError, MissingAssetError) as error:
            raise HTTPException(404, str(error)) from None

    @app.get("/studio/mesh/task/{task_id}.json")
    def task_mesh(task_id: int) -> JSONResponse:
        try:
            task = studio.store.task(task_id)
            if task.object_id is None:
                raise InputError(f"task {task_id} has no object; its body is at /studio/mesh/body/{task.topology}.json")
            points, faces = studio.store.object_geometry(task.object_id)
        except InputError as error:
            raise HTTPException(404, str(error)) from None
        return JSONResponse(mesh_json(task.topology, points, faces), headers={"Cache-Control": "max-age=3600"})


class BackgroundServer:
    """The studio served by uvicorn on a thread (tests and benchmarks): ``url`` without a trailing slash."""

    def __init__(self, studio: Studio, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 60.0):
        import socket
        import threading
        import time

        import uvicorn

        if port is None:
            with socket.socket() as probe:
                probe.bind((host, 0))
                port = probe.getsockname()[1]
        self.studio, self.url = studio, f"http://{host}:{port}"
        # Open heartbeat streams of gradio clients would hold a graceful shutdown for their whole timeout.
        self._server = uvicorn.Server(uvicorn.Config(build_server(studio), host=host, port=port, log_level="warning",
                                                     timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the studio server did not start on {self.url}")
            time.sleep(0.05)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.studio.store.close()
