"""Scenario 7: the outbox on PostgreSQL and RabbitMQ (one worker process, alternating blocks; see
``benchmarks/workers/outbox.py``).

Send: a command sent in its own unit of work (a row inserted, the outbox row written, commit, published after the
commit and marked sent) against the same row committed and the command sent directly after it (the dual write the
outbox replaces), and against a direct send without a database. Relay: N committed messages published by the relay
against the same N published directly in batches of the relay's batch size.
"""

from __future__ import annotations

import os

from benchmarks.common import Context, Row, ScenarioResult, Worker, worker_timeout

DATABASE_URL = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def run(ctx: Context) -> ScenarioResult:
    messages = 300 if ctx.quick else 2_000
    result = ScenarioResult(
        "7", f"Outbox on PostgreSQL + RabbitMQ ({messages:,} messages per block and side, 3 alternating blocks)"
    )
    dual = Row("7", "send in a unit of work vs commit, then direct send", "msgs/s", baseline_name="commit + send")
    bare = Row("7", "send in a unit of work vs direct send (no database)", "msgs/s", baseline_name="direct send")
    relay = Row("7", "relay vs direct publish in batches of 100", "msgs/s", baseline_name="bus.batch()")
    for rep in range(ctx.repeat):
        ctx.log(f"  7 repetition {rep + 1}/{ctx.repeat}")
        figures = Worker(
            ctx,
            "outbox",
            ["--amqp-url", ctx.amqp_url, "--database-url", DATABASE_URL, "--messages", messages, "--blocks", 3],
        ).wait(worker_timeout(15 * messages))
        for row, side, baseline in ((dual, "outbox", "commit_then_send"), (bare, "outbox", "direct")):
            row.framework += figures[side]
            row.baseline += figures[baseline]
        relay.framework += figures["relay"]
        relay.baseline += figures["batch"]
        result.raw.append({"repetition": rep + 1, **figures})
    result.rows += [dual, bare, relay]
    result.notes.append(
        "the outbox's send costs one more insert and, after the commit, one short transaction (one statement claims "
        "the row and marks it sent, the publish, a commit that does not wait for the disk); the relay publishes in "
        "batches of outbox.relay_batch_size (100) per transaction"
    )
    return result
