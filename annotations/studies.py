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

The participant routes are the hot path (``HotStatements``, SQLAlchemy Core): a study's fixed facts (texts,
settings, items and files: nothing changes them after creation) are read once per store and kept in memory,
only its state is read each time; a join reads, plans outside the write transaction, then inserts; a reload
of a trial already shown only reads; a response is one transaction of two to four statements.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import shutil
import threading
import weakref
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence
from urllib.parse import urlencode, urlparse

import numpy as np
from sqlalchemy import bindparam, func, insert, select, update
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
STUDIES_CACHED = 16  # studies whose fixed facts (texts, settings, items, files) are kept in memory per store


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


# ---- what never changes, in memory ------------------------------------------------------------------------


@dataclass(frozen=True)
class StudyFacts:
    """Everything about a study but its state: fixed at creation (nothing edits a study's texts, settings or
    items afterwards), so each store keeps it in memory and the participant routes never read it again.

    regular, catches: item ids (regular items, attention checks), ascending; stimuli: item id -> role -> file.
    """

    id: int
    slug: str
    title: str
    config: StudyConfig
    seed: int
    link_secret: str
    regular: tuple[int, ...]
    catches: tuple[int, ...]
    stimuli: Mapping[int, Mapping[str, Stimulus]]


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
    """A bounded, thread-safe map whose values never change once stored (least recently used leave first)."""

    def __init__(self, size: int):
        self.size, self._entries, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class _Memory:
    """One store's memory: study facts by slug, and trial files by trial key (for the stimulus route)."""

    def __init__(self):
        self.studies = _LeastRecentlyUsed(STUDIES_CACHED)
        self.trials = _LeastRecentlyUsed(TRIAL_FILES_CACHED)


_CACHES: "weakref.WeakKeyDictionary[Store, _Memory]" = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def _memory(store: Store) -> _Memory:
    with _CACHES_LOCK:
        memory = _CACHES.get(store)
        if memory is None:
            memory = _CACHES[store] = _Memory()
        return memory


def study_facts(store: Store, slug: str) -> StudyFacts:
    """The study's fixed facts: from memory after the first call (three reads then)."""
    memory = _memory(store)
    found = memory.studies.get(slug) if isinstance(slug, str) else None
    if found is None:
        found = _load_facts(store, slug)
        memory.studies.put(slug, found)
    return found


def _load_facts(store: Store, slug: str) -> StudyFacts:
    with store.session() as session:
        row = _study_row(session, slug)
        items = session.execute(select(models.StudyItemRow.id, models.StudyItemRow.is_catch)
                                .where(models.StudyItemRow.study_id == row.id)
                                .order_by(models.StudyItemRow.id)).all()
        stimuli = session.scalars(select(models.StudyStimulusRow).join(
            models.StudyItemRow, models.StudyItemRow.id == models.StudyStimulusRow.item_id)
            .where(models.StudyItemRow.study_id == row.id)).all()
    by_item: dict[int, dict[str, Stimulus]] = {}
    for stimulus in stimuli:
        by_item.setdefault(stimulus.item_id, {})[stimulus.role] = _stimulus(store, stimulus)
    return StudyFacts(id=row.id, slug=row.slug, title=row.title, config=StudyConfig.from_json(row.config),
                      seed=row.seed, link_secret=row.link_secret,
                      regular=tuple(item_id for item_id, is_catch in items if not is_catch),
                      catches=tuple(item_id for item_id, is_catch in items if is_catch),
                      stimuli=MappingProxyType({item_id: MappingProxyType(roles)
                                                for item_id, roles in by_item.items()}))


# ---- the participant routes' statements -------------------------------------------------------------------

STUDIES, PARTICIPANTS = models.StudyRow.__table__, models.StudyParticipantRow.__table__
TRIALS, RESPONSES = models.StudyTrialRow.__table__, models.StudyResponseRow.__table__


