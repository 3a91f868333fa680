"""The `ensemble` command."""

import asyncio
import json
import mailbox
import os
from email.header import decode_header, make_header
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from runtime.auth import Role
from runtime.districts import Districts, DistrictsFileError, load_districts
from runtime.logs import configure_logging
from runtime.settings import Settings
from runtime.tracing import configure_tracing

app = typer.Typer(help="Ensemble: community school coordination over NATS JetStream.",
                  no_args_is_help=True)

Port = Annotated[int, typer.Option(help="HTTP port")]
Host = Annotated[str, typer.Option(envvar="ENSEMBLE_HOST", help="HTTP address to bind")]
DataDir = Annotated[Path | None, typer.Option(help="where SQLite files, NATS data, mail live")]


def _settings(data_dir: Path | None) -> Settings:
    settings = Settings()
    if data_dir:
        settings = settings.model_copy(update={"data_dir": data_dir})
    return settings


def _fail(message: str) -> NoReturn:
    """A usage or configuration error: one line on stderr, exit code 2, no traceback."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _districts(settings: Settings) -> Districts:
    try:
        return load_districts(settings.districts_file)
    except DistrictsFileError as exc:
        _fail(str(exc))


@app.command()
def up(port: Port = 8000, host: Host = "127.0.0.1", data_dir: DataDir = None) -> None:
    """Run the whole system: nats-server, local mailbox and SMS, and all five services (their
    databases upgraded first, as `ensemble migrate` does)."""
    from ensemble.embedded import DataFolderInUseError
    from ensemble.system import describe_data, run_up
    from runtime.host import run

    settings = _settings(data_dir)
    configure_logging(settings.log_level)
    configure_tracing("ensemble")  # OTLP export only when the OTEL_* variables ask for it
    _districts(settings)  # a mistake in the file is one line, before anything starts
    typer.echo(f"Ensemble on http://{host}:{port}  (console /, API /api/v1, docs /docs, "
               "metrics /metrics)")
    typer.echo(describe_data(settings.data_dir.resolve()))
    try:
        run(run_up(settings, dict(os.environ), host, port))
    except DataFolderInUseError as exc:
        _fail(str(exc))


def _one(name: str):  # type: ignore[no-untyped-def]
    def run(port: Port = 8000, host: Host = "127.0.0.1", data_dir: DataDir = None) -> None:
        from ensemble.system import build_app
        from runtime.host import run, serve

        settings = _settings(data_dir)
        configure_logging(settings.log_level)
        configure_tracing(name)  # OTLP export only when the OTEL_* variables ask for it
        _districts(settings)
        if name != "console":
            _require_migrated(settings, name)
        run(serve(build_app(settings, (name,)), host, port))

    run.__doc__ = (f"Run the {name} service alone (NATS_URL and {name.upper()}_DATABASE_URL)."
                   if name != "console" else "Run the console alone: pages over the APIs at "
                   "ENSEMBLE_CONSOLE_API_URL (default ENSEMBLE_PUBLIC_BASE_URL).")
    return run


def _require_migrated(settings: Settings, name: str) -> None:
    """A database behind or ahead of this code: one line saying what to run, exit 1."""
    import logging

    from runtime.migrations import check

    problem = asyncio.run(check(settings, name))
    if problem:
        logging.getLogger("ensemble.migrations").error("%s", problem)
        raise typer.Exit(1)


for _name in ("referrals", "engagement", "notifications", "webhooks", "console"):
    app.command(name=_name)(_one(_name))

# `ensemble partners` runs the service, as the others do; its commands work with the directory
# of a running one over HTTP (services/partners/client.py).
partners_app = typer.Typer(help="The partners service, and its directory (HSDS import/export).")
app.add_typer(partners_app, name="partners")
District = Annotated[str, typer.Option(help="the district id, e.g. d001")]
ServiceUrl = Annotated[str, typer.Option(envvar="ENSEMBLE_URL",
                                         help="the running system (or partners service)")]
BearerToken = Annotated[str, typer.Option(
    envvar="ENSEMBLE_TOKEN",
    help="a staff token: ensemble token --role district_admin --district d001")]


@partners_app.callback(invoke_without_command=True)
def partners(ctx: typer.Context, port: Port = 8000, host: Host = "127.0.0.1",
             data_dir: DataDir = None) -> None:
    """Run the partners service alone (NATS_URL and PARTNERS_DATABASE_URL); with a command,
    work with the directory of a running one."""
    if ctx.invoked_subcommand is None:
        _one("partners")(port, host, data_dir)


@partners_app.command(name="import")
def partners_import(
    path: Annotated[Path, typer.Argument(exists=True, help="a folder of HSDS CSV files, an HSDS "
                                                           "JSON file, or a zip of either")],
    district: District,
    token: BearerToken,
    url: ServiceUrl = "http://127.0.0.1:8000",
    capacity: Annotated[int | None, typer.Option(
        min=0, max=100_000, help="slots at each school for services without an HSDS "
                                 "service_capacity row")] = None,
) -> None:
    """Load an HSDS directory into a running system.

    Prints what loaded and every failed file, bad row and warning (file, row, field); exits 1
    when a file failed or nothing loaded."""
    from services.partners.client import ClientError, import_path, report_lines

    try:
        outcome = import_path(url, token, district, path, capacity)
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for line in report_lines(outcome):
        typer.echo(line)
    raise typer.Exit(1 if outcome.failed else 0)


@partners_app.command(name="export")
def partners_export(
    folder: Annotated[Path, typer.Argument(file_okay=False, help="where to write the files")],
    district: District,
    token: BearerToken,
    url: ServiceUrl = "http://127.0.0.1:8000",
    json_file: Annotated[bool, typer.Option(
        "--json", help="one hsds.json instead of the CSV tables")] = False,
) -> None:
    """Write a district's directory as HSDS CSV tables (or JSON) into a folder."""
    from services.partners.client import ClientError, export_to

    try:
        written = export_to(url, token, district, folder, as_json=json_file)
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"wrote {len(written)} files to {folder}: {', '.join(p.name for p in written)}")


