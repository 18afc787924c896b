"""The admin console's "Studies" tab (role: admin): design a perceptual A/B study, open / pause / close it,
recruitment links, the live analysis with its plots, the power calculator and the exports.

Handlers stay thin: parse the form, call ``annotations.studies`` / ``annotations.study_stats``, format.
"""
from __future__ import annotations

import html
import math

import gradio as gr
import pandas as pd

from annotations import studies
from annotations.files import read_zip
from annotations.models import RUN_KINDS, STUDY_STATES
from annotations.studies_export import response_rows, rows_csv, rows_jsonl, summary_json
from annotations.studies_sources import items_from_runs, items_from_upload, run_pairings, with_catch_items
from annotations.study_stats import analyse, power_plan
from engine.errors import InputError
from studio import study_plots
from studio.context import STORE_LANE, Studio, user_errors
from studio.uploads import accept_upload

REFRESH_SECONDS = 15
SOURCES = ("upload", "runs")
DESIGN_FIELDS = ("slug", "title", "method_a", "method_b", "source", "files", "folder_a", "folder_b", "run_kind",
                 "run_file", "reference_file", "question", "likert", "likert_question", "items_per_participant",
                 "attention_checks", "make_checks", "max_failed_checks", "consent", "instructions", "time_limit_s",
                 "completion_code", "redirect_url", "signed_links", "fast_answer_s", "seed")


def uploaded_files(studio: Studio, values) -> dict[str, bytes]:
    """Zips opened safely (``read_zip``), other files by their own names; one flat mapping name -> bytes."""
    files: dict[str, bytes] = {}
    for value in values or []:
        path = accept_upload(studio, value, what="the study files")
        if path.stat().st_size > studio.settings.max_upload_bytes:
            raise InputError(f"{path.name} is over the {studio.settings.max_upload_bytes // 2**20} MiB upload limit")
        content = read_zip(path) if path.suffix.lower() == ".zip" else {path.name: path.read_bytes()}
        clash = sorted(set(files) & set(content))
        if clash:
            raise InputError(f"two uploads hold the same file name(s): {clash[:5]}")
        files.update(content)
    if not files:
        raise InputError("upload a zip (pairs CSV or one folder per method), or a pairs CSV with its files")
    return files


def _number(value, name: str, *, whole: bool = True, empty=None):
    if value is None or str(value).strip() == "":
        return empty
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {str(value)[:30]!r}") from None
    if not math.isfinite(number) or (whole and number != int(number)):
        raise InputError(f"{name} must be a {'whole ' if whole else ''}number, got {value!r}")
    return int(number) if whole else number


def design_config(form: dict) -> studies.StudyConfig:
    items = _number(form["items_per_participant"], "items per participant", empty=0)
    limit = _number(form["time_limit_s"], "time limit", whole=False, empty=0.0)
    return studies.StudyConfig(
        question=str(form["question"] or ""), likert=form["likert"] or "none",
        likert_question=str(form["likert_question"] or ""), items_per_participant=items or None,
        attention_checks=_number(form["attention_checks"], "attention checks", empty=0),
        max_failed_checks=_number(form["max_failed_checks"], "failed checks allowed", empty=0),
        consent=str(form["consent"] or ""), instructions=str(form["instructions"] or ""),
        time_limit_s=limit or None, completion_code=str(form["completion_code"] or "").strip(),
        redirect_url=str(form["redirect_url"]).strip() or None if form["redirect_url"] else None,
        signed_links=bool(form["signed_links"]),
        fast_answer_s=_number(form["fast_answer_s"], "very-fast threshold", whole=False, empty=1.0))


def design_items(studio: Studio, form: dict, config: studies.StudyConfig) -> list:
    if form["source"] == "runs":
        items = items_from_runs(studio.store, form["run_kind"], form["method_a"].strip(), form["method_b"].strip(),
                                file_name=(form["run_file"] or "").strip() or None,
                                reference_name=(form["reference_file"] or "").strip() or None)
    elif form["source"] == "upload":
        items = items_from_upload(uploaded_files(studio, form["files"]),
                                  (form["folder_a"] or "").strip() or form["method_a"].strip(),
                                  (form["folder_b"] or "").strip() or form["method_b"].strip(),
                                  limits=studio.store.config.image_limits)
    else:
        raise InputError(f"the items' source is one of {SOURCES}")
    if form["make_checks"] and config.attention_checks:
        items = with_catch_items(items, config.attention_checks, seed=_number(form["seed"], "seed", empty=0) or 0)
    return items


def run_pair_choices(studio: Studio) -> list[str]:
    """The run picker's entries: each two methods with runs on the same inputs (HOI, GenZI, ...), in words."""
    return [pairing.label for pairing in run_pairings(studio.store)]


