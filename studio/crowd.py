"""Who may act on ``/annotate``, and the admin's crowd controls.

- Browser sessions: ``SecurityGate`` gives every browser an opaque ``studio-session`` cookie (HttpOnly,
  SameSite=Lax). An annotator's page session is bound to the SHA-256 of that cookie when it starts;
  every later event must come with the same cookie, so a stolen Gradio ``session_hash`` alone cannot
  act for anyone.
- Signed worker links: ``/annotate?worker=ID&sig=HEX`` with ``HEX = HMAC-SHA256(secret, ID)`` (the
  secret from ``$STUDIO_WORKER_SECRET``), as crowd platforms can generate them. A worker id that
  once came signed is "verified" and never again accepted without its signature; the admin's switch
  makes signatures required for everyone. Unverified workers' open assignments expire sooner.
- Demo tasks ("Correct this", "Paint instead") belong to one fresh ``demo-...`` worker id bound to the
  visitor's browser session; they sit in the demo pool, which ``next_task`` never serves, until an
  admin promotes them.
"""
from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import secrets
from urllib.parse import urlencode

import gradio as gr
import pandas as pd

from engine.errors import InputError

log = logging.getLogger("studio.security")

SESSION_COOKIE = "studio-session"
MAX_LINKS = 10_000


def sign_worker(secret: str, worker_id: str) -> str:
    """The hex HMAC-SHA256 of a worker id (what ``sig=`` carries)."""
    return hmac.new(secret.encode(), worker_id.encode(), hashlib.sha256).hexdigest()


def signature_matches(secret: str | None, worker_id: str, signature: str) -> bool:
    if not secret or not signature:
        return False
    return hmac.compare_digest(sign_worker(secret, worker_id), str(signature).strip().lower())


def signed_link(secret: str, worker_id: str, base_url: str = "") -> str:
    return f"{base_url.rstrip('/')}/annotate?{urlencode({'worker': worker_id, 'sig': sign_worker(secret, worker_id)})}"


def session_digest(request) -> str | None:
    """SHA-256 of the request's ``studio-session`` cookie (None without one)."""
    cookies = getattr(request, "cookies", None) or {}
    value = cookies.get(SESSION_COOKIE)
    if not value:
        return None
    return hashlib.sha256(value.encode("latin-1", "replace")).hexdigest()


def client_address(request) -> str:
    client = getattr(request, "client", None)
    return getattr(client, "host", None) or "unknown"


def signed_links_csv(secret: str | None, prefix: str, count, base_url: str) -> tuple[str, str]:
    """(CSV text of worker_id,link rows, a preview of the first links) for ``count`` fresh worker ids."""
    if not secret:
        raise InputError("set $STUDIO_WORKER_SECRET (16+ characters) before starting the server to sign links")
    try:
        count = int(count)
    except (TypeError, ValueError):
        raise InputError("the number of links must be a whole number") from None
    if not 1 <= count <= MAX_LINKS:
        raise InputError(f"generate between 1 and {MAX_LINKS} links at once, got {count}")
    prefix = str(prefix or "w").strip()
    if not prefix or len(prefix) > 32 or not prefix.replace("-", "").replace("_", "").isalnum():
        raise InputError("the worker id prefix must be 1-32 letters, digits, - or _")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["worker_id", "link"])
    links = []
    for _ in range(count):
        worker = f"{prefix}-{secrets.token_hex(6)}"
        links.append(signed_link(secret, worker, base_url or ""))
        writer.writerow([worker, links[-1]])
    return buffer.getvalue(), "\n".join(links[:5]) + ("\n..." if count > 5 else "")


def demo_pool_table(studio) -> pd.DataFrame:
    rows = []
    for task_id in studio.store.demo_task_ids()[:500]:
        task = studio.store.task(task_id)
        rows.append({"task": task.id, "kind": task.kind, "labels": ", ".join(task.labels),
                     "image": task.image.original_name})
    return pd.DataFrame(rows, columns=["task", "kind", "labels", "image"])