# `ensemble roster import`: a district's students and families from its SIS (OneRoster 1.2 CSV).
roster_app = typer.Typer(help="District rosters from the SIS (OneRoster 1.2 CSV).",
                         no_args_is_help=True)
app.add_typer(roster_app, name="roster")


@roster_app.command(name="import")
def roster_import(
    path: Annotated[Path, typer.Argument(exists=True, help="a folder of OneRoster CSV files "
                                                           "(manifest.csv...) or a zip of them")],
    district: District,
    data_dir: DataDir = None,
    url: Annotated[str | None, typer.Option(help=(
        "upload to a running system instead of writing to this server's engagement database "
        "(the request limit is 1 MB zipped)"))] = None,
    token: Annotated[str | None, typer.Option(envvar="ENSEMBLE_TOKEN", help=(
        "with --url: a district admin's token"))] = None,
) -> None:
    """Sync a district's families and students with its SIS roster: new ones added, changed
    ones updated, those a bulk file leaves out (or marks tobedeleted) retired, the rest left
    untouched. Prints what loaded and every bad row (file, row, field); exits 1 when a file
    failed or nothing loaded."""
    from services.engagement.roster_client import ClientError, report_lines, run_local, upload

    try:
        if url:
            if not token:
                _fail("--url needs --token (or ENSEMBLE_TOKEN): a district admin's")
            report = upload(url, token, district, path)
        else:
            settings = _settings(data_dir)
            report = asyncio.run(run_local(settings, _districts(settings), district, path))
    except ClientError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    for line in report_lines(report):
        typer.echo(line)
    raise typer.Exit(1 if report.get("failed_files") or not report.get("loaded") else 0)


@app.command()
def migrate(
    services: Annotated[list[str] | None, typer.Argument(
        help="the services whose databases to upgrade (default: all five)",
        show_default=False)] = None,
    data_dir: DataDir = None,
) -> None:
    """Upgrade each service's database to this version's schema, then exit. Deployments run it
    once before the services start (a service refuses a database behind or ahead of its code);
    `ensemble up` runs it itself."""
    from runtime.migrations import migrate as upgrade_all
    from runtime.settings import SERVICES

    names = services or list(SERVICES)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        _fail(f"no service {', '.join(map(repr, unknown))} (services: {', '.join(SERVICES)})")
    settings = _settings(data_dir)
    configure_logging(settings.log_level)
    for done in asyncio.run(upgrade_all(settings, names)):
        was = "already there" if done.before == done.after else f"was {done.before or 'empty'}"
        typer.echo(f"{done.service}: at {done.after} ({was})")