def run_pair_fields(studio: Studio, label: str) -> tuple[str, str, str]:
    """(run kind, method A, method B) of a picker entry."""
    for pairing in run_pairings(studio.store):
        if pairing.label == label:
            return pairing.kind, pairing.method_a, pairing.method_b
    raise InputError("that pair of runs is no longer there; press 'Find run pairs' again")


def create_from_form(studio: Studio, form: dict) -> str:
    config = design_config(form)
    items = design_items(studio, form, config)
    study = studies.create_study(studio.store, slug=str(form["slug"] or "").strip(), title=str(form["title"] or ""),
                                 method_a=str(form["method_a"] or ""), method_b=str(form["method_b"] or ""),
                                 items=items, config=config, seed=_number(form["seed"], "seed"))
    return (f"<p id='study-created'>Created study <code>{html.escape(study.slug)}</code> with {study.num_items} items "
            f"and {study.num_catch_items} attention checks; it is <b>{study.state}</b>. Completion code "
            f"<code>{html.escape(study.config.completion_code)}</code>.</p>")


def change_state(studio: Studio, slug: str, state: str) -> str:
    study = studies.set_state(studio.store, str(slug or ""), state)
    return f"<p id='study-state'>Study <code>{html.escape(study.slug)}</code> is now <b>{study.state}</b>.</p>"


def link_for(studio: Studio, slug: str, pid: str, session: str, base_url: str) -> str:
    return studies.recruitment_link(studio.store, str(slug or ""), base_url, (pid or "").strip() or None,
                                    (session or "").strip() or None)


def base_url(request: gr.Request | None) -> str:
    headers = getattr(request, "headers", None) or {}
    host = headers.get("x-forwarded-host") or headers.get("host") or "127.0.0.1:7860"
    return f"{headers.get('x-forwarded-proto', 'http')}://{host}"


def analysis_view(studio: Studio, slug: str, apply_exclusions: bool) -> tuple:
    """(summary html, plots html, per-item table, participant table)."""
    slug = str(slug or "")
    study = studies.study(studio.store, slug)
    records = studies.response_records(studio.store, slug)
    result = analyse(records, max_failed_checks=study.config.max_failed_checks,
                     fast_answer_s=study.config.fast_answer_s, seed=study.seed)
    shown = result.kept if apply_exclusions else result.all
    joined, finished = studies.participation(studio.store, slug)
    summary = summary_html(study, shown, result, joined, finished, apply_exclusions)
    plots = "".join((study_plots.preference_plot(shown, study.method_a), study_plots.items_plot(shown, study.method_a),
                     study_plots.likert_plot(shown, study.method_a, study.method_b) if study.config.likert != "none"
                     else ""))
    items = pd.DataFrame([{"item": item.item, f"picks of {study.method_a}": item.preference.successes,
                           "answers": item.preference.trials, "share": _round(item.preference.share),
                           "CI low": _round(item.preference.ci_low), "CI high": _round(item.preference.ci_high)}
                          for item in shown.items])
    people = pd.DataFrame([{"participant": p.participant, "answers": p.answers, f"picks of {study.method_a}": p.picks_a,
                            "picks left": p.picks_left, "agreement": _round(p.agreement),
                            "median s": _round(p.median_seconds), "very fast": p.fast_answers,
                            "checks failed": f"{p.checks_failed}/{p.checks}", "excluded": p.excluded,
                            "why": p.reason} for p in result.people])
    return summary, f"<div id='study-plots'>{plots}</div>", items, people


def summary_html(study, shown, result, joined: int, finished: int, apply_exclusions: bool) -> str:
    pref, boot, bias, time = shown.preference, shown.preference_bootstrap, shown.position_bias, shown.timing
    rows = [("participants joined / finished", f"{joined} / {finished}"),
            ("shown", "without excluded participants" if apply_exclusions else "every participant"),
            ("participants in this view", shown.participants),
            ("answers (timeouts)", f"{shown.responses} ({shown.timeouts})"),
            (f"preference for {study.method_a}", f"{_pct(pref.share)} ({pref.successes}/{pref.trials}), Wilson 95% CI "
             f"{_pct(pref.ci_low)}–{_pct(pref.ci_high)}, exact binomial p = {_p(pref.p_value)}"),
            ("participant bootstrap 95% CI", f"{_pct(boot.ci_low)}–{_pct(boot.ci_high)}"),
            ("position bias (left / top picks)", f"{_pct(bias.share)} ({bias.successes}/{bias.trials}), "
             f"p = {_p(bias.p_value)}"),
            ("time per trial", f"median {_round(time.median_seconds)} s (10–90%: {_round(time.p10_seconds)}–"
             f"{_round(time.p90_seconds)} s); {time.fast_answers} answers under {time.fast_threshold_s} s"),
            ("excluded by attention checks", ", ".join(f"{p.participant} ({p.reason})" for p in result.excluded)
             or "nobody")]
    for summary in shown.likert:
        if summary.count:
            name = study.method_a if summary.method == "A" else study.method_b
            rows.append((f"Likert mean of {name}", f"{_round(summary.mean.value)} (95% CI {_round(summary.mean.ci_low)}"
                         f"–{_round(summary.mean.ci_high)}, n = {summary.count})"))
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in rows)
    return f"<table id='study-summary'>{body}</table>"