class HotStatements:
    """The statements of join, trial and respond, built once per dialect with bind parameters (SQLAlchemy
    Core: no ORM objects, no per-call construction). A response is two to four statements in one
    transaction: the participant's trials with their answers and the study's state (one read), the insert,
    and the next trial marked shown (and the participant finished after the last)."""

    def __init__(self, dialect: str):
        s, p, t, r = STUDIES, PARTICIPANTS, TRIALS, RESPONSES
        progress = (select(p.c.id.label("participant_id"), s.c.state, t.c.id, t.c.key, t.c.position, t.c.item_id,
                           t.c.swapped, t.c.shown_at, r.c.id.label("response_id"), r.c.choice, r.c.seconds)
                    .select_from(t.join(p, p.c.id == t.c.participant_id).join(s, s.c.id == p.c.study_id)
                                 .outerjoin(r, r.c.trial_id == t.c.id))
                    .where(p.c.token == bindparam("token"), p.c.study_id == bindparam("study"))
                    .order_by(t.c.position))
        self.progress = progress
        # On PostgreSQL one participant's writes (a double click) take turns on their row; SQLite writers
        # are serialised by BEGIN IMMEDIATE already.
        self.progress_locked = progress if dialect == "sqlite" else progress.with_for_update(of=p)
        self.state = select(s.c.state).where(s.c.id == bindparam("study"))
        planned = select(func.count()).where(t.c.participant_id == p.c.id).scalar_subquery()
        answered = select(func.count()).where(r.c.participant_id == p.c.id).scalar_subquery()
        self.by_pid = (select(p.c.id, p.c.session, p.c.token, p.c.seed, p.c.completed_at,
                              planned.label("planned"), answered.label("answered"))
                       .where(p.c.study_id == bindparam("study"), p.c.external_id == bindparam("pid")))
        self.trial_owner = select(t.c.participant_id).where(t.c.key == bindparam("key"))
        self.insert_participant = insert(p).returning(p.c.id)
        self.insert_trials = insert(t)
        self.insert_response = insert(r).returning(r.c.id)
        self.mark_shown = (update(t).where(t.c.id == bindparam("trial"), t.c.shown_at.is_(None))
                           .values(shown_at=bindparam("now")))
        self.mark_completed = (update(p).where(p.c.id == bindparam("participant"))
                               .values(completed_at=bindparam("now")))


