"""Structured logs: one JSON object per line on stdout, and the one access-log line of every gRPC call.

A line holds `time`, `level`, `logger`, `message`, the `extra` fields of the call to the logger, and the
`request_id` of the gRPC call it was written in. Tokens, secrets and the authorization header are never logged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, TextIO

current_request_id: ContextVar[str | None] = ContextVar("authsvc_request_id", default=None)
"""The request id of the gRPC call being handled (each call runs in a task, with a context, of its own)."""

access_log = logging.getLogger("authsvc.access")
"""The logger of the one line per call."""

# A caller's id is echoed into logs and metadata, so only a plain, bounded one is taken (no dots: never a JWT).
_REQUEST_ID = re.compile(r"[A-Za-z0-9_:-]{1,64}")
# API keys are lowercase letters and digits; a caller that swaps its headers sends a secret or a token instead,
# and an operator token made by `openssl rand -hex 32` has the same shape: only a key of an app is logged as sent.
_API_KEY = re.compile(r"[a-z0-9]{1,64}")
_FINGERPRINT_DIGITS = 8

ApiKeyLookup = Callable[[str], object]
"""Whether a string is the API key of an existing app (truthy), such as State.app."""
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


CredentialCheck = Callable[[str, str | None], bool]
"""Whether a text is a credential the service knows (an operator token, or an API secret of the app the call's
`x-api-key` names, given as the second argument): such a text is never echoed or logged."""


def request_id(sent: str | None, api_key: str | None = None, is_credential: CredentialCheck | None = None) -> str:
    """The caller's request id when it is a plain one (at most 64 letters, digits, `_:-`) and not a credential
    sent in the wrong header (`is_credential`), else a fresh one."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        if is_credential is None or not is_credential(sent, api_key):
            return sent
    return os.urandom(8).hex()


class AccessRecord(logging.LogRecord):
    """The record of one access-log line, with `method`, `code`, `duration_ms`, `api_key`, `reason` (the
    ErrorInfo reason of a failed call, else None), `peer` (the caller's address as gRPC names it, such as
    `ipv4:10.1.2.3:53412`) and, when tracing is on, `trace_id` as its extra fields.

    Made directly rather than by Logger.log, which looks up the caller's frame and collects process and thread
    facts that the line never shows: that and the generic JSON pass were most of a line's cost. Any handler can
    still format it (it has a LogRecord's attributes); JsonFormatter writes it by a path of its own.
    """

    def __init__(
        self,
        level: int,
        method: str,
        code: str,
        seconds: float,
        api_key: str | None,
        reason: str | None = None,
        peer: str | None = None,
        trace_id: str | None = None,
    ) -> None:
        # Deliberately not LogRecord.__init__: every attribute formatters read, set directly.
        created = time.time()
        self.name = access_log.name
        self.msg = "%s %s"
        self.args = (method, code)
        self.levelno = level
        self.levelname = logging.getLevelName(level)
        self.pathname = self.filename = self.module = ""
        self.lineno = 0
        self.funcName = ""
        self.exc_info = self.exc_text = self.stack_info = None
        self.created = created
        self.msecs = int((created - int(created)) * 1000) + 0.0
        self.relativeCreated = 0.0
        self.thread = self.process = None
        self.threadName = self.processName = None
        self.method = method
        self.code = code
        self.duration_ms = round(seconds * 1000, 3)
        self.api_key = api_key
        self.reason = reason
        self.peer = peer
        if trace_id is not None:
            self.trace_id = trace_id


# Strings that need no escaping in JSON: what method names, codes, request ids and logged API keys are made of.
_PLAIN = re.compile(r"[A-Za-z0-9_ ./:-]*")
# The keys an access line writes itself, after `time`, `level`, `logger` and `message`.
_ACCESS_KEYS = frozenset(
    {
        "time",
        "level",
        "logger",
        "message",
        "request_id",
        "method",
        "code",
        "duration_ms",
        "api_key",
        "reason",
        "peer",
        "trace_id",
    }
)


