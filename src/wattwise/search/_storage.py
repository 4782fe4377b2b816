"""The study's database: opening it (SQLite file or PostgreSQL), the storage class every worker
uses, and turning a failing database into one line.

The storage signs every trial this process starts with its worker identity and never lets a
failed heartbeat stop the heartbeats (see :func:`_storage_class`); trials whose heartbeat goes
stale are queued again (:func:`~wattwise.search._liveness.retry_stale`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import time
import urllib.parse
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wattwise.errors import InputError, UnavailableError, WattwiseError
from wattwise.report import redact_url
from wattwise.search._liveness import heartbeat_timing, retry_stale, worker_identity
from wattwise.search._optuna import new_trial_template_storage

if TYPE_CHECKING:
    import optuna

__all__ = ["default_storage", "open_storage", "storage_error_types", "storage_errors"]

_SCHEMA_RACE_TRIES = 5  # opens of a fresh database racing another process (see _open_rdb)


def default_storage(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'wattwise.db'}"


def _scrub(text: str, url: str) -> str:
    """``text`` with the URL's password removed wherever it appears (driver errors echo it)."""
    password = urllib.parse.urlsplit(url).password if "://" in url else None
    one = " ".join(str(text).split())
    if password:
        one = one.replace(password, "***")
        with contextlib.suppress(Exception):
            one = one.replace(urllib.parse.unquote(password), "***")
    return one


def _postgres_driver(url: str, scheme: str) -> str:
    """``url`` with a driver SQLAlchemy can import: a bare ``postgresql://`` means psycopg 3 to
    SQLAlchemy 2.1, while our ``search`` extra installs psycopg2."""
    rest = url.split("://", 1)[1]
    if "+" in scheme:  # the user chose the driver
        driver = scheme.split("+", 1)[1]
        if importlib.util.find_spec(driver) is None:
            raise UnavailableError(f"PostgreSQL driver {driver!r} is not installed")
        return url
    for driver in ("psycopg2", "psycopg"):
        if importlib.util.find_spec(driver) is not None:
            return f"postgresql+{driver}://{rest}"
    raise UnavailableError(
        "PostgreSQL storage needs psycopg2: pip install 'wattwise[search]' (or psycopg2-binary)"
    )


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for ``url`` (SQLite file or PostgreSQL), with heartbeats.

    Raises:
        InputError: a malformed URL, an unsupported scheme, a SQLite file in a missing or
            unwritable directory, or a database that can't be reached. The message never
            contains the URL's password.
        UnavailableError: the database driver is not installed.
    """

    if not isinstance(url, str) or "://" not in url:
        raise InputError(
            f"storage must be a database URL like sqlite:///path/to/wattwise.db or "
            f"postgresql://user:pass@host/db, got {url!r}"
        )
    scheme = url.split("://", 1)[0].lower()
    given = url  # messages show the URL as the user wrote it (password redacted)
    engine_kwargs: dict[str, Any] = {}
    if scheme.startswith("sqlite"):
        path = url.split(":///", 1)[1] if ":///" in url else ""
        if path and path != ":memory:":
            parent = Path(path).expanduser().parent
            if not parent.is_dir():
                raise InputError(f"storage {url}: directory {parent} does not exist")
            if not os.access(parent, os.W_OK):
                raise InputError(f"storage {url}: directory {parent} is not writable")
        # Several local processes may share the file: wait for its lock instead of failing.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif scheme.startswith("postgres"):
        url = _postgres_driver(url, scheme)
        engine_kwargs = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    elif not scheme.startswith("mysql"):
        raise InputError(
            f"storage {redact_url(url)}: unsupported scheme {scheme!r}; use sqlite:/// or postgresql://"
        )
    interval, grace = heartbeat_timing()
    try:
        return _open_rdb(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=interval,
            grace_period=grace,
            heartbeat_stale_trial_callback=retry_stale,
        )
    except Exception as exc:
        first = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else "", url)
        raise InputError(
            f"cannot open storage {redact_url(given)}: {type(exc).__name__}: {first[:300]}"
        ) from None


def _open_rdb(url: str, **kwargs: Any) -> optuna.storages.RDBStorage:
    """Our RDB storage for ``url``, tolerating another process creating the same new database.

    Optuna creates its tables and version row on first open without a lock: two processes
    opening one fresh file together (``optimize`` beside a ``worker``, or beside a reader of the
    study) fail with "table ... already exists" or a UNIQUE constraint, which one more try, once
    the other has finished, does not.
    """
    import optuna
    import sqlalchemy.exc

    for attempt in range(_SCHEMA_RACE_TRIES):
        try:
            with warnings.catch_warnings():
                # Heartbeats are marked experimental; they recover a lost worker's trial.
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return _storage_class()(url, **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as exc:
            racing = "already exists" in str(exc) or "UNIQUE constraint" in str(exc)
            if not racing or attempt == _SCHEMA_RACE_TRIES - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def storage_error_types() -> tuple[type[Exception], ...]:
    """What Optuna and SQLAlchemy raise when the database fails (a server restarting, a lost
    connection): Optuna wraps most of them as "invalid data in the commit", which they aren't."""
    import optuna
    import sqlalchemy.exc

    return (optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError)