def power_view(preference, alpha, power, items, icc) -> str:
    plan = power_plan(float(_number(preference, "preference", whole=False)),
                      float(_number(alpha, "alpha", whole=False)),
                      float(_number(power, "power", whole=False)), _number(items, "items per participant"),
                      float(_number(icc, "intra-participant correlation", whole=False, empty=0.0)))
    return (f"<p id='study-power'>To detect {_pct(plan.preference)} against 50% (Cohen's h = {plan.effect_size_h:.3f}) "
            f"at α = {plan.alpha} with {_pct(plan.power)} power: <b>{plan.judgments}</b> judgments, i.e. "
            f"<b>{plan.participants}</b> participants × {plan.items_per_participant} items (design effect "
            f"{plan.design_effect:.2f}). Exact binomial power at {plan.judgments} judgments: "
            f"{_pct(plan.exact_power)}.</p>")


def export_files(studio: Studio, slug: str) -> list[str]:
    slug = str(slug or "")
    study = studies.study(studio.store, slug)
    records = studies.response_records(studio.store, slug)
    result = analyse(records, max_failed_checks=study.config.max_failed_checks,
                     fast_answer_s=study.config.fast_answer_s, seed=study.seed)
    rows = response_rows(study, records, result)
    folder = studio.output_folder()
    outputs = {f"{slug}-responses.csv": rows_csv(rows), f"{slug}-responses.jsonl": rows_jsonl(rows),
               f"{slug}-summary.json": summary_json(study, result, studies.participation(studio.store, slug))}
    for name, data in outputs.items():
        (folder / name).write_bytes(data)
    return [str(folder / name) for name in outputs]


def study_choices(studio: Studio) -> list[str]:
    return [study.slug for study in studies.list_studies(studio.store)]


def _round(value) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 3)


def _pct(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def _p(value) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.4g}"


