"""Perceptual A/B studies in the store: design, participants, trials and responses.

A study compares method A with method B on items (pairs of stimuli, optionally with a reference image).
Each participant gets a plan drawn from their own seed (recorded): which items, in which order, and on
which side A is shown in each trial, with attention checks (catch items whose side "b" is a broken render)
mixed in. The participant page only ever sees opaque trial keys; which side is which method stays here.

    study = create_study(store, slug="hoi-vs-phosa", title="HOI fits", method_a="InteractVLM",
                         method_b="PHOSA", items=items, config=StudyConfig(attention_checks=2))
    set_state(store, "hoi-vs-phosa", "open")
    person = join(store, "hoi-vs-phosa", pid="P1", session="S1")
    trial = current_trial(store, "hoi-vs-phosa", person.token)       # marks it shown (server clock)
    respond(store, "hoi-vs-phosa", person.token, trial.key, "left")  # idempotent by trial key
    records = response_records(store, "hoi-vs-phosa")                # un-swapped, for the analysis

Rules: one response per item per participant; responses only to the participant's current trial (a
repeat of an answered trial returns the first receipt); paused and closed studies accept nothing; a
participant who reloads resumes at the same trial. Files live under ``<data dir>/studies/<slug>/``.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import shutil
import threading
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Sequence
from urllib.parse import urlencode, urlparse

import numpy as np
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from annotations import models
from annotations.domain import (Participant, ResponseReceipt, ResponseRecord, Stimulus, Study, StudyItem,
                                TrialView)
from annotations.errors import PayloadError
from annotations.store import Store, check_external_id, utcnow
from annotations.studies_media import CheckedStimulus
from engine.errors import InputError
from engine.paths import write_atomically

SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?")
LIKERT_MODES = ("none", "both", "chosen")
LIKERT_RANGE = (1, 5)
MAX_TEXT = 5000
MAX_ITEMS = 5000
TIMEOUT_GRACE_S = 2.0  # network slack before an answer past the time limit counts as a timeout
_RETRIES = 3
TRIAL_FILES_CACHED = 8192  # trials whose stimulus files are kept in memory per store (about 1 KiB each)


class StudyStateError(InputError):
    """The study is paused or closed (or unknown): it accepts no participant and no response now."""


class UnknownStudyError(StudyStateError):
    """No study has this short name."""


class TrialError(PayloadError):
    """A response names a trial that does not exist, is someone else's, or is not the current one."""


