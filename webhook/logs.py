"""Structured JSON logs: one object per line, with the ``extra`` fields of each call."""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName",
                                                                          "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": bounded(record.getMessage()),
        }
        entry.update({key: bounded(value) for key, value in vars(record).items() if key not in _STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it happened, never the message: exception messages can carry
            # request data (formatException would end with "Type: message").
            entry["error"] = record.exc_info[0].__name__
            entry["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(entry, default=str)


# Log fields carry request data (a namespace, an image, a reason quoting a field): a forged
# review once turned 8 requests into 527 MiB of logs. Every field is cut to these bounds.
FIELD_CHARS = 256
FIELD_ITEMS = 16


def bounded(value: object, depth: int = 0) -> object:
    """``value`` with every string cut to FIELD_CHARS and every collection to FIELD_ITEMS."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth < 2 and isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        kept = [bounded(item, depth + 1) for item in items[:FIELD_ITEMS]]
        return kept + ([f"...(+{len(items) - FIELD_ITEMS} items)"] if len(items) > FIELD_ITEMS else [])
    if depth < 2 and isinstance(value, dict):
        fields = {bounded(str(k), depth + 1): bounded(v, depth + 1) for k, v in list(value.items())[:FIELD_ITEMS]}
        if len(value) > FIELD_ITEMS:
            fields["..."] = f"+{len(value) - FIELD_ITEMS} keys"
        return fields
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= FIELD_CHARS else f"{text[:FIELD_CHARS]}...(+{len(text) - FIELD_CHARS} chars)"


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # The SDKs' debug records print request and response bodies: botocore's carry ECR tokens,
    # STS secret keys and session tokens; the kubernetes client's carry Secrets' data.
    # --log-level debug is for regcred's own records.
    for name in _SDK_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    # Audit lines are records of who was served credentials, not diagnostics: whatever the
    # level, they are written (--log-level warning must not serve credentials unrecorded).
    for name in _AUDIT_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)


_AUDIT_LOGGERS = ("webhook.ciapi.audit",)
_SDK_LOGGERS = ("botocore", "boto3", "urllib3", "kubernetes", "google.auth", "google_auth_httplib2")
