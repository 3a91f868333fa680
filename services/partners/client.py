"""The HSDS importer and exporter as a client of the running partners service (``ensemble
partners import|export``).

It talks HTTP to the service rather than to its database: partners owns its tables, checks every
row with the same code as any upload, and emits what an import changes through its outbox. Files
go up zipped (a folder of CSV tables, or one JSON file), so a county's directory fits the
request limit.
"""

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TIMEOUT = httpx.Timeout(300.0, connect=10.0)  # a large directory takes a while to check and load


class ClientError(Exception):
    """The service could not be asked, or refused the request as a whole (not a row)."""


@dataclass
class ImportOutcome:
    status: int
    report: dict[str, Any]

    @property
    def failed(self) -> bool:
        """A file failed (nothing of it loaded), or the whole import did."""
        return self.status != 200 or bool(self.report.get("failed_files"))


def upload_body(path: Path) -> bytes:
    """The zip to send for a folder of HSDS CSV tables, an HSDS JSON file, or a zip as it is."""
    if path.is_dir():
        tables = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".csv")
        if not tables:
            raise ClientError(f"{path} holds no .csv files (HSDS tables)")
        return _zip({p.name: p.read_bytes() for p in tables})
    if path.suffix.lower() == ".json":
        return _zip({path.name: path.read_bytes()})
    if path.suffix.lower() == ".zip":
        return path.read_bytes()
    raise ClientError(f"{path}: give a folder of HSDS CSV files, a .json file or a .zip")


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url.rstrip("/") + "/api/v1", timeout=TIMEOUT,
                        headers={"Authorization": f"Bearer {token}"})


def _refused(response: httpx.Response) -> ClientError:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return ClientError(f"the service answered {response.status_code}: {detail}")


def import_path(url: str, token: str, district: str, path: Path,
                capacity: int | None = None) -> ImportOutcome:
    body = upload_body(path)
    params: dict[str, Any] = {"district_id": district}
    if capacity is not None:
        params["capacity"] = capacity
    try:
        with _client(url, token) as client:
            response = client.post("/partners/import/hsds", params=params, content=body,
                                   headers={"Content-Type": "application/zip"})
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the partners service at {url}: {exc}") from exc
    if response.status_code in (200, 422):
        report = response.json()
        if "failed_files" in report:  # the importer's report, not a refused request
            return ImportOutcome(response.status_code, report)
    raise _refused(response)


def report_lines(outcome: ImportOutcome) -> list[str]:
    """The report as a person reads it: what loaded, then each failed file, error and warning
    with its file, row and field."""
    report = outcome.report
    lines = []
    loaded = report.get("loaded")
    if loaded:
        lines.append(
            f"loaded: {loaded['organizations_created']} organizations created, "
            f"{loaded['organizations_updated']} updated; {loaded['services_created']} services "
            f"created, {loaded['services_updated']} updated "
            f"({loaded['services_without_school']} serve no school of the district)")
    else:
        lines.append("loaded: nothing")
    for name in report.get("failed_files", []):
        lines.append(f"FAILED {name}: nothing of it loaded")
    for kind, key, count in [("ERROR", "errors", "error_count"),
                             ("WARNING", "warnings", "warning_count")]:
        shown = report.get(key, [])
        for problem in shown:
            lines.append(f"{kind} {_where(problem)}: {problem['message']}")
        if report.get(count, 0) > len(shown):
            lines.append(f"... and {report[count] - len(shown)} more ({key} are listed up to "
                         f"{len(shown)})")
    lines.append(f"{report.get('error_count', 0)} errors, {report.get('warning_count', 0)} "
                 f"warnings, {len(report.get('failed_files', []))} files failed")
    return lines


def _where(problem: dict[str, Any]) -> str:
    where = str(problem["file"])
    if problem.get("row"):
        where += f" row {problem['row']}"
    if problem.get("field"):
        where += f" field {problem['field']}"
    return where


def export_to(url: str, token: str, district: str, folder: Path,
              as_json: bool = False) -> list[Path]:
    """Write the district's directory into ``folder``: the HSDS CSV tables, or hsds.json."""
    try:
        with _client(url, token) as client:
            response = client.get("/partners/export/hsds", params={
                "district_id": district, "format": "json" if as_json else "csv-zip"})
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the partners service at {url}: {exc}") from exc
    if response.status_code != 200:
        raise _refused(response)
    folder.mkdir(parents=True, exist_ok=True)
    if as_json:
        target = folder / "hsds.json"
        target.write_bytes(response.content)
        return [target]
    written = []
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        for info in archive.infolist():
            name = Path(info.filename).name  # never a path out of the folder
            if info.is_dir() or not name:
                continue
            target = folder / name
            target.write_bytes(archive.read(info))
            written.append(target)
    return written
