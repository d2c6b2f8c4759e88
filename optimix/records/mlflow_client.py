"""MLflow's client as optimix calls it: which store, errors in one line, bounded retries.

``tracking`` (writing a search) and ``records`` (reading it back) make every MLflow call
through this module:

- ``resolve_uri`` picks the store; ``redact_uri`` and ``one_line`` keep credentials in a
  tracking URI out of every message.
- ``connect`` turns MLflow's own retries off (``_HTTP_DEFAULTS``): it would send a failed
  request again blindly, and a ``runs/create`` whose answer was lost would be committed twice.
- ``Tries`` retries instead, within ``CALL_BUDGET_S`` seconds a call, and raises one line:
  ``TrackingRejected`` when MLflow refused a write (sending it again will not help),
  ``TrackingError`` when MLflow could not be reached, failed, rate-limited or did not answer.
- ``send_items`` logs params and metrics in batches MLflow accepts, and names the item it
  refuses.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from optimix.records.mlflow_store import StoreError, open_sqlite, sqlite_path

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PAGE_SIZE = 1000
"""Runs asked for in one ``search_runs`` request."""

# Set in the environment (unless already set) before MLflow's client is used: it reads them
# at every request.
_HTTP_DEFAULTS = {
    # MLflow's client would retry a failed request on its own, blindly: a runs/create whose
    # answer was lost would be committed twice (after any 5xx before MLflow 3.18, after a 408
    # or 429 since), and a Retry-After would be slept however long it is. ``Tries`` retries
    # instead, and a run is looked up before it is created again.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    # A server that accepts a request and never answers costs this many seconds, not minutes.
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    # MLflow's "View run ... at: URL" lines on stdout (``connect``).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
_NO_RUN_URLS = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
CALL_BUDGET_S = 30.0
"""A call starts no new try that could end later than this after the call began."""
WAIT_BUDGET_S = 10.0
"""Of which at most this is spent pausing between tries."""
FIRST_PAUSE_S = {"transient": 0.5, "throttled": 1.0}
"""The first pause after a failed try, doubled at each further one. After a 429 the pause
starts at the usual ``Retry-After: 1``: with its own retries off, MLflow's client raises
without the header, so ``Tries`` cannot read it."""


class TrackingError(RuntimeError):
    """MLflow could not be reached, failed or did not answer; the message is one line.

    Transient: the same write may succeed later (the search keeps results in its ledger).
    """


class TrackingRejected(TrackingError):
    """MLflow refused a write (a 4xx answer such as INVALID_PARAMETER_VALUE): sending it again
    will not help. The message names what was refused; ``reason`` is MLflow's word for it."""

    def __init__(self, message: str, reason: str = ""):
        super().__init__(message)
        self.reason = reason


# ---------------------------------------------------------------------------------------------
# The store and its client


def resolve_uri(uri: str | None) -> str:
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def redact_uri(uri: str) -> str:
    """``uri`` fit to print: ``user:password@`` becomes ``***@``; query and fragment are
    dropped (they may carry tokens)."""
    text = uri.split("#", 1)[0].split("?", 1)[0]
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    host, slash, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{path}"