@dataclass(frozen=True)
class StudyConfig:
    """How a study runs.

    question: the two-alternative forced-choice question shown above the pair.
    likert: "none"; "both" (rate each side 1-5); or "chosen" (rate the chosen side only, as GenZI did).
    likert_question: the text above the rating.
    items_per_participant: regular items each participant sees (None: every one).
    attention_checks: catch trials per participant; max_failed_checks: excluded when failing more than this.
    consent, instructions: shown before the first trial (plain text; blank lines start paragraphs).
    time_limit_s: seconds per trial (None: no limit); an answer later than this counts as a timeout.
    completion_code: shown at the end (Prolific / MTurk); redirect_url: where the end page sends them.
    signed_links: only links carrying an HMAC signature of (study, pid, session) may join.
    fast_answer_s: answers quicker than this are flagged as very fast in the analysis.
    """

    question: str = "Which result looks more plausible?"
    likert: str = "none"
    likert_question: str = "How plausible is it? (1 = not at all, 5 = completely)"
    items_per_participant: int | None = None
    attention_checks: int = 0
    max_failed_checks: int = 0
    consent: str = ""
    instructions: str = ""
    time_limit_s: float | None = None
    completion_code: str = ""
    redirect_url: str | None = None
    signed_links: bool = False
    fast_answer_s: float = 1.0

    def __post_init__(self):
        _check_text("question", self.question, required=True, limit=500)
        _check_text("Likert question", self.likert_question, required=self.likert != "none", limit=500)
        if self.likert not in LIKERT_MODES:
            raise InputError(f"likert must be one of {LIKERT_MODES}, got {self.likert!r}")
        if self.items_per_participant is not None and not 1 <= _whole(self.items_per_participant, "items per "
                                                                       "participant") <= MAX_ITEMS:
            raise InputError(f"items per participant must be between 1 and {MAX_ITEMS}")
        if not 0 <= _whole(self.attention_checks, "attention checks") <= 100:
            raise InputError("attention checks per participant must be between 0 and 100")
        if _whole(self.max_failed_checks, "failed checks allowed") < 0:
            raise InputError("failed checks allowed must be 0 or more")
        _check_text("consent text", self.consent, limit=MAX_TEXT)
        _check_text("instructions", self.instructions, limit=MAX_TEXT)
        if self.time_limit_s is not None and not 1.0 <= float(self.time_limit_s) <= 3600.0:
            raise InputError(f"the time limit per trial must be between 1 and 3600 s, got {self.time_limit_s}")
        if self.completion_code and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", self.completion_code):
            raise InputError("a completion code is 1-64 letters, digits, '_' or '-'")
        if self.redirect_url is not None:
            check_redirect_url(self.redirect_url)
        if not 0.0 <= float(self.fast_answer_s) <= 60.0:
            raise InputError("the very-fast threshold must be between 0 and 60 s")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping) -> "StudyConfig":
        known = {field.name for field in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def _whole(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(value)


def _check_text(name: str, value, *, required: bool = False, limit: int = MAX_TEXT) -> None:
    if not isinstance(value, str) or len(value) > limit or (required and not value.strip()):
        raise InputError(f"the {name} must be text of {'1' if required else '0'}-{limit} characters")


def check_redirect_url(url: str) -> str:
    parsed = urlparse(str(url))
    if parsed.scheme not in ("http", "https") or not parsed.netloc or len(url) > 1000:
        raise InputError("the redirect URL must be an http(s) address, e.g. https://app.prolific.com/submissions/"
                         "complete?cc=CODE")
    return url


@dataclass(frozen=True)
class ItemSpec:
    """One item to create: a name, the checked stimuli of A and B, an optional reference, and whether it is a catch."""

    name: str
    a: CheckedStimulus
    b: CheckedStimulus
    reference: CheckedStimulus | None = None
    is_catch: bool = False
    source: Mapping = field(default_factory=dict)


# ---- designing --------------------------------------------------------------------------------------------


def create_study(store: Store, *, slug: str, title: str, method_a: str, method_b: str, items: Sequence[ItemSpec],
                 config: StudyConfig, seed: int | None = None, state: str = "paused") -> Study:
    """Store a study with its items and files (content-addressed under ``studies/<slug>/``); starts paused."""
    slug = check_slug(slug)
    _check_text("title", title, required=True, limit=200)
    for name, method in (("method A", method_a), ("method B", method_b)):
        _check_text(f"name of {name}", method, required=True, limit=200)
    if method_a.strip() == method_b.strip():
        raise InputError("methods A and B must have different names")
    if state not in models.STUDY_STATES:
        raise InputError(f"a study's state is one of {models.STUDY_STATES}, got {state!r}")
    check_items(items, config)
    if not config.completion_code:
        config = StudyConfig.from_json({**config.to_json(), "completion_code": secrets.token_hex(4).upper()})
    seed = secrets.randbelow(2**31) if seed is None else _whole(seed, "seed") % 2**31
    folder = studies_dir(store) / slug
    if folder.exists():
        raise InputError(f"a study named {slug!r} exists already; choose another name")
    folder.mkdir(parents=True)
    try:
        with store.session(write=True) as session:
            if session.scalar(select(models.StudyRow.id).where(models.StudyRow.slug == slug)):
                raise InputError(f"a study named {slug!r} exists already; choose another name")
            row = models.StudyRow(slug=slug, title=title.strip(), state=state, method_a=method_a.strip(),
                                  method_b=method_b.strip(), config=config.to_json(), seed=seed,
                                  link_secret=secrets.token_hex(32), created_at=utcnow())
            session.add(row)
            session.flush()
            for spec in items:
                _add_item(session, store, row.id, folder, spec)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return study(store, slug)


def check_slug(slug: str) -> str:
    if not isinstance(slug, str) or not SLUG.fullmatch(slug):
        raise InputError("a study's short name is 1-64 lowercase letters, digits and '-' (no '-' at either end)")
    return slug


def check_items(items: Sequence[ItemSpec], config: StudyConfig) -> None:
    """Names unique, A and B of one item in the same medium, enough regular and catch items for the plan."""
    if not items:
        raise InputError("a study needs at least one item (a pair of stimuli)")
    if len(items) > MAX_ITEMS:
        raise InputError(f"a study holds at most {MAX_ITEMS} items, got {len(items)}")
    names = [spec.name for spec in items]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"duplicate item names: {', '.join(map(repr, duplicates[:10]))}; "
                         "every item needs its own name")
    for spec in items:
        _check_text("item name", spec.name, required=True, limit=200)
        if spec.a.media != spec.b.media:
            raise InputError(f"item {spec.name!r}: A is {spec.a.media} but B is {spec.b.media}; both sides of a pair "
                             "must be the same kind (images, videos or GLB)")
        if spec.reference is not None and spec.reference.media != "image":
            raise InputError(f"item {spec.name!r}: the reference must be an image, got {spec.reference.media}")
    regular = sum(not spec.is_catch for spec in items)
    catches = len(items) - regular
    if regular == 0:
        raise InputError("a study needs at least one regular item besides its attention checks")
    if config.items_per_participant is not None and config.items_per_participant > regular:
        raise InputError(f"items per participant is {config.items_per_participant} but the study has only "
                         f"{regular} regular items")
    if config.attention_checks > catches:
        raise InputError(f"{config.attention_checks} attention checks per participant need at least as many catch "
                         f"items; the study has {catches}")


def _add_item(session: Session, store: Store, study_id: int, folder: Path, spec: ItemSpec) -> None:
    item = models.StudyItemRow(study_id=study_id, name=spec.name, is_catch=bool(spec.is_catch),
                               source=dict(spec.source))
    session.add(item)
    session.flush()
    for role, stimulus in (("a", spec.a), ("b", spec.b), ("reference", spec.reference)):
        if stimulus is None:
            continue
        path = folder / f"{stimulus.sha256}{stimulus.suffix}"
        if not path.exists():
            write_atomically(path, lambda handle, data=stimulus.data: handle.write(data))
        session.add(models.StudyStimulusRow(item_id=item.id, role=role, media=stimulus.media,
                                            content_type=stimulus.content_type, sha256=stimulus.sha256,
                                            path=str(path.relative_to(store.data_dir)),
                                            num_bytes=len(stimulus.data)))


def studies_dir(store: Store) -> Path:
    return store.data_dir / "studies"


def set_state(store: Store, slug: str, state: str) -> Study:
    """Open, pause or close a study (a closed study can be opened again)."""
    if state not in models.STUDY_STATES:
        raise InputError(f"a study's state is one of {models.STUDY_STATES}, got {state!r}")
    with store.session(write=True) as session:
        _study_row(session, slug).state = state
    return study(store, slug)


def study(store: Store, slug: str) -> Study:
    with store.session() as session:
        return _study_from_row(session, _study_row(session, slug))


def list_studies(store: Store) -> list[Study]:
    with store.session() as session:
        rows = session.scalars(select(models.StudyRow).order_by(models.StudyRow.id))
        return [_study_from_row(session, row) for row in rows]


def study_items(store: Store, slug: str) -> list[StudyItem]:
    with store.session() as session:
        row = _study_row(session, slug)
        items = session.scalars(select(models.StudyItemRow).where(models.StudyItemRow.study_id == row.id)
                                .order_by(models.StudyItemRow.id)).all()
        stimuli = session.scalars(select(models.StudyStimulusRow)
                                  .where(models.StudyStimulusRow.item_id.in_([item.id for item in items]))).all()
    by_item: dict[int, dict[str, Stimulus]] = {}
    for stimulus in stimuli:
        by_item.setdefault(stimulus.item_id, {})[stimulus.role] = _stimulus(store, stimulus)
    return [StudyItem(id=item.id, name=item.name, is_catch=item.is_catch, media=by_item[item.id]["a"].media,
                      stimuli=MappingProxyType(by_item[item.id]), source=MappingProxyType(dict(item.source)))
            for item in items]


def _stimulus(store: Store, row: models.StudyStimulusRow) -> Stimulus:
    return Stimulus(id=row.id, role=row.role, media=row.media, content_type=row.content_type, sha256=row.sha256,
                    path=store.data_dir / row.path, num_bytes=row.num_bytes)


def _study_row(session: Session, slug: str) -> models.StudyRow:
    row = session.scalar(select(models.StudyRow).where(models.StudyRow.slug == slug)) if isinstance(slug, str) else None
    if row is None:
        raise UnknownStudyError("there is no such study; check the link you were given")
    return row


def _study_from_row(session: Session, row: models.StudyRow) -> Study:
    counts = dict(session.execute(select(models.StudyItemRow.is_catch, func.count())
                                  .where(models.StudyItemRow.study_id == row.id)
                                  .group_by(models.StudyItemRow.is_catch)).all())
    return Study(id=row.id, slug=row.slug, title=row.title, state=row.state, method_a=row.method_a,
                 method_b=row.method_b, config=StudyConfig.from_json(row.config), seed=row.seed,
                 num_items=counts.get(False, 0), num_catch_items=counts.get(True, 0), created_at=row.created_at)


# ---- recruitment links ------------------------------------------------------------------------------------


def link_signature(secret: str, slug: str, pid: str, session: str) -> str:
    """HMAC-SHA256 (hex) of the study, participant and session ids under the study's secret."""
    message = "\n".join((slug, pid, session)).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def recruitment_link(store: Store, slug: str, base_url: str, pid: str | None = None,
                     session: str | None = None) -> str:
    """The participant link; signed for one pid and session when the study wants signed links.

    Without a pid it is the platform template (Prolific's placeholders) for unsigned studies.
    """
    with store.session() as db:
        row = _study_row(db, slug)
        secret, signed = row.link_secret, StudyConfig.from_json(row.config).signed_links
    base = f"{base_url.rstrip('/')}/study/{slug}"
    if pid is None:
        if signed:
            raise InputError("this study wants signed links: give the participant id (and session) to sign")
        return base + "?pid={{%PROLIFIC_PID%}}&session={{%SESSION_ID%}}"
    pid, session = check_external_id(pid), check_external_id(session or pid)
    query = {"pid": pid, "session": session}
    if signed:
        query["sig"] = link_signature(secret, slug, pid, session)
    return f"{base}?{urlencode(query)}"


# ---- participants -----------------------------------------------------------------------------------------


def participant_seed(study_seed: int, pid: str) -> int:
    """A participant's seed: stable for the same study and id, independent between ids."""
    digest = hashlib.sha256(f"{study_seed}:{pid}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def plan_trials(regular: Sequence[int], catches: Sequence[int], num_items: int, num_checks: int,
                seed: int) -> list[tuple[int, bool]]:
    """(item id, swapped) per position: ``num_items`` regular and ``num_checks`` catch items in a random order,
    each with A on the right (swapped) with probability 1/2. A pure function of its arguments and ``seed``."""
    rng = np.random.default_rng(seed)
    chosen = [int(regular[i]) for i in rng.permutation(len(regular))[:num_items]]
    chosen += [int(catches[i]) for i in rng.permutation(len(catches))[:num_checks]]
    order = [chosen[i] for i in rng.permutation(len(chosen))]
    swaps = rng.integers(0, 2, size=len(order)).astype(bool)
    return list(zip(order, map(bool, swaps)))


def join(store: Store, slug: str, pid: str, session: str, signature: str | None = None,
         create: bool = True) -> Participant | None:
    """The participant with this id, created with their plan on first sight (a reload finds the same one).

    With ``create=False`` an unknown participant gives None (the page asks for consent first).
    """
    pid, session = _participant_id(pid, "participant id"), _participant_id(session or pid, "session id")
    for attempt in range(_RETRIES):
        try:
            return _join_once(store, slug, pid, session, signature, create)
        except IntegrityError:  # the same pid joined from two tabs at once: the other request created them
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _participant_id(value, name: str) -> str:
    try:
        return check_external_id(value)
    except InputError:
        raise InputError(f"the link's {name} must be 1-128 printable characters") from None


def _join_once(store: Store, slug: str, pid: str, session_id: str, signature: str | None,
               create: bool) -> Participant | None:
    with store.session(write=True) as session:
        study_row = _study_row(session, slug)
        config = StudyConfig.from_json(study_row.config)
        if config.signed_links:
            expected = link_signature(study_row.link_secret, slug, pid, session_id)
            if not isinstance(signature, str) or not hmac.compare_digest(signature.encode(), expected.encode()):
                raise StudyStateError("this link is not valid for this study; open the exact link you were given")
        row = session.scalar(select(models.StudyParticipantRow)
                             .where(models.StudyParticipantRow.study_id == study_row.id,
                                    models.StudyParticipantRow.external_id == pid))
        _check_accepting(study_row, resuming=row is not None)
        if row is None and not create:
            return None
        if row is None:
            row, total = _new_participant(session, study_row, config, pid, session_id)
            return _participant_from_row(session, row, counts=(total, 0))
        return _participant_from_row(session, row)


def _check_accepting(row: models.StudyRow, resuming: bool = True) -> None:
    if row.state == "closed":
        raise StudyStateError("this study is closed and accepts no more answers. Thank you for your interest")
    if row.state == "paused":
        raise StudyStateError("this study is paused; please come back later" if resuming else
                              "this study is paused and takes no new participants now; please come back later")


def _new_participant(session: Session, study_row: models.StudyRow, config: StudyConfig, pid: str,
                     session_id: str) -> tuple[models.StudyParticipantRow, int]:
    """A new participant and their planned trials; with the number of trials."""
    items = session.execute(select(models.StudyItemRow.id, models.StudyItemRow.is_catch)
                            .where(models.StudyItemRow.study_id == study_row.id)
                            .order_by(models.StudyItemRow.id)).all()
    regular = [item_id for item_id, is_catch in items if not is_catch]
    catches = [item_id for item_id, is_catch in items if is_catch]
    seed = participant_seed(study_row.seed, pid)
    plan = plan_trials(regular, catches, config.items_per_participant or len(regular), config.attention_checks, seed)
    row = models.StudyParticipantRow(study_id=study_row.id, external_id=pid, session=session_id,
                                     token=secrets.token_urlsafe(24), seed=seed, created_at=utcnow())
    session.add(row)
    session.flush()
    # One multi-row INSERT (no ORM objects to track): joins hold the write lock as briefly as possible.
    session.execute(insert(models.StudyTrialRow),
                    [{"key": secrets.token_urlsafe(16), "participant_id": row.id, "item_id": item_id,
                      "position": position, "swapped": bool(swapped)}
                     for position, (item_id, swapped) in enumerate(plan)])
    return row, len(plan)


def _participant_from_row(session: Session, row: models.StudyParticipantRow,
                          counts: tuple[int, int] | None = None) -> Participant:
    """``counts``: (trials, answered) when the caller knows them (a participant just created), else two reads."""
    if counts is None:
        counts = (session.scalar(select(func.count()).where(models.StudyTrialRow.participant_id == row.id)),
                  session.scalar(select(func.count()).where(models.StudyResponseRow.participant_id == row.id)))
    total, answered = counts
    return Participant(id=row.id, study_id=row.study_id, external_id=row.external_id, session=row.session,
                       token=row.token, seed=row.seed, num_trials=total, num_answered=answered,
                       completed=row.completed_at is not None)


def participant(store: Store, slug: str, token: str) -> Participant:
    with store.session() as session:
        study_row = _study_row(session, slug)
        return _participant_from_row(session, _participant_row(session, study_row, token))


def _participant_row(session: Session, study_row: models.StudyRow, token,
                     store: Store | None = None) -> models.StudyParticipantRow:
    """The token's participant; with ``store``, locked until the end of the transaction (PostgreSQL), so that
    one participant's writes (a double click) take turns and the second sees the first's answer."""
    row = None
    if isinstance(token, str) and 0 < len(token) <= 64:
        statement = select(models.StudyParticipantRow).where(models.StudyParticipantRow.token == token)
        row = session.scalar(store.lock_for_update(statement) if store is not None else statement)
    if row is None or row.study_id != study_row.id:
        raise TrialError("unknown participant; reopen the link you were given")
    return row


def participant_trials(store: Store, slug: str, pid: str) -> list[tuple[int, int, bool]]:
    """(position, item id, swapped) of one participant's stored plan (admin and tests)."""
    with store.session() as session:
        study_row = _study_row(session, slug)
        row = session.scalar(select(models.StudyParticipantRow)
                             .where(models.StudyParticipantRow.study_id == study_row.id,
                                    models.StudyParticipantRow.external_id == pid))
        if row is None:
            raise InputError(f"no participant {pid!r} in study {slug!r}")
        trials = session.execute(select(models.StudyTrialRow.position, models.StudyTrialRow.item_id,
                                        models.StudyTrialRow.swapped)
                                 .where(models.StudyTrialRow.participant_id == row.id)
                                 .order_by(models.StudyTrialRow.position)).all()
        return [tuple(trial) for trial in trials]


# ---- trials and responses ---------------------------------------------------------------------------------


def current_trial(store: Store, slug: str, token: str) -> TrialView | None:
    """The participant's first unanswered trial (None when they are done); the first call marks it shown."""
    with store.session(write=True) as session:
        study_row = _study_row(session, slug)
        person = _participant_row(session, study_row, token, store)
        _check_accepting(study_row)
        return _current_view(session, *_progress(session, person.id), store=store, slug=slug)


def _progress(session: Session, participant_id: int) -> tuple[list[models.StudyTrialRow], set[int]]:
    """The participant's trials in order, and the ids of those answered (two indexed reads)."""
    trials = session.scalars(select(models.StudyTrialRow).where(models.StudyTrialRow.participant_id == participant_id)
                             .order_by(models.StudyTrialRow.position)).all()
    answered = set(session.scalars(select(models.StudyResponseRow.trial_id)
                                   .where(models.StudyResponseRow.participant_id == participant_id)))
    return list(trials), answered


def _first_open(trials: list[models.StudyTrialRow], answered: set[int]) -> models.StudyTrialRow | None:
    return next((trial for trial in trials if trial.id not in answered), None)


def _current_view(session: Session, trials: list[models.StudyTrialRow], answered: set[int], *, store: Store,
                  slug: str) -> TrialView | None:
    """The first open trial as the page sees it; its stimulus files are remembered for the stimulus route."""
    trial = _first_open(trials, answered)
    if trial is None:
        return None
    if trial.shown_at is None:
        trial.shown_at = utcnow()
    rows = session.scalars(select(models.StudyStimulusRow)
                           .where(models.StudyStimulusRow.item_id == trial.item_id)).all()
    files = _TrialFiles(slug, trial.swapped, MappingProxyType({row.role: _stimulus(store, row) for row in rows}))
    _trial_files_cache(store).put(trial.key, files)
    return TrialView(key=trial.key, position=trial.position + 1, total=len(trials), media=files.by_role["a"].media,
                     has_reference="reference" in files.by_role)


def respond(store: Store, slug: str, token: str, trial_key: str, choice: str, *, likert_left: int | None = None,
            likert_right: int | None = None, client_seconds: float | None = None) -> ResponseReceipt:
    """Store the answer to the participant's current trial. ``choice``: "left" or "right" as shown (top / bottom
    on a phone), or "timeout" when the page's time limit ran out. A repeat of an answered trial returns the
    first receipt with ``duplicate=True``; the time spent is measured on the server from when it was shown."""
    if choice not in models.STUDY_CHOICES:
        raise PayloadError(f"the choice must be one of {models.STUDY_CHOICES}, got {str(choice)[:20]!r}")
    ratings = tuple(_likert_value(value) for value in (likert_left, likert_right))
    client = _client_seconds(client_seconds)
    for attempt in range(_RETRIES):
        try:
            return _respond_once(store, slug, token, trial_key, choice, ratings, client)
        except IntegrityError:  # the same trial answered twice at once: the first one won
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _likert_value(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not \
            LIKERT_RANGE[0] <= value <= LIKERT_RANGE[1]:
        raise PayloadError(f"a rating is a whole number from {LIKERT_RANGE[0]} to {LIKERT_RANGE[1]}, "
                           f"got {str(value)[:20]!r}")
    return int(value)


def _client_seconds(value) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise PayloadError("the page's time must be a number of seconds") from None
    if not np.isfinite(seconds) or not 0 <= seconds <= 86400:
        raise PayloadError("the page's time must be between 0 and 86400 seconds")
    return seconds


def _respond_once(store, slug, token, trial_key, choice, ratings, client) -> ResponseReceipt:
    with store.session(write=True) as session:
        study_row = _study_row(session, slug)
        person = _participant_row(session, study_row, token, store)
        trial = _trial_row(session, trial_key)
        if trial is None:
            raise TrialError("this trial does not exist; reload the page")
        if trial.participant_id != person.id:
            raise TrialError("this trial belongs to another participant; reload the page")
        _check_accepting(study_row)
        trials, answered = _progress(session, person.id)
        if trial.id in answered:
            earlier = session.scalar(select(models.StudyResponseRow)
                                     .where(models.StudyResponseRow.trial_id == trial.id))
            return _receipt(trial, earlier, duplicate=True, next_trial=_current_view(session, trials, answered,
                                                                                    store=store, slug=slug))
        if _first_open(trials, answered) is not trial or trial.shown_at is None:
            raise TrialError("answer the trial on the screen (the page is out of date); reload the page")
        config = StudyConfig.from_json(study_row.config)
        now = utcnow()
        seconds = (now - trial.shown_at).total_seconds()
        if config.time_limit_s is not None and seconds > config.time_limit_s + TIMEOUT_GRACE_S:
            choice, ratings = "timeout", (None, None)
        _check_ratings(config, choice, ratings)
        row = models.StudyResponseRow(trial_id=trial.id, participant_id=person.id, choice=choice,
                                      likert_left=ratings[0], likert_right=ratings[1], seconds=seconds,
                                      client_seconds=client, created_at=now)
        session.add(row)
        session.flush()
        answered.add(trial.id)
        next_trial = _current_view(session, trials, answered, store=store, slug=slug)
        if next_trial is None:
            person.completed_at = now
        return _receipt(trial, row, duplicate=False, next_trial=next_trial)


def _trial_row(session: Session, trial_key) -> models.StudyTrialRow | None:
    if not isinstance(trial_key, str) or not 0 < len(trial_key) <= 64:
        return None
    return session.scalar(select(models.StudyTrialRow).where(models.StudyTrialRow.key == trial_key))


def _check_ratings(config: StudyConfig, choice: str, ratings: tuple[int | None, int | None]) -> None:
    given = tuple(value is not None for value in ratings)
    if choice == "timeout":
        if config.time_limit_s is None:
            raise PayloadError("this study has no time limit, so a trial cannot time out; pick a side")
        if any(given):
            raise PayloadError("a timed-out trial carries no rating")
        return
    if config.likert == "none":
        expected = (False, False)
    elif config.likert == "both":
        expected = (True, True)
    else:
        expected = (choice == "left", choice == "right")
    if given != expected:
        wanted = {"none": "no rating", "both": "a rating (1-5) of each side",
                  "chosen": "a rating (1-5) of the chosen side only"}[config.likert]
        raise PayloadError(f"this study asks for {wanted}")


def _receipt(trial: models.StudyTrialRow, row: models.StudyResponseRow, *, duplicate: bool,
             next_trial: TrialView | None) -> ResponseReceipt:
    return ResponseReceipt(response_id=row.id, trial_key=trial.key, choice=row.choice, seconds=row.seconds,
                           duplicate=duplicate, completed=next_trial is None, next_trial=next_trial)


@dataclass(frozen=True)
class _TrialFiles:
    """A trial's stimuli by role ("a", "b", "reference") and its swap: fixed once the trial exists."""

    slug: str
    swapped: bool
    by_role: Mapping[str, Stimulus]

    def file(self, slot: str) -> Stimulus:
        role = slot if slot == "reference" else ("a" if (slot == "left") != self.swapped else "b")
        found = self.by_role.get(role)
        if found is None:
            raise TrialError("this trial has no reference image")
        return found


class _LeastRecentlyUsed:
    """A bounded, thread-safe map from trial key to its files (trials, items and stimuli never change)."""

    def __init__(self, size: int):
        self.size, self._entries, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key: str) -> _TrialFiles | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: str, files: _TrialFiles) -> None:
        with self._lock:
            self._entries[key] = files
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


