"""The benchmark suite: every loopwise number next to its baseline measured in the same
run, on loopback, with closed-loop clients in their own processes.

``python -m bench [--quick] [--out docs/benchmarks.md]``. Everything this starts
(services, echo server, MLServer, clients) is stopped by its own pid at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from bench import mlserver as mls
from bench.blueprints import FEATURE_NAMES, blueprint, decide_request
from bench.models import fit_models
from loopwise.decision.v1 import decision_service_pb2 as dpb
from loopwise.decision.v1 import decision_service_pb2_grpc as dgrpc
from loopwise.launcher import Launcher, free_port
from loopwise.tensors import F32, pack
from loopwise.trainer.v1 import trainer_service_pb2 as tpb
from loopwise.trainer.v1 import trainer_service_pb2_grpc as tgrpc

ROOT = Path(__file__).resolve().parents[1]
DECIDE = "/loopwise.decision.v1.DecisionService/Decide"
DECIDE_BATCH = "/loopwise.decision.v1.DecisionService/DecideBatch"
BATCH_ROWS = 1024


@dataclass
class Sizes:
    """How long and how much: the full suite or the quick smoke run."""

    levels: list[int]
    batch_levels: list[int]
    rounds: int
    duration_s: float
    warmup_s: float
    use_cases: int
    channels: int = 4
    mlserver: bool = True
    max_load_wait_s: float = 240.0  # keeps make bench under 10 minutes (the run itself takes ~5.5)


FULL = Sizes(levels=[1, 8, 32], batch_levels=[1, 4], rounds=3, duration_s=3.0, warmup_s=0.5, use_cases=100)
QUICK = Sizes(levels=[1, 4], batch_levels=[1], rounds=1, duration_s=0.4, warmup_s=0.1, use_cases=3,
              channels=2, mlserver=False, max_load_wait_s=0.0)


def say(msg: str) -> None:
    """Progress on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of processes (and their reaped children not counted), seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            continue
    return total / ticks


def rss_mib(pid: int) -> float:
    """Resident memory of a process in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> float:
    """The 1-minute load average."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


@dataclass
class Result:
    """Medians over rounds of one target at one concurrency."""

    runs: list[dict] = field(default_factory=list)

    def med(self, key: str) -> float:
        """The median of a key over rounds."""
        return statistics.median(r[key] for r in self.runs) if self.runs else float("nan")

    @property
    def errors(self) -> int:
        """Errors over rounds."""
        return sum(r["errors"] for r in self.runs)


