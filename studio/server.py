"""One FastAPI server: the painter's static files and meshes, and three Gradio apps on their paths.

    /                 the demo (semantic contact, affordance)
    /annotate         the annotator workflow (``?worker=ID`` or a login)
    /admin            the admin console (admin login; closed when no admin account is configured)
    /studio/static/   painter.js, scene_picker.js, three.js's build, and the few ES modules the painter
                      imports from ``studio/web/node_modules`` (three's OrbitControls, three-mesh-bvh), by name
    /studio/mesh/     body meshes by topology, task objects by task id (JSON for the painter), GenZI scenes
                      by load token (binary, ``studio.genzi``)
"""
from __future__ import annotations

import re
from pathlib import Path

import gradio as gr
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from annotations import workflow
from annotations.store import MAX_ID
from engine.errors import InputError, MissingAssetError
from studio.admin import build_admin
from studio.annotate import build_annotate
from studio.context import Studio, mesh_json, public_message
from studio.crowd import session_digest
from studio.demo import build_demo
from studio.genzi import add_scene_routes
from studio.painter_api import add_painter_api
from studio.payloads import PAYLOAD_PREFIX, image_extension
from studio.settings import ADMIN_PASSWORD_ENV, ADMIN_USER_ENV, any_login
from studio.security import SecurityGate
from studio.study import add_study_routes
from studio.uploads import guard_file_inputs

WEB = Path(__file__).resolve().parent / "web"
THREE_BUILD = WEB / "node_modules" / "three" / "build"
# The painter's library modules: served name -> file in node_modules. Nothing else there is reachable.
LIBRARY_MODULES = {
    "OrbitControls.js": WEB / "node_modules" / "three" / "examples" / "jsm" / "controls" / "OrbitControls.js",
    "three-mesh-bvh.js": WEB / "node_modules" / "three-mesh-bvh" / "build" / "index.module.js",
}
# Without a bundler the bare specifier 'three' means nothing to a browser: the library modules import
# three from the same URL the painter does (one module instance), relative to /studio/static/lib/.
BARE_THREE = re.compile(r"""(\bfrom\s*)(['"])three\2""")
THREE_FROM_LIB = "../three/three.module.js"
API_SCHEMA = re.compile(rb"<script>window\.gradio_api_info = .*?;</script>", re.S)
CLOSED_ADMIN = (f"<h1>Admin console closed</h1><p>Set ${ADMIN_USER_ENV} and ${ADMIN_PASSWORD_ENV} (at least 8 "
                "characters) before starting the server to open it.</p>")


def build_server(studio: Studio) -> FastAPI:
    app = FastAPI(title="Interaction Studio", docs_url=None, redoc_url=None, openapi_url=None)
    settings = studio.settings
    # No origin but the server's own: no CORS headers at all (this also keeps Gradio from adding its own).
    app.add_middleware(CORSMiddleware, allow_origins=[], allow_credentials=False)
    app.add_middleware(SecurityGate, trusted_proxies=settings.trusted_proxies, throttle=studio.login_throttle,
                       admin_prefix="/admin" if settings.admin is not None else None,
                       admin_user=lambda scope: logged_in(app, "/admin", scope))
    add_static_routes(app)
    add_mesh_routes(app, studio)
    add_payload_routes(app, studio)
    add_painter_api(app, studio)
    add_scene_routes(app, studio)
    add_study_routes(app, studio)
    add_page_redirects(app, ["/annotate"] + (["/admin"] if settings.admin is not None else []))
    if settings.admin is not None:
        hide_schema_from_login_page(app, "/admin")
        mount(app, build_admin(studio), "/admin", studio, auth=settings.admin.check, private_files=studio.admin_files)
    else:
        app.add_api_route("/admin", lambda: HTMLResponse(CLOSED_ADMIN, status_code=503), methods=["GET"])
    mount(app, build_annotate(studio), "/annotate", studio,
          auth=any_login(settings.annotator_logins) if settings.annotator_logins else None)
    mount(app, build_demo(studio), "/", studio)
    studio.start_sweeper()
    return app