def absolute_uri(uri: str) -> str:
    """``uri`` with a relative SQLite path made absolute (from the working directory): the
    same store, named the same from anywhere."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix):].startswith("/") or uri == prefix:
        return uri
    return prefix + os.path.abspath(uri[len(prefix):])


def same_store(a: str, b: str) -> bool:
    """Whether two tracking URIs (either redacted) name one store: credentials, query and
    fragment aside, relative SQLite paths taken from the working directory."""
    def bare(uri: str) -> str:
        return redact_uri(absolute_uri(uri)).replace("://***@", "://", 1).rstrip("/")

    return bare(a) == bare(b)


def use_http_defaults() -> None:
    for key, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)


def connect(uri: str) -> MlflowClient:
    """MLflow's client of the store at ``uri``, with its own retries off (unless the
    environment says otherwise): an unreachable server costs seconds, not minutes.

    MLflow's client prints a "View run ... at: <the tracking URI>" line on stdout each time
    a run on a server ends, credentials in the URI included: optimix prints its own link, so
    those lines are off, and always off when the URI carries credentials."""
    from mlflow.tracking import MlflowClient

    use_http_defaults()
    if _has_userinfo(uri):
        os.environ[_NO_RUN_URLS] = "true"
    if sqlite_path(uri) is None:
        return MlflowClient(tracking_uri=uri)
    try:
        return open_sqlite(uri)  # created or migrated by one process at a time
    except StoreError as err:
        raise TrackingError(_scrub(str(err))) from None


def _has_userinfo(uri: str) -> bool:
    return redact_uri(uri) != uri.split("#", 1)[0].split("?", 1)[0]


def probe(uri: str, timeout_s: float = 5.0) -> None:
    """A tracking server must answer ``/health`` before any trial is trained."""
    import urllib.error
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rpartition("@")[2]  # /health needs no credentials
    health = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            response.read(64)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # behind authentication: reachable; credentials are MLflow's business
        raise TrackingError(f"MLflow at {redact_uri(uri)} is not usable: HTTP {err.code} on /health") from None
    except (OSError, ValueError) as err:
        reason = _scrub(str(getattr(err, "reason", err)))
        raise TrackingError(f"MLflow at {redact_uri(uri)} is not reachable: {reason}") from None


def tag_is(tag: str, value: str) -> str:
    """A ``search_runs`` filter: tag ``tag`` equals ``value`` (a dotted tag name is quoted)."""
    name = f"`{tag}`" if "." in tag else tag
    return f"tags.{name} = '{value}'"


def all_pages(fetch: Callable[[str | None], Any]) -> list[Any]:
    """Every item of a paged MLflow answer: ``fetch(page_token)`` returns one page."""
    items: list[Any] = []
    token = None
    while True:
        page = fetch(token)
        items += list(page)
        token = page.token
        if not token:
            return items


# ---------------------------------------------------------------------------------------------
# Bounded retries


@dataclass(frozen=True)
class _Fault:
    """What went wrong with one request, as ``Tries`` acts on it."""

    kind: Literal["rejected", "throttled", "timeout", "transient"]
    detail: str
    """One line, without credentials."""
    status: int | None = None
    """The HTTP status (or the store's equivalent) when there was an answer."""
    network: bool = False
    """Whether the request failed in the network (no answer came back)."""


class Tries:
    """The tries of one call (one Tracker method, one reading).

    A failed request is sent again after a pause (0.5 s, then doubled; 1 s, doubled, after a
    429) while at most ``WAIT_BUDGET_S`` has been spent pausing and a full request can still
    end within ``CALL_BUDGET_S`` of the call's start. It is not sent again when MLflow
    rejected it (``TrackingRejected``) or did not answer in time (a hung server would cost
    another full timeout). With ``found``, a write that is not idempotent is looked up after
    each pause and not sent again when it took effect.
    """

    def __init__(self, display_uri: str):
        self.display_uri = display_uri
        self.started = time.monotonic()
        self.waited_s = 0.0
        self.pause_s = dict(FIRST_PAUSE_S)

    def __call__(self, what: str, send: Callable[[], T], found: Callable[[], T | None] | None = None) -> T:
        while True:
            try:
                return send()
            except Exception as err:  # MLflow's, requests', a store's: all classified
                fault = _fault(err)
            pause = self._pause(fault)
            if pause is None:
                raise self._error(fault, what) from None
            log.info("MLflow at %s: %s (%s); trying again in %.1f s", self.display_uri, fault.detail,
                     what, pause)
            time.sleep(pause)
            self.waited_s += pause
            if found is not None:
                done = self(f"checking whether {what} took effect", found)
                if done is not None:
                    return done

    def _pause(self, fault: _Fault) -> float | None:
        if fault.kind not in self.pause_s:
            return None
        pause = self.pause_s[fault.kind]
        if self.waited_s + pause > WAIT_BUDGET_S:
            return None
        if time.monotonic() + pause + _request_timeout_s() > self.started + CALL_BUDGET_S:
            return None
        self.pause_s[fault.kind] = 2 * pause
        return pause

    def _error(self, fault: _Fault, what: str) -> TrackingError:
        at = f"MLflow at {self.display_uri}"
        if fault.kind == "rejected":
            return TrackingRejected(f"{at} rejected {what}: {fault.detail}", fault.detail)
        if fault.kind == "timeout":
            return TrackingError(f"{at} did not answer within {_request_timeout_s():g} s ({what})")
        if fault.kind == "throttled":
            return TrackingError(f"{at} is rate-limiting requests (HTTP 429 after {self.waited_s:.0f} s "
                                 f"of pauses) ({what})")
        if fault.network and fault.status is None:
            return TrackingError(f"{at} is not reachable ({what}): {fault.detail}")
        answered = f"answered HTTP {fault.status}" if fault.network else "failed"
        return TrackingError(f"{at} {answered} ({what}): {fault.detail}")


def _fault(err: BaseException) -> _Fault:
    """Classify a failed request: 4xx (not 408 or 429) is a rejection; 429 is throttling; a
    timeout is a timeout; anything else (refused, reset, 5xx, a store error) is transient."""
    import requests
    import urllib3.exceptions
    from mlflow.exceptions import MlflowException, RestException

    chain = _chain(err)
    network = any(isinstance(x, (requests.RequestException, urllib3.exceptions.HTTPError, OSError))
                  for x in chain)
    # With its retries off, MLflow's client raises urllib3's "too many 500 error responses"
    # for an answer in its retry codes (408, 429, 5xx): the status is only in that text.
    pattern = re.escape(urllib3.exceptions.ResponseError.SPECIFIC_ERROR).replace(
        re.escape("{status_code}"), r"(\d{3})")
    status = next((int(m.group(1)) for x in chain if isinstance(x, urllib3.exceptions.ResponseError)
                   and (m := re.search(pattern, str(x)))), None)
    if status is None and isinstance(err, MlflowException) and (isinstance(err, RestException) or not network):
        status = err.get_http_status_code()  # the server answered, or the store itself refused
        network = isinstance(err, RestException)
    if any(isinstance(x, (TimeoutError, requests.Timeout, urllib3.exceptions.TimeoutError)) for x in chain):
        return _Fault("timeout", one_line(chain[-1]), None, True)
    if status == 429:
        return _Fault("throttled", "HTTP 429", status, network)
    if status is not None and 400 <= status < 500 and status != 408:
        return _Fault("rejected", _reason(err), status, network)
    detail = one_line(chain[-1]) if network and len(chain) > 1 else one_line(err)
    return _Fault("transient", detail, status, network)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and what caused it, outermost first (urllib3 keeps the cause in ``reason``)."""
    chain: list[BaseException] = []
    current: object = err
    while isinstance(current, BaseException) and current not in chain and len(chain) < 20:
        chain.append(current)
        current = current.__cause__ or current.__context__ or getattr(current, "reason", None)
    return chain


def _reason(err: BaseException) -> str:
    """MLflow's error code and message, one line (``INVALID_PARAMETER_VALUE: ...``)."""
    from mlflow.exceptions import MlflowException

    text = _scrub(str(err.message if isinstance(err, MlflowException) else err)).strip()
    text = text.splitlines()[0] if text else ""
    code = getattr(err, "error_code", "")
    if code and not text.startswith(code):
        text = f"{code}: {text}"
    return text[:300]


def _request_timeout_s() -> float:
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_TIMEOUT

    return float(MLFLOW_HTTP_REQUEST_TIMEOUT.get())


# ---------------------------------------------------------------------------------------------
# Params and metrics in batches


def send_items(client: MlflowClient, tries: Tries, run_id: str, items: Sequence[Param | Metric],
               what: str) -> None:
    """Log params or metrics in batches. A rejected batch is narrowed down to the item
    MLflow refuses, which the error names."""
    from mlflow.entities import Param

    size = 100 if items and isinstance(items[0], Param) else 1000  # MLflow's batch limits
    for start in range(0, len(items), size):
        batch = list(items[start:start + size])
        try:
            tries(f"logging {what}", lambda b=batch: _log_batch(client, run_id, b))
        except TrackingRejected as whole:
            item, err = _refused_item(client, tries, run_id, batch, whole)
            if item is None:
                raise
            raise TrackingRejected(f"MLflow at {tries.display_uri} rejected {_describe(item)} "
                                   f"in {what}: {err.reason}", err.reason) from None


def _refused_item(client: MlflowClient, tries: Tries, run_id: str, batch: list[Param | Metric],
                  err: TrackingRejected) -> tuple[Param | Metric | None, TrackingRejected]:
    """The first item of a rejected batch that MLflow rejects alone, by halving the batch
    (the halves it accepts are logged: logging them again later changes nothing). None
    when each half is accepted on its own."""
    while len(batch) > 1:
        half = len(batch) // 2
        for part in (batch[:half], batch[half:]):
            try:
                tries(f"logging {len(part)} items", lambda p=part: _log_batch(client, run_id, p))
            except TrackingRejected as refused:
                batch, err = part, refused
                break
        else:
            return None, err
    return batch[0], err


def _log_batch(client: MlflowClient, run_id: str, items: Sequence[Param | Metric]) -> None:
    from mlflow.entities import Metric, Param

    client.log_batch(run_id, params=[i for i in items if isinstance(i, Param)],
                     metrics=[i for i in items if isinstance(i, Metric)])


def _describe(item: Param | Metric) -> str:
    """``metric 'acc/…' (264 characters)``: what a rejection names."""
    from mlflow.entities import Param

    kind = "param" if isinstance(item, Param) else "metric"
    key = item.key
    if len(key) <= 80:
        return f"{kind} {key!r}"
    return f"{kind} {key[:60] + '…'!r} ({len(key)} characters)"


# ---------------------------------------------------------------------------------------------
# One line, without credentials

_USERINFO = re.compile(r"(?<=://)[^\s/@'\"]+@")
_URI_QUERY = re.compile(r"(\w://[^\s'\"?#]*)[?#][^\s'\")]*")


def _scrub(text: str) -> str:
    """``text`` with every URI in it redacted (as ``redact_uri`` does): MLflow's errors quote
    the request's URL, credentials included."""
    return _URI_QUERY.sub(r"\1", _USERINFO.sub("***@", text))


def one_line(err: BaseException) -> str:
    text = _scrub(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]