class Bench:
    """One run of the suite."""

    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.payload_dir = workdir / "payloads"
        self.payload_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.started: list[subprocess.Popen] = []
        self.launcher: Launcher | None = None
        self.ml: mls.MLServer | None = None

    # -- processes ------------------------------------------------------------------
    def payload(self, name: str, data: bytes) -> str:
        """Write a request payload for the clients."""
        path = self.payload_dir / name
        path.write_bytes(data)
        return str(path)

    def load(self, target: str, method: str, payload_file: str, concurrency: int,
             channels: int | None = None, cpu_pids: list[int] | None = None) -> dict:
        """One closed-loop client process run; CPU of ``cpu_pids`` over it if asked."""
        spec = {"target": target, "method": method, "payload_file": payload_file, "concurrency": concurrency,
                "channels": max(1, min(concurrency, channels or self.sizes.channels)),
                "warmup_s": self.sizes.warmup_s, "duration_s": self.sizes.duration_s}
        before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
        out = subprocess.run([sys.executable, "-m", "bench.load", json.dumps(spec)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        if out.returncode:
            raise RuntimeError(f"load client failed: {out.stderr[-2000:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        if cpu_pids:
            time.sleep(0.6)  # the decision log ships its last batch
            result["cpu_s"] = cpu_seconds(cpu_pids) - before
        return result

    def start_echo(self, replies: dict[str, int]) -> str:
        """The echo server process; returns its address."""
        port = free_port()
        args = [sys.executable, "-m", "bench.echo", "--port", str(port)]
        for name, size in replies.items():
            args += ["--reply", f"{name}={size}"]
        log = open(self.workdir / "echo.log", "ab")
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.started.append(proc)
        target = f"127.0.0.1:{port}"
        with grpc.insecure_channel(target) as ch:
            grpc.channel_ready_future(ch).result(timeout=30)
        return target

    def stop_all(self) -> None:
        """Stop everything this run started, by pid."""
        if self.ml is not None:
            self.ml.stop()
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.launcher is not None:
            self.launcher.stop_all()

    # -- the loopwise stack -----------------------------------------------------------
    def start_stack(self) -> Launcher:
        """feedback, trainer and decision (one worker, logging off) on free ports."""
        ports = {s: free_port() for s in ("decision", "feedback", "trainer", "evaluator")}
        env = {"LOOPWISE_LOG_LEVEL": "WARNING", "LOOPWISE_DECISION_LOG_ENABLED": "false",
               "LOOPWISE_DECISION_WORKERS": "1", "LOOPWISE_CLOCK_ANCHOR": repr(time.time()),
               "LOOPWISE_SEED": "7", "LOOPWISE_ALLOW_PLAINTEXT": "true"}
        self.launcher = Launcher(self.workdir / "stack", env=env, ports=ports)
        self.launcher.start_all(["feedback", "trainer", "decision"])
        return self.launcher

    async def serve_model(self, models: dict[str, object], use_case: str, model: str) -> tuple[int, str]:
        """Start the stack and deploy ``model`` (a key of ``models``) for ``use_case``;
        the decision process's pid and address."""
        launcher = self.start_stack()
        await self.deploy(models, {use_case: model})
        pid = launcher.pid("decision")
        assert pid is not None
        return pid, launcher.address("decision")

    def restart_decision(self, **env: str) -> int:
        """Restart the decision service with other settings; returns its pid."""
        assert self.launcher is not None
        self.launcher.stop("decision")
        self.launcher.env.update(env)
        return self.launcher.start("decision")

    async def deploy(self, models: dict[str, object], use_cases: dict[str, str]) -> None:
        """Apply use cases and deploy their models (name → model key)."""
        assert self.launcher is not None
        async with grpc.aio.insecure_channel(self.launcher.address("decision")) as dch, \
                grpc.aio.insecure_channel(self.launcher.address("trainer")) as tch:
            decision, trainer = dgrpc.DecisionServiceStub(dch), tgrpc.TrainerServiceStub(tch)
            sem = asyncio.Semaphore(8)

            async def one(name: str, key: str) -> None:
                async with sem:
                    await decision.ApplyUseCase(dpb.ApplyUseCaseRequest(blueprint=blueprint(name)), timeout=30)
                    model = models[key]
                    import hashlib

                    reply = await trainer.RegisterModel(tpb.RegisterModelRequest(
                        model=tpb.Model(use_case=name, family=model.family, blueprint_version=1, input_width=20,
                                        score_output="probabilities", source="bench"),
                        onnx=model.onnx, sha256=hashlib.sha256(model.onnx).hexdigest()), timeout=60)
                    await trainer.SetDeployment(tpb.SetDeploymentRequest(
                        use_case=name, production_version=reply.model.version, reason="bench"), timeout=30)

            await asyncio.gather(*[one(n, k) for n, k in use_cases.items()])
        await self.wait_models(list(use_cases))

    async def wait_models(self, names: list[str], timeout: float = 180.0) -> None:
        """Wait until every use case decides with a model."""
        assert self.launcher is not None
        deadline = time.monotonic() + timeout
        pending = list(names)
        async with grpc.aio.insecure_channel(self.launcher.address("decision")) as ch:
            stub = dgrpc.DecisionServiceStub(ch)
            while pending:
                name = pending[0]
                try:
                    reply = await stub.Decide(decide_request(name), timeout=5)
                    if reply.decision.model_version > 0:
                        pending.pop(0)
                        continue
                except grpc.aio.AioRpcError as e:
                    if e.code() != grpc.StatusCode.NOT_FOUND:
                        raise
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no model served for {name} after {timeout}s")
                await asyncio.sleep(0.2)

    # -- rows -----------------------------------------------------------------------------
    def row(self, section: str, what: str, conc: int | str, ours: str, base: str, ratio: float | None,
            target: str, met: bool | None, note: str = "") -> None:
        """One table row."""
        self.rows.append(dict(section=section, what=what, conc=conc, ours=ours, base=base,
                              ratio="" if ratio is None else f"{ratio:.2f}", target=target,
                              met="—" if met is None else ("met" if met else "NOT met"), note=note))

    def compare(self, targets: dict[str, tuple[str, str]], levels: list[int], decision_pids,
                cpu_extra: list[int] | None = None, channels: int | None = None) -> dict:
        """Rounds of every target at every level, alternating: {(name, level): Result}."""
        results: dict[tuple[str, int], Result] = {}
        for level in levels:
            for _ in range(self.sizes.rounds):
                for name, (target, payload) in targets.items():
                    method, file = payload.split("|", 1)
                    pids = (decision_pids() + (cpu_extra or [])) if name.startswith("decide") else None
                    r = self.load(target, method, file, level, channels, cpu_pids=pids)
                    results.setdefault((name, level), Result()).runs.append(r)
                    say(f"  {name:>14} c={level:<3} {r['req_per_s']:9.0f} req/s  p50 {r['p50_ms']:.3f} ms  "
                        f"p99 {r['p99_ms']:.3f} ms  errors {r['errors']}")
        return results


def fmt_rate(res: Result, rows: int = 1) -> str:
    """req/s (or rows/s) with p50/p99."""
    return f"{res.med('req_per_s') * rows:,.0f}/s · p50 {res.med('p50_ms'):.2f} · p99 {res.med('p99_ms'):.2f} ms"


def raw_onnxruntime(onnx: bytes, rows: np.ndarray, seconds: float) -> float:
    """Rows/s of a raw onnxruntime session on the model (one thread, like the service)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
    feed = {"features": rows}
    for _ in range(5):
        sess.run(["probabilities"], feed)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sess.run(["probabilities"], feed)
        n += 1
    return n * rows.shape[0] / (time.perf_counter() - start)


async def run_suite(sizes: Sizes, out: Path | None, command: str) -> str:
    """Run everything; returns the markdown report."""
    workdir = ROOT / "bench" / "var" / time.strftime("run-%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    bench = Bench(sizes, workdir)
    loads_seen: list[float] = []
    waited = 0.0
    start_wait = time.monotonic()
    while load_average() >= 1.0 and time.monotonic() - start_wait < sizes.max_load_wait_s:
        if not waited:
            say(f"load average {load_average():.2f} >= 1.0: waiting (up to {sizes.max_load_wait_s:.0f} s)")
        time.sleep(10)
        waited = time.monotonic() - start_wait
    loads_seen.append(load_average())
    say(f"load average at start {loads_seen[0]:.2f} (waited {waited:.0f} s)")
    try:
        return await _suite(bench, sizes, workdir, out, command, loads_seen, waited)
    finally:
        bench.stop_all()


async def _suite(bench: Bench, sizes: Sizes, workdir: Path, out: Path | None, command: str,
                 loads_seen: list[float], waited: float) -> str:
    say("fitting models")
    models = fit_models(workdir / "models")
    launcher = bench.start_stack()
    say("stack up; deploying bench_lr (logistic) and bench_hgb (HistGradientBoosting, 100 trees)")
    await bench.deploy(models, {"bench_lr": "lr", "bench_hgb": "hgb"})

    # Payloads and the real reply sizes.
    decide_req = decide_request("bench_lr")
    rng = np.random.default_rng(11)
    batch_rows = rng.normal(size=(BATCH_ROWS, len(FEATURE_NAMES))).astype(np.float32)
    batch_req = dpb.DecideBatchRequest(use_case="bench_hgb", blueprint_version=1, feature_names=FEATURE_NAMES,
                                       rows=BATCH_ROWS, features=pack(batch_rows, F32))
    with grpc.insecure_channel(launcher.address("decision"),
                               options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        stub = dgrpc.DecisionServiceStub(ch)
        decide_reply = stub.Decide(decide_req, timeout=10)
        batch_reply = stub.DecideBatch(batch_req, timeout=30)
    sizes_b = {"Small": decide_reply.ByteSize(), "Batch": batch_reply.ByteSize()}
    decide_file = bench.payload("decide.bin", decide_req.SerializeToString())
    batch_file = bench.payload("batch.bin", batch_req.SerializeToString())
    echo = bench.start_echo(sizes_b)
    dec = launcher.address("decision")
    bench.notes.append(f"Decide request {decide_req.ByteSize()} B / reply {sizes_b['Small']} B; DecideBatch "
                       f"request {batch_req.ByteSize():,} B / reply {sizes_b['Batch']:,} B; the echo server gets "
                       "the same request bytes and answers with as many bytes.")

    # MLServer (own venv), same LR model, OIP gRPC.
    ml_targets: dict[str, tuple[str, str]] = {}
    ml_status = "skipped (--quick)"
    if sizes.mlserver:
        try:
            python = mls.ensure_venv(say)
            ml_status = mls.versions(python)
            ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
            mls.write_repository(workdir / "mlserver", "lr", models["lr"].joblib_path, ports)
            row = [fv.number for fv in (decide_req.features[f] for f in FEATURE_NAMES)]
            payloads = {m: mls.request_bytes(python, m, row) for m in ("lr", "lr_batched")}
            bench.ml = mls.MLServer(python, workdir / "mlserver", workdir / "mlserver.log")
            bench.ml.start()
            target = f"127.0.0.1:{ports['grpc']}"
            bench.ml.wait_ready(target, list(payloads.values()))
            ml_targets = {
                "mlserver": (target, f"{mls.METHOD}|{bench.payload('ml.bin', payloads['lr'])}"),
                "mlserver_batch": (target, f"{mls.METHOD}|{bench.payload('mlb.bin', payloads['lr_batched'])}"),
            }
            say(f"MLServer ready ({ml_status})")
        except (mls.MLServerUnavailable, subprocess.CalledProcessError) as e:
            ml_status = f"BLOCKED: {e}"
            say(ml_status)

    def dec_pids() -> list[int]:
        pid = launcher.pid("decision")
        return [pid] if pid else []

    # 1. Decide vs echo (logging off), and MLServer, interleaved.
    say("Decide (logging off) vs echo vs MLServer")
    targets = {"echo": (echo, f"/bench.Echo/Small|{decide_file}"), "decide": (dec, f"{DECIDE}|{decide_file}"),
               **ml_targets}
    res = bench.compare(targets, sizes.levels, dec_pids)
    for level in sizes.levels:
        d, e = res[("decide", level)], res[("echo", level)]
        ratio = d.med("req_per_s") / e.med("req_per_s")
        bench.row("Decide, logging off", "req/s vs echo", level, fmt_rate(d), fmt_rate(e), ratio, "≥ 0.85×",
                  ratio >= 0.85, f"errors {d.errors}")
        p99 = d.med("p99_ms") / e.med("p99_ms")
        bench.row("Decide, logging off", "p99 vs echo p99", level, f"{d.med('p99_ms'):.3f} ms",
                  f"{e.med('p99_ms'):.3f} ms", p99, "≤ 1.25×", p99 <= 1.25)
        if level == 1:
            diff = d.med("p50_ms") - e.med("p50_ms")
            bench.row("Decide, logging off", "one in flight: p50 − echo p50", 1, f"{d.med('p50_ms'):.3f} ms",
                      f"{e.med('p50_ms'):.3f} ms", None, "≤ +0.100 ms", diff <= 0.1, f"difference {diff:+.3f} ms")
    cpu_off = [r for lvl in sizes.levels for r in res[("decide", lvl)].runs]
    cpu_per_decision_off = sum(r["cpu_s"] for r in cpu_off) / max(1, sum(r["total"] for r in cpu_off))
    for name, label in (("mlserver", "adaptive batching off"), ("mlserver_batch", "adaptive batching on")):
        if not ml_targets:
            break
        for level in sizes.levels:
            d, m = res[("decide", level)], res[(name, level)]
            ratio = d.med("req_per_s") / m.med("req_per_s")
            lower = d.med("p99_ms") < m.med("p99_ms")
            bench.row(f"Decide vs MLServer ({label})", "req/s; p99", level, fmt_rate(d), fmt_rate(m), ratio,
                      "≥ 3× and lower p99", ratio >= 3 and lower,
                      f"p99 {'lower' if lower else 'NOT lower'}; MLServer errors {m.errors}")

    # 2. DecideBatch 1,024 rows (HGB) vs raw onnxruntime and echo of the same bytes.
    say("DecideBatch 1,024 rows vs echo; raw onnxruntime")
    targets = {"echo_batch": (echo, f"/bench.Echo/Batch|{batch_file}"),
               "decide_batch": (dec, f"{DECIDE_BATCH}|{batch_file}")}
    bres = bench.compare(targets, sizes.batch_levels, dec_pids, channels=1)
    raw = statistics.median(raw_onnxruntime(models["hgb"].onnx, batch_rows, sizes.duration_s)
                            for _ in range(sizes.rounds))
    for level in sizes.batch_levels:
        d, e = bres[("decide_batch", level)], bres[("echo_batch", level)]
        rows_s = d.med("req_per_s") * BATCH_ROWS
        ratio = rows_s / raw
        bench.row("DecideBatch 1,024 rows (HGB)", "rows/s vs raw onnxruntime", level, fmt_rate(d, BATCH_ROWS),
                  f"{raw:,.0f} rows/s (1 thread, in-process)", ratio,
                  "reported (the target is judged in the DecideBatch section: same core, interleaved)", None)
        er = d.med("req_per_s") / e.med("req_per_s")
        bench.row("DecideBatch 1,024 rows (HGB)", "batches/s vs echo of the same bytes", level, fmt_rate(d),
                  fmt_rate(e), er, "reported", None)

    # 3. Decide with logging on to the running feedback service.
    say("Decide with logging on (feedback running) vs echo")
    bench.restart_decision(LOOPWISE_DECISION_LOG_ENABLED="true")
    await bench.wait_models(["bench_lr"])
    fb = launcher.pid("feedback")
    on_levels = [lvl for lvl in sizes.levels if lvl > 1] or sizes.levels
    targets = {"echo": (echo, f"/bench.Echo/Small|{decide_file}"), "decide_log": (dec, f"{DECIDE}|{decide_file}")}
    lres = bench.compare(targets, on_levels, dec_pids, cpu_extra=[fb] if fb else [])
    for level in on_levels:
        d, e = lres[("decide_log", level)], lres[("echo", level)]
        ratio = d.med("req_per_s") / e.med("req_per_s")
        bench.row("Decide, logging on (feedback running)", "req/s vs echo", level, fmt_rate(d), fmt_rate(e), ratio,
                  "≥ 0.7×", ratio >= 0.7, f"errors {d.errors}")
    cpu_on = [r for lvl in on_levels for r in lres[("decide_log", lvl)].runs]
    cpu_per_decision_on = sum(r["cpu_s"] for r in cpu_on) / max(1, sum(r["total"] for r in cpu_on))
    bench.row("CPU time per decision", "decision service, logging off", "all", f"{cpu_per_decision_off * 1e6:.0f} µs",
              "", None, "reported", None)
    bench.row("CPU time per decision", "decision + feedback, logging on", "all",
              f"{cpu_per_decision_on * 1e6:.0f} µs", "", None, "reported", None)

    # 4. Two workers (SO_REUSEPORT) for scale, informational.
    say("two decision workers")
    bench.restart_decision(LOOPWISE_DECISION_LOG_ENABLED="false", LOOPWISE_DECISION_WORKERS="2")
    await bench.wait_models(["bench_lr"])
    top = max(sizes.levels)
    mres = bench.compare({"decide_2w": (dec, f"{DECIDE}|{decide_file}")}, [top], lambda: [])
    one = res[("decide", top)]
    two = mres[("decide_2w", top)]
    bench.row("Decide, 2 workers (SO_REUSEPORT), logging off", "req/s vs 1 worker", top, fmt_rate(two),
              fmt_rate(one), two.med("req_per_s") / one.med("req_per_s"), "reported", None,
              f"{sizes.channels} channels; the client shares the 2 cores")

    # 5. Memory of one worker with N use cases loaded (each with its model).
    say(f"resident memory with {sizes.use_cases} use cases")
    pid = bench.restart_decision(LOOPWISE_DECISION_WORKERS="1")
    await bench.wait_models(["bench_lr", "bench_hgb"])
    rss_two = rss_mib(pid)
    extra = {f"bench_uc_{i:03d}": "lr" for i in range(sizes.use_cases - 2)}
    await bench.deploy(models, extra)
    rss_all = rss_mib(pid)
    bench.row("Resident memory, one decision worker", f"{sizes.use_cases} use cases loaded, each with a model",
              "—", f"{rss_all:.0f} MiB", f"{rss_two:.0f} MiB with 2 use cases", None, "reported", None,
              "98 logistic + the two bench models" if sizes.use_cases == 100 else "")
    loads_seen.append(load_average())
    return report(bench, sizes, command, loads_seen, waited, ml_status, out)


def report(bench: Bench, sizes: Sizes, command: str, loads: list[float], waited: float, ml_status: str,
           out: Path | None) -> str:
    """The markdown report (printed, and written to ``out``)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import grpc as grpc_mod
    import onnxruntime
    import sklearn

    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (bench/run.py); every baseline is measured in the same run, interleaved "
        "round by round with the loopwise number it is compared to. Absolute numbers on this shared machine are "
        "noise; the ratios are the result.",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores ({cpu}), shared with other work; Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- load average (1 min) at start {loads[0]:.2f} (waited {waited:.0f} s for < 1.0), at the end "
        f"{loads[-1]:.2f}",
        f"- grpcio {grpc_mod.__version__}, onnxruntime {onnxruntime.__version__}, scikit-learn {sklearn.__version__}",
        f"- MLServer: {ml_status}",
        f"- setup (docs/architecture.md §10): 20 numeric features; logistic regression (Decide) and HistGradientBoosting "
        f"100 trees (DecideBatch), exported with skl2onnx (zipmap off, float32); loopback, no TLS/auth/tracing; "
        f"closed-loop grpc.aio clients in their own process, {sizes.channels} client channels (each its own "
        f"connection; fewer when concurrency is lower), one request in flight per client task; "
        f"{sizes.rounds} rounds × {sizes.duration_s:.1f} s per cell after {sizes.warmup_s:.1f} s warm-up; "
        "medians over rounds; decision service with one worker unless the row says otherwise",
        "- echo baseline: the same ServiceHost (grpc.aio server, same options, health and reflection) in one "
        "process with a raw-bytes handler answering with the decision service's reply size",
        "- CPU per decision: utime+stime deltas from /proc/<pid>/stat over the client runs (warm-up included) "
        "divided by the decisions served in them",
        "",
        "| section | measure | concurrency | loopwise | baseline | ratio | target | result | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in bench.rows:
        lines.append(f"| {r['section']} | {r['what']} | {r['conc']} | {r['ours']} | {r['base']} | {r['ratio']} | "
                     f"{r['target']} | {r['met']} | {r['note']} |")
    lines += ["", *[f"- {n}" for n in bench.notes], ""]
    text = "\n".join(lines)
    if out is not None:
        existing = out.read_text() if out.exists() else ""
        marker = "\n## Analysis"
        tail = existing[existing.index(marker):] if marker in existing else ""
        out.write_text(text + tail)
    return text


FLOOR_HEADING = "## Unary Decide against the floor (bench/floor.py)"
# The sections `make bench` adds after the suite's table: (heading, module, arguments).
SECTIONS = (
    (FLOOR_HEADING, "bench.floor", ()),
    ("## DecideStream against unary Decide (bench/stream.py)", "bench.stream", ()),
    ("## DecideBatch against raw onnxruntime (bench/batch.py)", "bench.batch", ()),
    ("## LogOutcomes on SQLite against raw executemany (bench/sqlite_ingest.py)", "bench.sqlite_ingest", ()),
    ("## LogOutcomes on Cassandra against raw execute_concurrent (bench/feedback_ingest.py)",
     "bench.feedback_ingest", ("--ingest-rows", "50000", "--read-rows", "0")),
)


def with_sections(text: str, out: Path | None) -> str:
    """Run each of :data:`SECTIONS` (each starts its own servers) and put its markdown
    after the suite's table (and before the analysis in ``out``), replacing what an
    earlier run wrote there."""
    for heading, module, arguments in SECTIONS:
        say(f"{module}: {heading[3:]}")
        name = module.split(".")[-1]
        section_file = ROOT / "bench" / "var" / f"{name}.md"
        section_file.unlink(missing_ok=True)
        done = subprocess.run([sys.executable, "-m", module, *arguments, "--out", str(section_file)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, timeout=1800)
        section = section_file.read_text() if done.returncode == 0 and section_file.exists() \
            else f"{module} failed (exit {done.returncode})\n"
        command = f"Command: `.venv/bin/python -m {' '.join([module, *arguments])}` (part of `make bench`).\n\n"
        block = f"\n{heading}\n\n{command}{section}"
        if out is not None and out.exists():
            existing = out.read_text()
            marker = "\n## Analysis"
            head, tail = (existing.split(marker, 1) + [""])[:2] if marker in existing else (existing, None)
            if heading in head:
                start = head.index("\n" + heading)
                following = head.find("\n## ", start + 1)
                head = head[:start] + (head[following:] if following >= 0 else "")
            out.write_text(head.rstrip("\n") + "\n" + block + (marker + tail if tail is not None else ""))
        text += block
    return text


def main(argv: list[str] | None = None) -> None:
    """Command line entry."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no MLServer (smoke test)")
    parser.add_argument("--out", type=Path, default=None, help="write the markdown report here")
    parser.add_argument("--keep", action="store_true", help="keep bench/var/run-* afterwards")
    parser.add_argument("--max-load-wait", type=float, default=None,
                        help="seconds to wait for a 1-minute load average < 1.0 (default 240; 0 with --quick)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.max_load_wait is not None:
        sizes.max_load_wait_s = args.max_load_wait
    given = list(argv if argv is not None else sys.argv[1:])
    from_make = os.environ.get("LOOPWISE_BENCH_FROM_MAKE") and given == ["--out", "docs/benchmarks.md"]
    command = "make bench" if from_make else " ".join([".venv/bin/python -m bench", *given])
    text = asyncio.run(run_suite(sizes, args.out, command))
    if not args.quick:
        text = with_sections(text, args.out)
    print(text)
    if not args.keep:
        # Older runs only: another run in progress (its directory is recent) keeps its files.
        for run in sorted((ROOT / "bench" / "var").glob("run-*"))[:-1]:
            if time.time() - run.stat().st_mtime > 3 * 3600:
                shutil.rmtree(run, ignore_errors=True)