_CACHES: "weakref.WeakKeyDictionary[Store, _LeastRecentlyUsed]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _trial_files_cache(store: Store) -> _LeastRecentlyUsed:
    with _CACHES_LOCK:
        cache = _CACHES.get(store)
        if cache is None:
            cache = _CACHES[store] = _LeastRecentlyUsed(TRIAL_FILES_CACHED)
        return cache


def _check_stimulus_request(trial_key, slot: str) -> None:
    if slot not in ("left", "right", "reference") or not isinstance(trial_key, str) or not 0 < len(trial_key) <= 64:
        raise TrialError("no such trial or side")


def cached_stimulus_file(store: Store, slug: str, trial_key: str, slot: str) -> Stimulus | None:
    """``stimulus_file`` from memory without touching the database, or None when the trial is not remembered
    (every trial shown by this process is: its files are noted when the trial is handed out)."""
    _check_stimulus_request(trial_key, slot)
    files = _trial_files_cache(store).get(trial_key)
    if files is None:
        return None
    if files.slug != slug:
        raise TrialError("no such trial")
    return files.file(slot)


def stimulus_file(store: Store, slug: str, trial_key: str, slot: str) -> Stimulus:
    """The file shown on a side ("left" / "right") or as the "reference" of a trial, after its swap (one read,
    none when the trial is remembered)."""
    found = cached_stimulus_file(store, slug, trial_key, slot)
    if found is not None:
        return found
    trial, stimulus = models.StudyTrialRow, models.StudyStimulusRow
    with store.session() as session:
        rows = session.execute(
            select(stimulus, trial.swapped).join(trial, trial.item_id == stimulus.item_id)
            .join(models.StudyParticipantRow, models.StudyParticipantRow.id == trial.participant_id)
            .join(models.StudyRow, models.StudyRow.id == models.StudyParticipantRow.study_id)
            .where(trial.key == trial_key, models.StudyRow.slug == slug)).all()
    if not rows:
        raise TrialError("no such trial")
    files = _TrialFiles(slug, rows[0][1], MappingProxyType({row.role: _stimulus(store, row) for row, _ in rows}))
    _trial_files_cache(store).put(trial_key, files)
    return files.file(slot)