@app.command()
def streams() -> None:
    """Create the JetStream streams that are missing, as NATS_USER (the admin user: service
    users may not create streams). Deployments run it once before the services; `ensemble up`
    needs no such step."""
    settings = Settings()
    configure_logging(settings.log_level)
    asyncio.run(_create_streams(settings))


async def _create_streams(settings: Settings, patience: float = 120) -> None:
    import nats
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeoutError
    from nats.js.errors import ServiceUnavailableError

    from runtime.streams import STREAMS, ensure_streams

    nc = await nats.connect(settings.nats_url.split(","), user=settings.nats_user,
                            password=settings.nats_password, name="ensemble-streams")
    try:
        deadline = asyncio.get_running_loop().time() + patience
        while True:
            try:
                await ensure_streams(nc.jetstream(), settings.stream_replicas)
                break
            except (NatsTimeoutError, ServiceUnavailableError, NoRespondersError):
                # A cluster still electing its leader (a user without the right times out too).
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(2)
    finally:
        await nc.close()
    typer.echo("streams ready: " + ", ".join(spec.name for spec in STREAMS))


@app.command()
def demo(
    url: Annotated[str | None, typer.Option(help="a running system; default: start one")] = None,
    data_dir: DataDir = None,
) -> None:
    """Load a sample district and push referrals through the loop, printing each step."""
    from ensemble.demo import run_demo

    _districts(_settings(data_dir))
    if url:
        settings = _settings(data_dir)
        ok = asyncio.run(run_demo(url, _demo_token(settings),
                                  mail_dir=settings.data_dir.resolve() / "mailbox"))
    else:
        ok = asyncio.run(_demo_embedded(_settings(data_dir or Path("data/demo"))))
    raise typer.Exit(0 if ok else 1)


async def _demo_embedded(settings: Settings) -> bool:
    import shutil

    from ensemble.demo import run_demo, say
    from ensemble.embedded import free_port
    from ensemble.system import describe_data, serving_embedded

    configure_logging(os.environ.get("ENSEMBLE_LOG_LEVEL", "WARNING"))
    shutil.rmtree(settings.data_dir, ignore_errors=True)  # a fresh sample district each time
    # The demo runs at any hour: its routine messages are not held for the families' night
    # (20:00-08:00 in the district's time zone) unless quiet hours are set explicitly.
    quiet = {"ENSEMBLE_QUIET_HOURS_START", "ENSEMBLE_QUIET_HOURS_END"}
    quiet_off = not quiet & os.environ.keys()
    if quiet_off:
        os.environ.update(dict.fromkeys(quiet, "00:00"))
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k in ("NATS_URL", "SMTP_URL", "SMS_API_URL", "ENSEMBLE_PUBLIC_BASE_URL")}
    async with serving_embedded(settings, env, port) as s:
        say(f"system up: nats {s.nats_url}, all five services on http://127.0.0.1:{port}")
        if quiet_off:
            say("quiet hours are off for the demo (ensemble up holds routine messages "
                "20:00-08:00 family time)")
        ok = await run_demo(f"http://127.0.0.1:{port}", _demo_token(s),
                            mail_dir=s.data_dir.resolve() / "mailbox",
                            sms_url=None if "SMS_API_URL" in env else s.sms_api_url)
    say(describe_data(s.data_dir.resolve()))
    say(f"to look at it in the console: ensemble up --data-dir {settings.data_dir}, then open "
        "http://127.0.0.1:8000/ and sign in as a coordinator of Lincoln Elementary and "
        "Roosevelt Middle School")
    return ok


def _demo_token(settings: Settings) -> str:
    from runtime.auth import issue_token

    return issue_token(settings.jwt_secret, subject="demo", role="district_admin",
                       district="d001")