def add_page_redirects(app: FastAPI, paths: list[str]) -> None:
    """``/annotate?worker=ID`` and ``/admin`` (the links handed out) open the pages mounted at ``PATH/``:
    a redirect that keeps the query string."""
    def redirect_to(path: str):
        def redirect(request: Request) -> RedirectResponse:
            query = request.url.query
            return RedirectResponse(f"{path}/" + (f"?{query}" if query else ""), status_code=307)
        return redirect

    for path in paths:
        app.add_api_route(path, redirect_to(path), methods=["GET", "HEAD"], include_in_schema=False)


def mount(app: FastAPI, page: gr.Blocks, path: str, studio: Studio, auth=None, private_files: Path | None = None) -> None:
    """Queue the page (REST calls cannot skip the queue), refuse forged file inputs, and mount it.

    Every file input must be an upload to this server (``studio.uploads.guard_file_inputs``). Only
    ``gr.Error`` messages reach the browser (``show_error=False``: no exception text, path or traceback).
    ``private_files``: a folder of its own for this page's Gradio cache, served only by this page
    (behind its login), never by the public pages; without it, the page shares Gradio's upload folder.
    Nothing else on disk is servable: no ``allowed_paths`` besides that folder.
    """
    page.queue(api_open=False, default_concurrency_limit=studio.settings.store_concurrency)
    page.delete_cache = (studio.settings.sweep_every_s, studio.settings.cache_max_age_s)  # Gradio's own files
    guard_file_inputs(page, studio, refused_roots=() if private_files is not None else (studio.admin_files,))
    app.state.pages = {**getattr(app.state, "pages", {}), path: page}  # every mounted page (the tests walk them)
    allowed = []
    if private_files is not None:
        for block in [page, *page.blocks.values()]:
            block.GRADIO_CACHE = str(private_files)
        allowed = [str(private_files)]
    gr.mount_gradio_app(app, page, path, auth=auth, max_file_size=studio.settings.max_upload_bytes, show_error=False,
                        allowed_paths=allowed, ssr_mode=False, footer_links=["api"] if path == "/" else [])
    if private_files is not None:  # this page's uploads land in its private folder too, not the shared one
        mounted_page_app(app, path).uploaded_file_dir = str(private_files)


def mounted_page_app(app: FastAPI, path: str):
    """The Gradio app mounted at ``path`` (None when nothing is)."""
    for route in app.routes:
        if isinstance(route, Mount) and route.path == path:
            return route.app
    return None


def logged_in(app: FastAPI, path: str, scope) -> str | None:
    """The user logged into the page at ``path`` by this request's cookies (Gradio's session tokens), or None."""
    page_app = mounted_page_app(app, path)
    if page_app is None:
        return None
    cookies = {}
    for key, value in scope.get("headers", []):
        if key == b"cookie":
            for item in value.decode("latin-1").split(";"):
                name, _, token = item.strip().partition("=")
                cookies[name] = token
    for name in (f"access-token-{page_app.cookie_id}", f"access-token-unsecure-{page_app.cookie_id}"):
        if cookies.get(name) in page_app.tokens:
            return page_app.tokens[cookies[name]]
    return None


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
    """Only the painter's module, three's build folder and the named library modules are served (never
    node_modules at large)."""
    app.add_api_route("/studio/static/painter.js", _file_route(WEB / "painter.js", "text/javascript"), methods=["GET"])
    app.add_api_route("/studio/static/scene_picker.js", _file_route(WEB / "scene_picker.js", "text/javascript"),
                      methods=["GET"])
    app.mount("/studio/static/three", StaticFiles(directory=THREE_BUILD, check_dir=False), name="three")
    for name, path in LIBRARY_MODULES.items():
        app.add_api_route(f"/studio/static/lib/{name}", _module_route(path), methods=["GET"])


def library_module_source(path: Path) -> str:
    """The module's text with ``from 'three'`` pointing at three's build as the painter imports it."""
    return BARE_THREE.sub(lambda match: f"{match.group(1)}{match.group(2)}{THREE_FROM_LIB}{match.group(2)}",
                          path.read_text(encoding="utf-8"))


