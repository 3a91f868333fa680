"""``ensemble roster import``: a district's OneRoster package, from a folder or a zip.

On the server (the default) it writes to engagement's database itself, as ``ensemble migrate``
does, with the same reader and sync as the HTTP upload: a 50,000-student roster is over the
request limit (1 MB). Its events go through the outbox, published by the running engagement
service's relay (rows another process committed are swept within seconds). With ``--url`` it
uploads to a running system instead (``POST /api/v1/rosters/import``, a district admin's token).
"""

from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from runtime.db import utcnow
from runtime.districts import Districts
from runtime.migrations import SchemaNotCurrent, require_current
from runtime.service import ServiceRuntime
from runtime.settings import Settings
from services.engagement import roster, roster_sync
from services.engagement.tables import Base

TIMEOUT = httpx.Timeout(600.0, connect=10.0)


class ClientError(Exception):
    """The roster could not be read or sent as a whole (not a row)."""


def package(path: Path) -> bytes:
    """The zip for a folder of OneRoster CSV files, or a zip as it is."""
    if path.is_dir():
        if not any(path.glob("*.csv")):
            raise ClientError(f"{path} holds no .csv files (a OneRoster package)")
        return roster.zip_folder(path)
    if path.suffix.lower() == ".zip":
        return path.read_bytes()
    raise ClientError(f"{path}: give a folder of OneRoster CSV files or a .zip of them")


async def run_local(settings: Settings, districts: Districts, district_id: str,
                    path: Path) -> dict[str, Any]:
    district = districts.get(district_id)
    if district is None:
        raise ClientError(f"district {district_id} is not in the districts file")
    rt = ServiceRuntime("engagement", settings, Base.metadata, districts)
    try:
        try:
            await require_current(rt.db, "engagement")
        except SchemaNotCurrent as exc:
            raise ClientError(f"engagement's database is not at this version's schema ({exc}): "
                              "run `ensemble migrate engagement` first") from exc
        known = await roster_sync.known_guardians(rt, district)
        read = roster.read_zip(package(path), district, known)
        loaded = await roster_sync.import_roster(rt, district, read, utcnow())
    finally:
        await rt.db.dispose()
    report = read.report()
    report["loaded"] = asdict(loaded) if loaded else None
    return report


def upload(url: str, token: str, district_id: str, path: Path) -> dict[str, Any]:
    body = package(path)
    try:
        with httpx.Client(base_url=url.rstrip("/") + "/api/v1", timeout=TIMEOUT,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            response = client.post("/rosters/import", params={"district_id": district_id},
                                   content=body, headers={"Content-Type": "application/zip"})
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the system at {url}: {exc}") from exc
    if response.status_code in (200, 422) and "failed_files" in response.text:
        return dict(response.json())
    raise ClientError(f"the service answered {response.status_code}: {response.text[:500]}")


def report_lines(report: dict[str, Any]) -> list[str]:
    """What loaded, then each failed file, error and warning with its file, row and field."""
    loaded = report.get("loaded")
    lines = [
        "loaded: " + (", ".join(f"{k.replace('_', ' ')} {v}" for k, v in loaded.items())
                      if loaded else "nothing")]
    lines += [f"FAILED {name}: nothing of it loaded" for name in report.get("failed_files", [])]
    for kind, key, count in [("ERROR", "errors", "error_count"),
                             ("WARNING", "warnings", "warning_count")]:
        shown = report.get(key, [])
        for p in shown:
            where = str(p["file"]) + (f" row {p['row']}" if p.get("row") else "") + (
                f" field {p['field']}" if p.get("field") else "")
            lines.append(f"{kind} {where}: {p['message']}")
        if report.get(count, 0) > len(shown):
            lines.append(f"... and {report[count] - len(shown)} more {key}")
    lines.append(f"{report.get('error_count', 0)} errors, {report.get('warning_count', 0)} "
                 f"warnings, {len(report.get('failed_files', []))} files failed")
    return lines