@app.command()
def token(
    role: Annotated[Role, typer.Option(case_sensitive=False, help="who the caller is")],
    district: Annotated[str, typer.Option(help="the district id, from the districts file")],
    school: Annotated[list[str] | None, typer.Option(help="a coordinator's school; repeat")] = None,
    partner: Annotated[str | None, typer.Option(help="a partner's id")] = None,
    subject: Annotated[str, typer.Option(help="who it is for (logged in the audit trail)")] = "dev",
    hours: Annotated[float, typer.Option(min=0.01, help="how long it is valid")] = 8,
) -> None:
    """Issue a bearer token: signed with the key ENSEMBLE_SIGNING_KEYS_FILE makes active when
    it is set (a deployment's operators), else with ENSEMBLE_JWT_SECRET (development)."""
    from datetime import timedelta

    from runtime.auth import issue_token
    from runtime.keys import KeysError, SigningKeys

    settings = Settings()
    # A token for a district or school the deployment does not serve opens nothing: say so.
    found = _districts(settings).get(district)
    if found is None:
        known = ", ".join(d.id for d in _districts(settings).districts)
        _fail(f"--district {district!r} is not in {settings.districts_file} ({known})")
    for school_id in school or ():
        if found.school(school_id) is None:
            _fail(f"--school {school_id!r} is not a school of {district} "
                  f"({', '.join(s.id for s in found.schools)})")
    if role == Role.coordinator and not school:
        _fail("a coordinator's token needs --school (repeat it for each school)")
    if role == Role.partner and not partner:
        _fail("a partner's token needs --partner (the partner's id)")
    try:
        key = (SigningKeys(settings.signing_keys_file) if settings.signing_keys_file
               else settings.jwt_secret)
    except KeysError as exc:
        _fail(f"{exc} (ENSEMBLE_SIGNING_KEYS_FILE)")
    typer.echo(issue_token(key, subject=subject, role=role, district=district,
                           schools=school or (), partner_id=partner,
                           ttl=timedelta(hours=hours)))


