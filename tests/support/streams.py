"""Reading what is on the JetStream streams, as an integrator or an auditor would."""

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

PUBLIC_STREAMS = ("ENSEMBLE_REFERRALS", "ENSEMBLE_PARTNERS", "ENSEMBLE_ENGAGEMENT",
                  "ENSEMBLE_NOTIFICATIONS")


async def read_stream(js: JetStreamContext, stream: str) -> list[Msg]:
    """Every message in a stream, through an ephemeral pull consumer (no ack, deleted after)."""
    expected = (await js.stream_info(stream)).state.messages
    info = await js.add_consumer(stream, ConsumerConfig(
        ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=30.0,
        mem_storage=True))
    sub = await js.pull_subscribe_bind(consumer=info.name, stream=stream)
    messages: list[Msg] = []
    try:
        while len(messages) < expected:
            try:
                messages += await sub.fetch(min(expected - len(messages), 256), timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                break
    finally:
        await sub.unsubscribe()
        await js.delete_consumer(stream, info.name)
    assert len(messages) == expected, f"{stream}: read {len(messages)} of {expected}"
    return messages


async def stream_messages(url: str) -> list[bytes]:
    """Every message on every stream, headers and data."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        out = []
        for info in await js.streams_info():
            if not info.state.messages:
                continue
            for seq in range(max(info.state.first_seq, 1), info.state.last_seq + 1):
                try:
                    msg = await js.get_msg(info.config.name, seq)
                except NotFoundError:
                    continue
                out.append((msg.data or b"") + repr(msg.headers).encode())
        return out
    finally:
        await nc.close()