# ---- reading back for the analysis ------------------------------------------------------------------------


def response_records(store: Store, slug: str) -> list[ResponseRecord]:
    """Every response of the study, un-swapped, in (participant, position) order."""
    trial, person, item, response = (models.StudyTrialRow, models.StudyParticipantRow, models.StudyItemRow,
                                     models.StudyResponseRow)
    with store.session() as session:
        study_row = _study_row(session, slug)
        rows = session.execute(
            select(person.external_id, person.id, item.name, item.is_catch, trial.position, trial.swapped,
                   response.choice, response.likert_left, response.likert_right, response.seconds,
                   response.client_seconds, response.created_at)
            .join(trial, trial.id == response.trial_id).join(person, person.id == trial.participant_id)
            .join(item, item.id == trial.item_id).where(person.study_id == study_row.id)
            .order_by(person.id, trial.position)).all()
    return [_record(*row) for row in rows]


def _record(pid, participant_id, item, is_catch, position, swapped, choice, left, right, seconds, client,
            created_at) -> ResponseRecord:
    chose_left = None if choice == "timeout" else choice == "left"
    chose_a = None if chose_left is None else chose_left != swapped
    likert_a, likert_b = (right, left) if swapped else (left, right)
    return ResponseRecord(participant=pid, participant_id=participant_id, item=item, is_catch=is_catch,
                          position=position + 1, swapped=swapped, choice=choice, chose_a=chose_a, likert_a=likert_a,
                          likert_b=likert_b, seconds=seconds, client_seconds=client, created_at=created_at)


def participation(store: Store, slug: str) -> tuple[int, int]:
    """(participants who joined, participants who finished)."""
    with store.session() as session:
        study_row = _study_row(session, slug)
        joined, finished = session.execute(
            select(func.count(), func.count(models.StudyParticipantRow.completed_at))
            .where(models.StudyParticipantRow.study_id == study_row.id)).one()
        return joined, finished
