"""The sign-in audit trail, one per district: each sign-in, each refusal (no role for the
person, a state that does not match, a provider that failed) and each sign-out, and each use of
a partner's link. An append-only JSON-lines file per district, ``<district>.jsonl`` in
ENSEMBLE_CONSOLE_AUDIT_DIR (default <ENSEMBLE_DATA_DIR>/audit/sign-in), which a district admin
reads on the console's District page. The log line for the same event names the district, the
provider and the outcome only: the person's id is in the trail, never in the logs."""

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from contracts.subjects import check_token

log = logging.getLogger("ensemble.console.sign_in")
KINDS = ("sign_in", "refused", "sign_out", "link_used", "link_refused")


class SignInAudit:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._lock = threading.Lock()

    def _file(self, district: str) -> Path:
        return self.folder / f"{check_token(district)}.jsonl"

    def record(self, district: str, kind: str, *, provider: str | None = None,
               subject: str | None = None, role: str | None = None,
               reason: str | None = None, **extra: str) -> None:
        assert kind in KINDS
        entry: dict[str, Any] = {"at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                                 "kind": kind, "provider": provider, "subject": subject,
                                 "role": role, "reason": reason, **extra}
        line = json.dumps({k: v for k, v in entry.items() if v is not None}) + "\n"
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            with self._file(district).open("a", encoding="utf-8") as handle:
                handle.write(line)
        log.info("sign-in audit: %s district=%s provider=%s reason=%s", kind, district,
                 provider, reason)

    def recent(self, district: str, limit: int = 200) -> list[dict[str, Any]]:
        """The newest entries first."""
        path = self._file(district)
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()[-limit:]
        return [json.loads(line) for line in reversed(lines) if line.strip()]