def build_studies_tab(studio: Studio) -> None:
    """The "Studies" tab, built inside the admin console's Blocks."""
    lane = {"concurrency_id": STORE_LANE, "concurrency_limit": studio.settings.store_concurrency}
    with gr.Tab("Studies"):
        with gr.Accordion("Design a study", open=True):
            with gr.Row():
                slug = gr.Textbox(label="short name (the page is /study/<name>)", elem_id="study-slug")
                title = gr.Textbox(label="title shown to participants", elem_id="study-title")
                method_a = gr.Textbox(label="method A (never shown)", elem_id="study-method-a")
                method_b = gr.Textbox(label="method B (never shown)", elem_id="study-method-b")
            source = gr.Radio(list(SOURCES), value="upload", label="items from: an upload, or the studio's runs")
            files = gr.File(label="zip with a pairs CSV (item,a,b[,reference][,catch]) or one folder per method "
                                  "(+ reference/), or a CSV with its files", file_count="multiple")
            with gr.Row():
                folder_a = gr.Textbox(label="folder of A (default: method A's name)")
                folder_b = gr.Textbox(label="folder of B (default: method B's name)")
            with gr.Row():
                run_pairs = gr.Dropdown([], label="pairs in the studio's runs (picks the kind and both methods)",
                                        elem_id="study-run-pairs")
                find_pairs = gr.Button("Find run pairs", elem_id="study-find-pairs")
            with gr.Row():
                run_kind = gr.Dropdown(list(RUN_KINDS), value="hoi", label="run kind")
                run_file = gr.Textbox(label="run file to show (default: first image, video or GLB)")
                reference_file = gr.Textbox(label="run file shown as the reference image (default: the input photo)")
            question = gr.Textbox(studies.StudyConfig.question, label="question")
            with gr.Row():
                likert = gr.Radio(list(studies.LIKERT_MODES), value="none", label="Likert rating 1-5")
                likert_question = gr.Textbox(studies.StudyConfig.likert_question, label="rating question")
            with gr.Row():
                items_per_participant = gr.Number(0, precision=0, label="items per participant (0 = all)")
                attention_checks = gr.Number(0, precision=0, label="attention checks per participant")
                make_checks = gr.Checkbox(True, label="make the checks from broken renders of image items")
                max_failed = gr.Number(0, precision=0, label="exclude after failing more than")
            consent = gr.Textbox(label="consent text", lines=3)
            instructions = gr.Textbox(label="instructions", lines=3)
            with gr.Row():
                time_limit = gr.Number(0, label="time limit per trial, s (0 = none)")
                completion_code = gr.Textbox(label="completion code (empty: generated)")
                redirect_url = gr.Textbox(label="redirect URL at the end (optional)")
            with gr.Row():
                signed = gr.Checkbox(False, label="signed links only")
                fast = gr.Number(1.0, label="flag answers faster than, s")
                seed = gr.Number(None, precision=0, label="seed (empty: random)")
            create = gr.Button("Create study", variant="primary", elem_id="study-create")
            created = gr.HTML(elem_id="study-create-report")
        with gr.Row():
            chosen = gr.Dropdown([], label="study", allow_custom_value=True, elem_id="study-choice")
            state = gr.Radio(list(STUDY_STATES), value="open", label="state")
            apply_state = gr.Button("Apply", elem_id="study-apply-state")
        state_report = gr.HTML()
        with gr.Row():
            pid = gr.Textbox(label="participant id (empty: the Prolific template)")
            session = gr.Textbox(label="session id")
            make_link = gr.Button("Recruitment link")
        link = gr.Textbox(label="link", elem_id="study-link")
        with gr.Row():
            exclusions = gr.Checkbox(True, label="apply exclusions")
            show = gr.Button("Analyse", elem_id="study-analyse")
        summary = gr.HTML(elem_id="study-summary-box")
        plots = gr.HTML()
        item_table = gr.Dataframe(label="per item", interactive=False)
        people_table = gr.Dataframe(label="participants", interactive=False)
        timer = gr.Timer(REFRESH_SECONDS)
        with gr.Accordion("Power calculator", open=False):
            with gr.Row():
                p_pref = gr.Number(0.62, label="preference to detect")
                p_alpha = gr.Number(0.05, label="α")
                p_power = gr.Number(0.8, label="power")
                p_items = gr.Number(20, precision=0, label="items per participant")
                p_icc = gr.Number(0.0, label="intra-participant correlation")
            compute = gr.Button("Compute")
            power_report = gr.HTML()
        export = gr.Button("Export responses (CSV, JSONL) and summary (JSON)")
        exported = gr.File(label="exports", file_count="multiple")

    design = [slug, title, method_a, method_b, source, files, folder_a, folder_b, run_kind, run_file, reference_file,
              question, likert, likert_question, items_per_participant, attention_checks, make_checks, max_failed,
              consent, instructions, time_limit, completion_code, redirect_url, signed, fast, seed]

    @user_errors
    def on_create(*values):
        report = create_from_form(studio, dict(zip(DESIGN_FIELDS, values)))
        return report, gr.Dropdown(choices=study_choices(studio), value=str(values[0]).strip())

    create.click(on_create, inputs=design, outputs=[created, chosen], api_name="study_create", **lane)

    @user_errors
    def on_find_pairs():
        choices = run_pair_choices(studio)
        if not choices:
            raise InputError("no two methods have runs on the same input yet (HOI saves its fit and the "
                             "silhouette-only baseline together; GenZI needs a second method on the same scene, "
                             "point and prompt)")
        return gr.Dropdown(choices=choices, value=choices[0])

    @user_errors
    def on_pick_pair(label):
        if not label:
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        kind, a, b = run_pair_fields(studio, label)
        return "runs", kind, a, b

    find_pairs.click(on_find_pairs, outputs=[run_pairs], api_name="study_run_pairs", **lane)
    run_pairs.change(on_pick_pair, inputs=[run_pairs], outputs=[source, run_kind, method_a, method_b],
                     api_name="study_pick_run_pair", **lane)
    apply_state.click(user_errors(lambda s, value: change_state(studio, s, value)), inputs=[chosen, state],
                      outputs=[state_report], api_name="study_state", **lane)

    @user_errors
    def on_link(s, pid_value, session_value, request: gr.Request):
        return link_for(studio, s, pid_value, session_value, base_url(request))

    make_link.click(on_link, inputs=[chosen, pid, session], outputs=[link], api_name="study_link", **lane)
    view = [summary, plots, item_table, people_table]
    analyse_now = user_errors(lambda s, apply: analysis_view(studio, s, apply))
    show.click(analyse_now, inputs=[chosen, exclusions], outputs=view, api_name="study_analysis", **lane)

    def on_tick(s, apply):
        if not s:
            return [gr.skip()] * 4
        return analyse_now(s, apply)

    timer.tick(on_tick, inputs=[chosen, exclusions], outputs=view, api_name="study_analysis_tick",
               api_visibility="private", **lane)
    compute.click(user_errors(power_view), inputs=[p_pref, p_alpha, p_power, p_items, p_icc], outputs=[power_report],
                  api_name="study_power")
    export.click(user_errors(lambda s: export_files(studio, s)), inputs=[chosen], outputs=[exported],
                 api_name="study_export", **lane)