@functools.cache
def _storage_class() -> type[optuna.storages.RDBStorage]:
    """Optuna's RDB storage, made to leave no trial without an owner or a heartbeat.

    * Every trial this process starts is signed with its :func:`worker_identity` as it is
      made (in the same transaction), or popped from the queue (the very next commit): a worker
      killed, or cut off from the database, between Optuna starting the trial and our objective
      signing it would otherwise leave a RUNNING trial that no check can tell is dead.
    * A heartbeat that fails (the database restarting) is skipped, not raised: Optuna beats from
      a thread that dies on the first error, with a traceback on stderr, and the trial then runs
      on without heartbeats, to be taken for lost by other workers. The next beat retries.
    """
    import optuna
    from optuna.trial import TrialState

    errors = storage_error_types()

    class SignedStorage(new_trial_template_storage()):  # type: ignore[misc]
        def new_trial_template(self) -> optuna.trial.FrozenTrial:
            # Asked for by this process, to run now.
            return optuna.trial.create_trial(
                state=TrialState.RUNNING, user_attrs={"worker": worker_identity()}
            )

        def set_trial_state_values(
            self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
        ) -> bool:
            taken = super().set_trial_state_values(trial_id, state, values)
            if taken and state == TrialState.RUNNING:  # popped from the queue by this process
                self.set_trial_user_attr(trial_id, "worker", worker_identity())
            return taken

        def record_heartbeat(self, trial_id: int) -> None:
            with contextlib.suppress(*errors):
                super().record_heartbeat(trial_id)

    return SignedStorage


def _storage_failure(exc: BaseException) -> BaseException | None:
    """The database error behind ``exc``, if any: Optuna may raise one of its own on the way out
    (5.0 raises UnboundLocalError when telling a trial's end fails), the database's as context."""
    types = storage_error_types()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, types):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """Turn a failing database into one line naming the storage (password redacted).

    Raises:
        UnavailableError: the storage failed under the search; rerunning resumes it.
    """
    try:
        yield
    except Exception as exc:
        failure = None if isinstance(exc, WattwiseError) else _storage_failure(exc)
        if failure is None:
            raise
        cause = failure.__cause__ if failure.__cause__ is not None else failure
        cause = getattr(cause, "orig", None) or cause  # the driver's own error, without SQL
        text = str(cause).strip()
        first = _scrub(text.splitlines()[0] if text else "", url)
        raise UnavailableError(
            f"storage {redact_url(url)} failed: {type(cause).__name__}: {first[:300]}; "
            "rerun the same command to resume (finished trials are kept)"
        ) from None
