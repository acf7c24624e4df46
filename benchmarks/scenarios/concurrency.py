"""Scenario 8: concurrency (issue 8). Publishing from 16 threads and in ``batch(100)``, both with confirms, against
raw kombu's single-thread publish without confirms and against raw kombu publishing 16 or 100 per confirm wait; the
consumer against raw kombu's (confirms off); a 10 ms I/O-bound handler at concurrency 16 against 1 (plain and
coroutine); 2 processes against 1 on a CPU-bound handler.
Every figure of a repetition comes from one worker process, the framework's and the baseline's side by side."""

from __future__ import annotations

from benchmarks.common import Context, Row, ScenarioResult, Worker


def run(ctx: Context) -> ScenarioResult:
    count, io_count, cpu_count = (1_000, 50, 300) if ctx.quick else (4_000, 200, 2_000)
    result = ScenarioResult(
        "8", f"Concurrency: {count:,} sends/consumes, {io_count} I/O-bound, {cpu_count:,} CPU-bound"
    )
    rows = {
        "threads": Row(
            "8", "16 sender threads, confirms on, vs kombu 1 thread no confirms", "msgs/s", target=("ratio", 1.0)
        ),
        "batch": Row("8", "batch(100), confirms on, vs kombu 1 thread no confirms", "msgs/s", target=("ratio", 1.0)),
        "threads_ceiling": Row(
            "8",
            "16 sender threads, confirms on, vs kombu 1 thread 16 per confirm wait",
            "msgs/s",
            baseline_name="kombu, 16 per wait",
        ),
        "batch_ceiling": Row(
            "8",
            "batch(100), confirms on, vs kombu 1 thread 100 per confirm wait",
            "msgs/s",
            baseline_name="kombu, 100 per wait",
            target=("ratio", 1.0),
        ),
        "consume": Row("8", "consumer, confirms off, like for like", "msgs/s", target=("ratio", 1.1)),
        "sleep": Row(
            "8",
            "10 ms I/O handler: concurrency 16 vs 1",
            "msgs/s",
            baseline_name="concurrency 1",
            target=("ratio", 10.0),
        ),
        "sleep_async": Row(
            "8",
            "10 ms coroutine handler: concurrency 16 vs 1",
            "msgs/s",
            baseline_name="concurrency 1",
            target=("ratio", 10.0),
        ),
        "cpu": Row(
            "8", "CPU-bound handler: --processes 2 vs 1 (wall, start-up incl.)", "msgs/s", baseline_name="1 process"
        ),
    }
    for rep in range(ctx.repeat):
        ctx.log(f"  8 repetition {rep + 1}/{ctx.repeat}")
        service = ctx.unique("conc")
        figures = Worker(
            ctx,
            "concurrency",
            [
                "--url",
                ctx.amqp_url,
                "--service",
                service,
                "--exchange",
                f"bench.{service}",
                "--count",
                count,
                "--io-count",
                io_count,
                "--cpu-count",
                cpu_count,
            ],
        ).wait(900)
        for key, framework, baseline in (
            ("threads", "threads16_confirms", "raw_publish"),
            ("batch", "batch100_confirms", "raw_publish"),
            ("threads_ceiling", "threads16_confirms", "raw_confirmed16"),
            ("batch_ceiling", "batch100_confirms", "raw_confirmed100"),
            ("consume", "fw_consume", "raw_consume"),
            ("sleep", "sleep_c16", "sleep_c1"),
            ("sleep_async", "sleep_async_c16", "sleep_async_c1"),
            ("cpu", "cpu_p2", "cpu_p1"),
        ):
            rows[key].framework.append(figures[framework])
            rows[key].baseline.append(figures[baseline])
        result.raw.append({"repetition": rep + 1, **figures})
    result.rows += rows.values()
    result.notes.append(
        "[8] publishing with confirms is bounded by the broker: it confirms a persistent message once it has routed "
        "and stored it, so 16 senders that each wait for their own confirm, or a batch that waits for its 100, "
        "cannot outrun the broker's confirm rate, whatever the client. The 'per confirm wait' rows measure that "
        "bound with raw kombu in the same run (same exchange, persistent, mandatory); the rows against kombu without "
        "confirms compare with a publisher that waits for nothing. The 16-thread row against one thread publishing "
        "16 per wait has no target: the threads also pay a wake-up each per message, which one thread does not."
    )
    result.notes.append(
        "[8] the 2-process row runs on a 2-core machine shared with the broker and the other helpers' work: each "
        "process also pays its own start-up (about 1 s) inside the measured wall time."
    )
    return result