def crowd_tab(studio, lane: dict) -> None:
    """The admin console's "Crowd" tab: the signed-link switch, a batch of signed links, the demo pool."""
    from studio.context import user_errors

    secret = studio.settings.worker_secret
    with gr.Tab("Crowd"):
        require = gr.Checkbox(studio.require_signed_workers, interactive=secret is not None,
                              label="require signed worker links (?worker=ID&sig=...)", elem_id="require-signed")
        with gr.Row():
            prefix = gr.Textbox("w", label="worker id prefix", elem_id="links-prefix")
            count = gr.Number(100, precision=0, minimum=1, maximum=MAX_LINKS, label="how many links")
            base = gr.Textbox("", label="base URL (e.g. https://studio.example.org)", elem_id="links-base")
        make_links = gr.Button("Generate signed links", elem_id="make-links")
        links_file = gr.File(label="signed links (CSV: worker_id, link)", elem_id="links-file")
        preview = gr.Textbox(label="first links", lines=5, interactive=False, elem_id="links-preview")
        gr.Markdown("**Demo pool**: tasks made from the public demo. No crowd annotator is served them until "
                    "you promote one.")
        show_pool = gr.Button("Show the demo pool", elem_id="show-demo-pool")
        pool = gr.Dataframe(label="demo pool", interactive=False, elem_id="demo-pool")
        with gr.Row():
            promote_id = gr.Number(label="task id", precision=0, elem_id="promote-task")
            promote = gr.Button("Promote to the crowd queue", elem_id="promote")
        promoted = gr.Markdown(elem_id="promote-status")

    @user_errors
    def on_require(value):
        if value and secret is None:
            raise InputError("set $STUDIO_WORKER_SECRET before starting the server to require signed links")
        studio.require_signed_workers = bool(value)
        log.warning("admin set signed worker links %s", "required" if value else "optional")
        return bool(value)

    @user_errors
    def on_links(prefix_value, count_value, base_value):
        text, shown = signed_links_csv(secret, prefix_value, count_value, base_value)
        folder = studio.output_folder()
        path = folder / "signed-links.csv"
        path.write_text(text)
        return str(path), shown

    @user_errors
    def on_promote(task_id):
        if task_id is None:
            raise InputError("enter the id of a demo task")
        task = studio.store.promote_task(int(task_id))
        log.warning("admin promoted demo task %d to the crowd queue", task.id)
        return f"Task {task.id} is in the crowd queue now.", demo_pool_table(studio)

    require.change(on_require, inputs=[require], outputs=[require], api_name="require_signed_links", **lane)
    make_links.click(on_links, inputs=[prefix, count, base], outputs=[links_file, preview], api_name="signed_links",
                     **lane)
    promote.click(on_promote, inputs=[promote_id], outputs=[promoted, pool], api_name="promote_task", **lane)
    show_pool.click(user_errors(lambda: demo_pool_table(studio)), outputs=[pool], api_name="demo_pool", **lane)


def start_identity(studio, worker: str, signature: str, username: str | None, digest: str | None, address: str):
    """The annotator row this page session acts for, after every check (``InputError`` when refused)."""
    from annotations.store import check_external_id

    if digest is None:
        raise InputError("this page needs cookies: allow cookies for this site and reload the page")
    studio.session_starts.check(address)
    store = studio.store
    if studio.settings.annotator_logins:
        if not username:
            raise InputError("log in first")
        if worker and worker != username:
            log.warning("annotator %r from %s opened a link for worker %r; the login is used", username, address,
                        worker)
        annotator = store.ensure_annotator(check_external_id(username))
        if not annotator.verified:
            annotator = store.mark_verified(annotator.id)
    else:
        if not worker:
            raise InputError("open this page with your worker id, e.g. /annotate?worker=YOUR_ID")
        worker = check_external_id(worker)
        signed = bool(signature)
        if signed and not signature_matches(studio.settings.worker_secret, worker, signature):
            log.warning("bad worker link signature for %r from %s", worker, address)
            raise InputError("this link's signature does not match its worker id; open the link exactly as you "
                             "received it")
        if not signed and studio.require_signed_workers and not worker.startswith("demo-"):
            raise InputError("this study needs a signed link (…?worker=ID&sig=…); open the link you received")
        annotator = store.ensure_annotator(worker)
        if annotator.bound_session is not None and not hmac.compare_digest(annotator.bound_session, digest):
            log.warning("worker %r is bound to another browser; refused for %s", worker, address)
            raise InputError("this painter link belongs to another browser session; open it where you made it")
        if not signed and annotator.verified and annotator.bound_session is None:
            raise InputError("this worker id needs its signed link; open the link you received")
        if signed and not annotator.verified:
            annotator = store.mark_verified(annotator.id)
    if annotator.role != "annotator":
        raise InputError("this id belongs to an admin account; annotators use their own worker id")
    studio.remember_session(digest, annotator.id)
    return annotator
