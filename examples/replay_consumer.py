"""Replay and follow one district's Ensemble events from NATS JetStream (nats-py only).

A durable pull consumer keeps its position on the server: stop this script at any time and the
next run resumes after the last event it acknowledged, without repeats. Where a new consumer
starts is chosen once, when it is created:

    python examples/replay_consumer.py --district d001                          # all history
    python examples/replay_consumer.py --district d001 --from-time 2026-09-01T00:00:00Z
    python examples/replay_consumer.py --district d001 --from-seq 1200
    python examples/replay_consumer.py --district d001 --reset --from-time ...  # start over

Connection: --server/NATS_URL, --user/NATS_USER (default integrator_<district>),
--password/NATS_PASSWORD. With the shipped NATS permissions an integrator's consumer is named
after its user (integrator_<district>), filtered to ensemble.<district>.>, and replies come on
the inbox prefix _INBOX_integrator_<district>; this script does all three.

Each event is printed as one line of CloudEvents JSON (structured mode) on stdout, then acked.
"""

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import nats
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError


@dataclass
class Options:
    district: str
    stream: str = "ENSEMBLE_REFERRALS"
    server: str = "nats://127.0.0.1:4222"
    user: str | None = None
    password: str | None = None
    durable: str | None = None
    from_time: datetime | None = None
    from_seq: int | None = None
    reset: bool = False
    max_events: int | None = None  # stop after this many (None: run until idle or stopped)
    idle_seconds: float | None = None  # stop when nothing arrives for this long
    batch: int = 100

    @property
    def consumer(self) -> str:
        return self.durable or f"integrator_{self.district}"


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def replay(options: Options,
                 on_event: Callable[[dict], Awaitable[None] | None] | None = None) -> int:
    """Consume, hand each CloudEvent to ``on_event`` (default: print it), ack; return the count.
    An event is acked only after ``on_event`` returns, so a crash means it comes again."""
    nc = await nats.connect(
        options.server,
        user=options.user or f"integrator_{options.district}",
        password=options.password,
        inbox_prefix=f"_INBOX_integrator_{options.district}",
        name=f"replay-{options.consumer}",
    )
    js = nc.jetstream()
    count = 0
    try:
        sub = await _bind(js, options)
        while options.max_events is None or count < options.max_events:
            # Never pull more than will be handled: unhandled pulls would wait out ack_wait.
            want = options.batch if options.max_events is None else min(
                options.batch, options.max_events - count)
            try:
                msgs = await sub.fetch(want, timeout=options.idle_seconds or 30)
            except (TimeoutError, NatsTimeoutError):
                if options.idle_seconds is not None:
                    break
                continue
            for index, msg in enumerate(msgs):
                try:
                    event = json.loads(msg.data)
                    result = (on_event or _print)(event)
                    if asyncio.iscoroutine(result):
                        await result
                except BaseException:
                    for unhandled in msgs[index:]:
                        await unhandled.nak()
                    raise
                await msg.ack_sync()
                count += 1
    finally:
        # Acks were confirmed one by one (ack_sync), so closing loses nothing; drain would wait
        # out the pull request still open on the server.
        await nc.close()
    return count


async def _bind(js: nats.js.JetStreamContext, options: Options):  # type: ignore[no-untyped-def]
    name = options.consumer
    if options.reset:
        try:
            await js.delete_consumer(options.stream, name)
            log(f"deleted consumer {name}; starting from the requested position")
        except NotFoundError:
            pass
    try:
        info = await js.consumer_info(options.stream, name)
        if options.from_time or options.from_seq:
            log("the consumer exists, so --from-* is ignored: add --reset to start over")
        log(f"resuming {name}: {info.num_pending} events waiting")
    except NotFoundError:
        policy, extra = DeliverPolicy.ALL, {}
        if options.from_time:
            policy, extra = DeliverPolicy.BY_START_TIME, {"opt_start_time": options.from_time}
        elif options.from_seq:
            policy, extra = DeliverPolicy.BY_START_SEQUENCE, {"opt_start_seq": options.from_seq}
        await js.add_consumer(options.stream, ConsumerConfig(
            name=name, durable_name=name, filter_subject=f"ensemble.{options.district}.>",
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=policy, ack_wait=30,
            max_ack_pending=1000, **extra))
        log(f"created {name} on {options.stream} ({policy.value})")
    return await js.pull_subscribe_bind(durable=name, stream=options.stream)


def _print(event: dict) -> None:
    print(json.dumps(event, separators=(",", ":")), flush=True)


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--district", required=True)
    parser.add_argument("--stream", default="ENSEMBLE_REFERRALS",
                        help="ENSEMBLE_REFERRALS, ENSEMBLE_PARTNERS, ENSEMBLE_ENGAGEMENT or "
                             "ENSEMBLE_NOTIFICATIONS")
    parser.add_argument("--server", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--user", default=os.environ.get("NATS_USER"))
    parser.add_argument("--password", default=os.environ.get("NATS_PASSWORD"))
    parser.add_argument("--durable", help="consumer name (default integrator_<district>)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-time", type=datetime.fromisoformat,
                       help="ISO 8601 with a zone, e.g. 2026-09-01T00:00:00+00:00")
    start.add_argument("--from-seq", type=int, help="a stream sequence number")
    parser.add_argument("--reset", action="store_true",
                        help="delete the consumer first, to start from --from-* again")
    parser.add_argument("--max", dest="max_events", type=int, help="stop after N events")
    parser.add_argument("--idle", dest="idle_seconds", type=float,
                        help="stop when nothing arrives for this many seconds")
    args = parser.parse_args(argv)
    if args.from_time is not None and args.from_time.tzinfo is None:
        parser.error("--from-time needs a time zone, e.g. Z or +00:00")
    return Options(**vars(args))


def main(argv: list[str] | None = None) -> None:
    options = parse(argv)
    try:
        count = asyncio.run(replay(options))
    except KeyboardInterrupt:
        return
    log(f"{count} events")


if __name__ == "__main__":
    main()