@functools.lru_cache(maxsize=None)
def hot_statements(dialect: str) -> HotStatements:
    return HotStatements(dialect)


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

    With ``create=False`` an unknown participant gives None (the page asks for consent first). A returning
    participant is only read; a new one is planned outside the write transaction, which then holds one state
    check and two inserts.
    """
    pid, session = _participant_id(pid, "participant id"), _participant_id(session or pid, "session id")
    facts = study_facts(store, slug)
    if facts.config.signed_links:
        expected = link_signature(facts.link_secret, slug, pid, session)
        if not isinstance(signature, str) or not hmac.compare_digest(signature.encode(), expected.encode()):
            raise StudyStateError("this link is not valid for this study; open the exact link you were given")
    for attempt in range(_RETRIES):
        try:
            return _join_once(store, facts, pid, session, create)
        except IntegrityError:  # the same pid joined from two tabs at once: the other request created them
            if attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")


def _participant_id(value, name: str) -> str:
    try:
        return check_external_id(value)
    except InputError:
        raise InputError(f"the link's {name} must be 1-128 printable characters") from None


def _join_once(store: Store, facts: StudyFacts, pid: str, session_id: str, create: bool) -> Participant | None:
    sql = hot_statements(store.dialect)
    with store.transaction() as connection:
        state = connection.execute(sql.state, {"study": facts.id}).scalar_one()
        found = connection.execute(sql.by_pid, {"study": facts.id, "pid": pid}).first()
    _check_accepting(state, resuming=found is not None)
    if found is not None:
        return Participant(id=found.id, study_id=facts.id, external_id=pid, session=found.session,
                           token=found.token, seed=found.seed, num_trials=found.planned, num_answered=found.answered,
                           completed=found.completed_at is not None)
    if not create:
        return None
    seed = participant_seed(facts.seed, pid)
    config = facts.config
    plan = plan_trials(facts.regular, facts.catches, config.items_per_participant or len(facts.regular),
                       config.attention_checks, seed)
    token = secrets.token_urlsafe(24)
    with store.transaction(write=True) as connection:
        _check_accepting(connection.execute(sql.state, {"study": facts.id}).scalar_one(), resuming=False)
        participant_id = connection.execute(sql.insert_participant, {
            "study_id": facts.id, "external_id": pid, "session": session_id, "token": token, "seed": seed,
            "created_at": utcnow()}).scalar_one()
        connection.execute(sql.insert_trials, [
            {"key": secrets.token_urlsafe(16), "participant_id": participant_id, "item_id": item_id,
             "position": position, "swapped": bool(swapped)} for position, (item_id, swapped) in enumerate(plan)])
    return Participant(id=participant_id, study_id=facts.id, external_id=pid, session=session_id, token=token,
                       seed=seed, num_trials=len(plan), num_answered=0, completed=False)


def _check_accepting(state: str, resuming: bool = True) -> None:
    if state == "closed":
        raise StudyStateError("this study is closed and accepts no more answers. Thank you for your interest")
    if state == "paused":
        raise StudyStateError("this study is paused; please come back later" if resuming else
                              "this study is paused and takes no new participants now; please come back later")


def participant(store: Store, slug: str, token: str) -> Participant:
    facts = study_facts(store, slug)
    with store.session() as session:
        row = session.scalar(select(models.StudyParticipantRow).where(models.StudyParticipantRow.token == token)) \
            if _valid_token(token) else None
        if row is None or row.study_id != facts.id:
            raise TrialError("unknown participant; reopen the link you were given")
        total = session.scalar(select(func.count()).where(models.StudyTrialRow.participant_id == row.id))
        answered = session.scalar(select(func.count()).where(models.StudyResponseRow.participant_id == row.id))
        return Participant(id=row.id, study_id=row.study_id, external_id=row.external_id, session=row.session,
                           token=row.token, seed=row.seed, num_trials=total, num_answered=answered,
                           completed=row.completed_at is not None)


def _valid_token(token) -> bool:
    return isinstance(token, str) and 0 < len(token) <= 64


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
    """The participant's first unanswered trial (None when they are done). Only its first showing writes
    (its ``shown_at``, the server's clock); a reload of a trial already shown is two reads."""
    facts = study_facts(store, slug)
    sql = hot_statements(store.dialect)
    with store.transaction() as connection:
        _, state, trials = _progress(connection, sql.progress, facts, token)
        _check_accepting(state)
    trial = _first_open(trials)
    if trial is None:
        return None
    if trial.shown_at is None:
        with store.transaction(write=True) as connection:
            connection.execute(sql.mark_shown, {"trial": trial.id, "now": utcnow()})
    return _view(store, facts, trial, len(trials))


class _Trial(NamedTuple):
    """One trial of a participant's plan with its answer, if any (``response_id`` None: open)."""

    id: int
    key: str
    position: int
    item_id: int
    swapped: bool
    shown_at: datetime | None
    response_id: int | None
    choice: str | None
    seconds: float | None


def _progress(connection, statement, facts: StudyFacts, token) -> tuple[int, str, list[_Trial]]:
    """The participant's id, the study's state, and the participant's trials in order with their answers (one
    read; every participant has at least one trial, so no row means no such participant in this study)."""
    rows = connection.execute(statement, {"token": token, "study": facts.id}).all() if _valid_token(token) else []
    if not rows:
        raise TrialError("unknown participant; reopen the link you were given")
    return rows[0].participant_id, rows[0].state, [_Trial(*row[2:]) for row in rows]


def _first_open(trials):
    return next((trial for trial in trials if trial.response_id is None), None)


def _view(store: Store, facts: StudyFacts, trial, total: int) -> TrialView:
    """A trial as the page sees it; its files are remembered for the stimulus route."""
    files = _TrialFiles(facts.slug, trial.swapped, facts.stimuli[trial.item_id])
    _memory(store).trials.put(trial.key, files)
    return TrialView(key=trial.key, position=trial.position + 1, total=total, media=files.by_role["a"].media,
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
    facts = study_facts(store, slug)
    for attempt in range(_RETRIES):
        try:
            return _respond_once(store, facts, token, trial_key, choice, ratings, client)
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


def _respond_once(store: Store, facts: StudyFacts, token, trial_key, choice, ratings, client) -> ResponseReceipt:
    sql = hot_statements(store.dialect)
    with store.transaction(write=True) as connection:
        participant_id, state, trials = _progress(connection, sql.progress_locked, facts, token)
        index = next((number for number, trial in enumerate(trials) if trial.key == trial_key), None)
        if index is None:
            raise TrialError(_foreign_trial_message(connection, sql, trial_key))
        _check_accepting(state)
        trial, now = trials[index], utcnow()
        if trial.response_id is not None:
            return _receipt(store, facts, connection, trials, index, (trial.response_id, trial.choice, trial.seconds),
                            duplicate=True, now=now, participant_id=participant_id)
        if _first_open(trials) is not trial or trial.shown_at is None:
            raise TrialError("answer the trial on the screen (the page is out of date); reload the page")
        config = facts.config
        seconds = (now - trial.shown_at).total_seconds()
        if config.time_limit_s is not None and seconds > config.time_limit_s + TIMEOUT_GRACE_S:
            choice, ratings = "timeout", (None, None)
        _check_ratings(config, choice, ratings)
        response_id = connection.execute(sql.insert_response, {
            "trial_id": trial.id, "participant_id": participant_id,
            "choice": choice, "likert_left": ratings[0], "likert_right": ratings[1], "seconds": seconds,
            "client_seconds": client, "created_at": now}).scalar_one()
        trials[index] = trial._replace(response_id=response_id, choice=choice, seconds=seconds)
        return _receipt(store, facts, connection, trials, index, (response_id, choice, seconds), duplicate=False,
                        now=now, participant_id=participant_id)


def _foreign_trial_message(connection, sql: HotStatements, trial_key) -> str:
    """Why a trial key is not one of this participant's (one read, on the refusal path only)."""
    owner = connection.execute(sql.trial_owner, {"key": trial_key}).first() \
        if isinstance(trial_key, str) and 0 < len(trial_key) <= 64 else None
    if owner is None:
        return "this trial does not exist; reload the page"
    return "this trial belongs to another participant; reload the page"


def _receipt(store: Store, facts: StudyFacts, connection, trials: list[_Trial], index: int, answer: tuple,
             *, duplicate: bool, now, participant_id: int) -> ResponseReceipt:
    """The receipt, with the next trial marked shown (or the participant marked finished after the last)."""
    sql = hot_statements(store.dialect)
    following = _first_open(trials)
    if following is not None:
        if following.shown_at is None:
            connection.execute(sql.mark_shown, {"trial": following.id, "now": now})
        next_trial = _view(store, facts, following, len(trials))
    else:
        next_trial = None
        if not duplicate:
            connection.execute(sql.mark_completed, {"participant": participant_id, "now": now})
    response_id, choice, seconds = answer
    return ResponseReceipt(response_id=response_id, trial_key=trials[index].key, choice=choice, seconds=seconds,
                           duplicate=duplicate, completed=following is None, next_trial=next_trial)


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


# ---- stimulus files ---------------------------------------------------------------------------------------


def _check_stimulus_request(trial_key, slot: str) -> None:
    if slot not in ("left", "right", "reference") or not isinstance(trial_key, str) or not 0 < len(trial_key) <= 64:
        raise TrialError("no such trial or side")


def cached_stimulus_file(store: Store, slug: str, trial_key: str, slot: str) -> Stimulus | None:
    """``stimulus_file`` from memory without touching the database, or None when the trial is not remembered
    (every trial shown by this process is: its files are noted when the trial is handed out)."""
    _check_stimulus_request(trial_key, slot)
    files = _memory(store).trials.get(trial_key)
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
    _memory(store).trials.put(trial_key, files)
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