# `ensemble keys`: the console's signing keys (a private JWKS file), rotated without downtime.
keys_app = typer.Typer(help="The console's token-signing keys (ENSEMBLE_SIGNING_KEYS_FILE): "
                            "new, activate, retire, list.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
KeysFile = Annotated[Path, typer.Argument(help="the private JWKS file (created if missing)")]


def _read_keys(path: Path, *, missing_ok: bool = False) -> dict[str, object]:
    from runtime.keys import KeysError, read_jwks

    if missing_ok and not path.exists():
        return {"keys": []}
    try:
        return read_jwks(path)
    except KeysError as exc:
        _fail(str(exc))


@keys_app.command("new")
def keys_new(path: KeysFile,
             alg: Annotated[str, typer.Option(help="ES256 or RS256")] = "ES256",
             activate: Annotated[bool, typer.Option(
                 help="sign with it at once (a new file's first key always does)")] = False,
             ) -> None:
    """Add a new key. Published at once; it signs only once activated (rotation, step 1)."""
    from runtime.keys import KeysError, new_key, write_jwks

    data = _read_keys(path, missing_ok=True)
    keys = list(data["keys"])  # type: ignore[call-overload]
    try:
        key = new_key(alg)
    except KeysError as exc:
        _fail(str(exc))
    keys = [key, *keys] if activate else [*keys, key]
    write_jwks(path, {**data, "keys": keys})
    typer.echo(key["kid"])


def _keys_by_kid(path: Path, kid: str) -> tuple[dict[str, object], list[dict[str, object]],
                                                dict[str, object]]:
    data = _read_keys(path)
    keys: list[dict[str, object]] = list(data["keys"])  # type: ignore[call-overload]
    found = next((k for k in keys if k.get("kid") == kid), None)
    if found is None:
        _fail(f"no key {kid!r} in {path} ({', '.join(str(k.get('kid')) for k in keys)})")
    return data, keys, found


@keys_app.command("activate")
def keys_activate(path: KeysFile, kid: Annotated[str, typer.Argument(help="the key's kid")]
                  ) -> None:
    """Sign with this key from now on; the others stay published (rotation, step 2)."""
    from runtime.keys import write_jwks

    data, keys, found = _keys_by_kid(path, kid)
    write_jwks(path, {**data, "keys": [found, *(k for k in keys if k is not found)]})


@keys_app.command("retire")
def keys_retire(path: KeysFile, kid: Annotated[str, typer.Argument(help="the key's kid")]
                ) -> None:
    """Stop publishing a key: tokens it signed are refused from then on (rotation, step 3,
    once ENSEMBLE_ACCESS_TOKEN_MINUTES have passed since step 2). Not the active key."""
    from runtime.keys import write_jwks

    data, keys, found = _keys_by_kid(path, kid)
    if keys[0] is found:
        _fail(f"{kid} is the active key: activate another one first")
    write_jwks(path, {**data, "keys": [k for k in keys if k is not found]})


@keys_app.command("list")
def keys_list(path: KeysFile) -> None:
    """Each key's kid and algorithm, the active one first."""
    for index, key in enumerate(_read_keys(path)["keys"]):  # type: ignore[call-overload]
        typer.echo(f"{key.get('kid')}  {key.get('alg')}  "
                   f"{'active' if index == 0 else 'published'}")


@app.command(name="sms-reply")
def sms_reply(
    body: Annotated[str, typer.Argument(help="what the family texts, e.g. 'Yes please' or STOP")],
    sender: Annotated[str, typer.Option("--from", help="the family's phone number in E.164, "
                                                       "e.g. +14155550134")],
    url: ServiceUrl = "http://127.0.0.1:8000",
) -> None:
    """Text the system as a family would (development and trials): posts a Twilio inbound SMS to
    <url>/api/v1/sms/inbound, signed with SMS_AUTH_TOKEN (the development provider's
    "dev-token" unless set), as the SMS provider does."""
    import uuid

    import httpx

    from services.notifications.twilio import SIGNATURE_HEADER, compute_signature

    settings = Settings()
    inbound = f"{url.rstrip('/')}/api/v1/sms/inbound"
    form = {"MessageSid": f"SM{uuid.uuid4().hex}", "AccountSid": settings.sms_account_sid,
            "From": sender, "To": settings.sms_from_number, "Body": body, "NumMedia": "0"}
    signature = compute_signature(settings.sms_auth_token, inbound, form)
    try:
        answer = httpx.post(inbound, data=form, headers={SIGNATURE_HEADER: signature},
                            timeout=10)
    except httpx.HTTPError as exc:
        typer.echo(f"error: {inbound}: {exc}", err=True)
        raise typer.Exit(1) from None
    if answer.status_code >= 300:
        typer.echo(f"error: {inbound} answered {answer.status_code}: {answer.text[:200]}",
                   err=True)
        raise typer.Exit(1)
    typer.echo(f"texted {inbound} from {sender}")


@app.command(name="mailbox")
def show_mailbox(data_dir: DataDir = None) -> None:
    """Show what the local mailbox and development SMS provider received."""
    data = _settings(data_dir).data_dir.resolve()
    box = data / "mailbox"
    if box.exists():
        for message in mailbox.Maildir(box, create=False):
            subject = str(make_header(decode_header(message["Subject"] or "")))
            typer.echo(f"email  to {message['To']}: {subject}")
    sms = data / "sms" / "messages.jsonl"
    if sms.exists():
        for line in sms.read_text().splitlines():
            record = json.loads(line)
            typer.echo(f"sms    to {record.get('to')}: {record.get('body')}")



@app.command(name="restore-report")
def restore_report(
    services: Annotated[list[str] | None, typer.Argument(
        help="the services to check (default: all that publish)", show_default=False)] = None,
    data_dir: DataDir = None,
) -> None:
    """After restoring a service's database from a backup: list every event the service
    published (still on its stream) that its database no longer explains, i.e. what the
    restore lost and no replay brings back. Ids, types and stream positions only. Exits 1
    when something is listed. Run it as NATS_USER=admin (it reads the streams)."""
    from runtime.restore import describe
    from runtime.settings import SERVICES

    names = services or list(SERVICES)
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        _fail(f"no service {', '.join(map(repr, unknown))} (services: {', '.join(SERVICES)})")
    settings = _settings(data_dir)
    configure_logging(settings.log_level)
    found = asyncio.run(_restore_report(settings, names))
    for name, lost in found.items():
        typer.echo(f"{name}: {len(lost)} published events not explained by its database"
                   if lost else f"{name}: every event it published is explained")
        for line in describe(lost):
            typer.echo(f"  {line}")
    raise typer.Exit(1 if any(found.values()) else 0)


async def _restore_report(settings: Settings, names: list[str]) -> dict[str, list[Any]]:
    import nats
    from sqlalchemy import MetaData

    from runtime.db import Database
    from runtime.restore import published_by, unexplained
    from runtime.uow import messaging_tables

    nc = await nats.connect(settings.nats_url.split(","), user=settings.nats_user,
                            password=settings.nats_password, name="ensemble-restore-report")
    found = {}
    try:
        for name in names:
            if not published_by(name):
                continue
            metadata = MetaData()
            db = Database(settings.database_url(name), metadata,
                          settings.database_schema(name))
            try:
                found[name] = await unexplained(nc.jetstream(timeout=10), db,
                                                messaging_tables(metadata), name)
            finally:
                await db.dispose()
    finally:
        await nc.close()
    return found


if __name__ == "__main__":
    app()