def _module_route(path: Path):
    cache: dict[float, str] = {}

    def serve() -> Response:
        if not path.is_file():
            raise HTTPException(404, f"{path.name} is missing; run `make run` (it installs the web assets)")
        stamp = path.stat().st_mtime
        if stamp not in cache:
            cache.clear()
            cache[stamp] = library_module_source(path)
        return Response(cache[stamp], media_type="text/javascript", headers={"Cache-Control": "no-cache"})
    return serve


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
            raise HTTPException(404, public_message(error)) from None  # a missing body file: no server path

    @app.get("/studio/mesh/task/{task_id}.json")
    def task_mesh(task_id: str, request: Request) -> JSONResponse:
        """A task's object, only for an annotator of this browser session who holds (or held) the task,
        or for the admin; everyone else gets the same 404 as for a task that does not exist."""
        unknown = HTTPException(404, "no such task for you; open it from your annotator page")
        if not task_id.isdigit() or len(task_id) > 10 or not 1 <= int(task_id) <= MAX_ID:
            raise unknown
        number = int(task_id)
        holders = studio.session_annotators(session_digest(request))
        if logged_in(app, "/admin", request.scope) is None and not workflow.holds_task(studio.store, holders, number):
            raise unknown
        try:
            task = studio.store.task(number)
            if task.object_id is None:
                raise InputError(f"task {number} has no object; its body is at /studio/mesh/body/{task.topology}.json")
            points, faces = studio.store.object_geometry(task.object_id)
        except InputError as error:
            raise HTTPException(404, str(error)) from None
        return JSONResponse(mesh_json(task.topology, points, faces), headers={"Cache-Control": "private, max-age=3600"})


def add_payload_routes(app: FastAPI, studio: Studio) -> None:
    """The painter's cached, content-addressed parts (``studio.payloads``): the body mesh for anyone, a task's
    starting layers and image only for a browser session holding the task, or the admin."""
    payloads = studio.payloads
    immutable = "max-age=31536000, immutable"

    def respond(payload, request: Request, cache: str) -> Response:
        if request.headers.get("if-none-match") == f'"{payload.digest}"':
            return Response(status_code=304, headers={"ETag": f'"{payload.digest}"', "Cache-Control": cache})
        headers = {"ETag": f'"{payload.digest}"', "Cache-Control": cache, "Vary": "Accept-Encoding"}
        body = payload.body
        if payload.gzipped:
            if "gzip" in request.headers.get("accept-encoding", ""):
                headers["Content-Encoding"] = "gzip"
            else:
                body = payload.plain()
        return Response(body, media_type=payload.media_type, headers=headers)

    @app.get(PAYLOAD_PREFIX + "/body/{topology}/{digest}.json")
    def body_payload(topology: str, digest: str, request: Request) -> Response:
        try:
            payload = payloads.body(topology)
        except (InputError, MissingAssetError):
            raise HTTPException(404, "no such body on this server") from None
        if digest != payload.digest:
            raise HTTPException(404, "this mesh changed; reload the page")
        return respond(payload, request, "public, " + immutable)

    @app.get(PAYLOAD_PREFIX + "/task/{task_id}/{name}")
    def task_payload(task_id: str, name: str, request: Request) -> Response:
        unknown = HTTPException(404, "no such task for you; open it from your annotator page")
        digest, _, extension = name.partition(".")
        if not task_id.isdigit() or len(task_id) > 10 or not 1 <= int(task_id) <= MAX_ID or len(digest) != 64:
            raise unknown
        number = int(task_id)
        browser = session_digest(request)
        if not payloads.holds(browser, number):
            if logged_in(app, "/admin", request.scope) is None and \
                    not workflow.holds_task(studio.store, studio.session_annotators(browser), number):
                raise unknown
            payloads.remember_holder(browser, number)
        task = payloads.task(number, studio.store.task)
        try:
            if extension == "json":
                payload = payloads.annotation(task)
            elif extension == image_extension(task.image.format):
                payload = payloads.image(task)
            else:
                raise unknown
        except (InputError, MissingAssetError, OSError):
            raise unknown from None
        if payload.digest != digest:
            raise unknown
        return respond(payload, request, "private, " + immutable)


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
        self.app = build_server(studio)
        # Open heartbeat streams of gradio clients would hold a graceful shutdown for their whole timeout.
        # proxy_headers=False: client addresses come from studio.security, never from uvicorn's defaults.
        self._server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=port, log_level="warning",
                                                     proxy_headers=False, timeout_graceful_shutdown=1))
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
        self.studio.stop_sweeper()
        self.studio.store.close()