def _json_string(text: str) -> str:
    return f'"{text}"' if _PLAIN.fullmatch(text) else json.dumps(text)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message, `fields`, request_id, `extra` fields."""

    def __init__(self, fields: dict[str, Any] | None = None) -> None:
        super().__init__()
        self._fields = fields or {}
        # Access lines are written by hand, with the fields rendered once (unless a field takes one of their keys).
        self._access_fields: str | None = None
        if not _ACCESS_KEYS.intersection(self._fields):
            rendered = json.dumps(self._fields, default=str, separators=(",", ":"))[1:-1]
            self._access_fields = "," + rendered if rendered else ""
        self._second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        if type(record) is AccessRecord and self._access_fields is not None:
            return self._access_line(record, self._access_fields)
        entry: dict[str, Any] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self._fields,
        }
        if (rid := current_request_id.get()) is not None:
            entry["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, separators=(",", ":"))

    def _time(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        second = self._second  # one tuple, read and replaced whole: safe with handlers on several threads
        if second[0] != seconds:
            second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
            self._second = second
        return f"{second[1]}.{int(record.msecs):03d}Z"

    def _access_line(self, record: AccessRecord, fields: str) -> str:
        """The same JSON object the generic path makes of an access record, without building it as a dict."""
        rid = current_request_id.get()
        request = "" if rid is None else ',"request_id":' + _json_string(rid)
        api_key = "null" if record.api_key is None else _json_string(record.api_key)
        reason = "null" if record.reason is None else _json_string(record.reason)
        peer = "null" if record.peer is None else _json_string(record.peer)
        trace = getattr(record, "trace_id", None)
        return (
            f'{{"time":"{self._time(record)}","level":"{record.levelname}","logger":"{record.name}",'
            f'"message":{_json_string(record.getMessage())}{fields}{request}'
            f',"method":{_json_string(record.method)},"code":{_json_string(record.code)}'
            f',"duration_ms":{record.duration_ms!r},"api_key":{api_key},"reason":{reason},"peer":{peer}'
            + ("" if trace is None else f',"trace_id":{_json_string(trace)}')
            + "}"
        )


FLUSH_INTERVAL = 0.2
"""Seconds a line below WARNING may wait in the output buffer before it is written out."""


class BatchingHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes WARNING and above at once, and the rest (the access log's line per call)
    within FLUSH_INTERVAL, many lines to a write.

    A write per line is a system call per call, and each one lets grpc's poller thread take the GIL from the
    event loop, which then waits to get it back: measured, that costs far more than the line itself
    (docs/performance.md, the defaults rows). A background thread flushes what waits; the interpreter's exit
    flushes the rest (a process killed with SIGKILL loses at most the last FLUSH_INTERVAL of lines below WARNING).
    """

    def __init__(self, stream: TextIO, interval: float = FLUSH_INTERVAL) -> None:
        super().__init__(stream)
        self._pending = False
        self._interval = interval
        self._stopped = threading.Event()
        threading.Thread(target=self._flush_pending, name="authsvc-log-flush", daemon=True).start()

    def close(self) -> None:
        """Flushes what waits and ends the flushing thread (the stream itself stays open, as StreamHandler's)."""
        self._stopped.set()
        self.flush()
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
            if record.levelno >= logging.WARNING:
                self.stream.flush()
            else:
                self._pending = True
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def _flush_pending(self) -> None:
        while not self._stopped.wait(self._interval):
            if self._pending:
                self.acquire()
                try:
                    self._pending = False
                    self.stream.flush()
                except (OSError, ValueError):
                    pass  # a closed or broken stream: nothing left to write to
                finally:
                    self.release()


def configure_logging(level: str, stream: TextIO | None = None, *, ok_line_rate: int = 100, **fields: Any) -> None:
    """Sends every log record at `level` and above to stdout (or `stream`), one JSON object per line, each
    with `fields` (such as the worker number) added; lines below WARNING are written in batches
    (BatchingHandler); at most `ok_line_rate` access lines of successful calls a second (OkLineLimit)."""
    ok_lines.rate = ok_line_rate
    handler = BatchingHandler(sys.stdout if stream is None else stream)
    handler.setFormatter(JsonFormatter(fields))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)


def loggable_api_key(sent: str | None, known: ApiKeyLookup | None = None) -> str | None:
    """The API key as the access log shows it: as sent when it names an existing app (`known`), else a
    fingerprint, `sha256:` and 8 hex digits, which tells repeated wrong keys apart but cannot give back a secret
    or token sent in its place."""
    if not sent:
        return sent
    if known is not None and _API_KEY.fullmatch(sent) and known(sent):
        return sent
    return "sha256:" + hashlib.sha256(sent.encode("utf-8", "surrogatepass")).hexdigest()[:_FINGERPRINT_DIGITS]


class OkLineLimit:
    """At most `rate` access lines of successful calls a second (every other call's line is always written);
    the calls past it are counted, and their number is logged with the next line of a later second.

    A busy server answers thousands of calls a second: a line for each costs a tenth of the call's CPU and says
    what the metrics already count. Failures, the lines an operator reads, are never dropped.
    """

    __slots__ = ("rate", "_second", "_logged", "_dropped")

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._second = 0
        self._logged = 0
        self._dropped = 0

    def admit(self, now: float) -> bool:
        """Whether an OK call finished at `now` (monotonic seconds) gets its line."""
        second = int(now)
        if second != self._second:
            if self._dropped:
                access_log.info(
                    "%d successful calls were not logged (more than AUTHSVC_ACCESS_LOG_RATE=%d a second)",
                    self._dropped,
                    self.rate,
                    extra={"not_logged": self._dropped},
                )
            self._second, self._logged, self._dropped = second, 0, 0
        if self._logged < self.rate:
            self._logged += 1
            return True
        self._dropped += 1
        return False


ok_lines = OkLineLimit(100)
"""The limit on access lines of successful calls in this process (configure_logging sets its rate)."""


trace_id_source: Callable[[], str | None] | None = None
"""Gives the trace id of the call being handled when tracing is on (authsvc.tracing sets it); None: tracing off."""


def log_call(
    level: int,
    method: str,
    code: str,
    seconds: float,
    api_key: str | None,
    known: ApiKeyLookup | None = None,
    reason: str | None = None,
    peer: Callable[[], str] | None = None,
) -> None:
    """Writes the access-log line of one finished call (the request id comes from the call's context); the API
    key as loggable_api_key shows it, the ErrorInfo `reason` of a failure, and the caller's address (`peer`, asked
    only for a line that is written). A successful call's line is subject to `ok_lines`."""
    if access_log.isEnabledFor(level) and (code != "OK" or ok_lines.admit(time.monotonic())):
        access_log.handle(
            AccessRecord(
                level,
                method,
                code,
                seconds,
                loggable_api_key(api_key, known),
                reason,
                None if peer is None else peer(),
                None if trace_id_source is None else trace_id_source(),
            )
        )
