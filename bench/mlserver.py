"""MLServer (latest 1.x, scikit-learn runtime) in its own venv, serving the benchmark
model through the Open Inference Protocol gRPC API.

The venv lives in ``bench/.venv-mlserver`` (gitignored), created with pip and the same
scikit-learn version as loopwise's. One MLServer process (default parallel workers)
serves the model twice: ``<name>`` with adaptive batching off and ``<name>_batched``
with it on.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
VENV = BENCH_DIR / ".venv-mlserver"
METHOD = "/inference.GRPCInferenceService/ModelInfer"
# Adaptive batching "on": MLServer's documented knobs.
MAX_BATCH_SIZE = 32
MAX_BATCH_TIME_S = 0.002


class MLServerUnavailable(RuntimeError):
    """MLServer cannot be installed or started here; the message says exactly why."""


def sklearn_version() -> str:
    """Our scikit-learn version."""
    import sklearn

    return sklearn.__version__


def ensure_venv(log) -> Path:
    """Create the venv and install MLServer 1.x + mlserver-sklearn with our scikit-learn."""
    python = VENV / "bin" / "python"
    want = sklearn_version()
    if python.exists():
        probe = subprocess.run([str(python), "-c", "import mlserver, mlserver_sklearn, sklearn, uvloop;"
                                "print(mlserver.__version__, sklearn.__version__, uvloop.__version__)"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            _, have, uv = probe.stdout.split()
            if have == want and tuple(int(x) for x in uv.split(".")[:2]) < (0, 22):
                return python
    log(f"creating {VENV} (mlserver 1.x, mlserver-sklearn, scikit-learn=={want})")
    if not python.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(VENV)], capture_output=True, text=True)
        if made.returncode:
            raise MLServerUnavailable(f"python -m venv failed: {made.stderr.strip()[-800:]}")
    # uvloop 0.22+ makes asyncio.get_event_loop() raise in MLServer 1.7.1's inference-pool
    # workers ("There is no current event loop"), so every model fails to load: keep it older.
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "mlserver>=1,<2", "mlserver-sklearn>=1,<2",
                          f"scikit-learn=={want}", "uvloop<0.22"], capture_output=True, text=True)
    if pip.returncode:
        raise MLServerUnavailable(f"pip could not install mlserver 1.x with scikit-learn=={want}: "
                                  f"{(pip.stderr or pip.stdout).strip()[-1500:]}")
    return python


def versions(python: Path) -> str:
    """``mlserver X, mlserver-sklearn Y, scikit-learn Z``."""
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(', '.join(p + ' ' + "
                          "m.version(p) for p in ('mlserver', 'mlserver-sklearn', 'scikit-learn', 'grpcio', 'uvloop')))"],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def write_repository(root: Path, name: str, joblib_path: Path, ports: dict[str, int]) -> None:
    """settings.json and one model directory per batching mode."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": ports["http"], "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"], "debug": False,
    }))
    for model, batching in ((name, False), (f"{name}_batched", True)):
        d = root / model
        d.mkdir(exist_ok=True)
        target = d / "model.joblib"
        target.unlink(missing_ok=True)
        os.link(joblib_path, target) if joblib_path.stat().st_dev == d.stat().st_dev else target.write_bytes(
            joblib_path.read_bytes())
        cfg = {"name": model, "implementation": "mlserver_sklearn.SKLearnModel",
               "parameters": {"uri": "./model.joblib"}}
        if batching:
            cfg.update(max_batch_size=MAX_BATCH_SIZE, max_batch_time=MAX_BATCH_TIME_S)
        (d / "model-settings.json").write_text(json.dumps(cfg))


def request_bytes(python: Path, model: str, row: list[float]) -> bytes:
    """A serialized ModelInferRequest for one FP32 row asking for ``predict_proba``."""
    code = (
        "import sys, json; from mlserver.grpc import dataplane_pb2 as d\n"
        "row = json.loads(sys.argv[2])\n"
        "r = d.ModelInferRequest(model_name=sys.argv[1], inputs=[d.ModelInferRequest.InferInputTensor("
        "name='input-0', datatype='FP32', shape=[1, len(row)], contents=d.InferTensorContents(fp32_contents=row))],"
        " outputs=[d.ModelInferRequest.InferRequestedOutputTensor(name='predict_proba')])\n"
        "sys.stdout.buffer.write(r.SerializeToString())\n"
    )
    out = subprocess.run([str(python), "-c", code, model, json.dumps(row)], capture_output=True, check=True)
    return out.stdout


class MLServer:
    """A running ``mlserver start`` (its own process group, stopped by its pid)."""

    def __init__(self, python: Path, root: Path, log_path: Path) -> None:
        self.python = python
        self.root = root
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> int:
        """Start it; returns its pid."""
        log = open(self.log_path, "ab")  # owned by the child
        self.proc = subprocess.Popen([str(self.python.parent / "mlserver"), "start", str(self.root)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=str(self.root))
        log.close()
        return self.proc.pid

    def wait_ready(self, grpc_target: str, payloads: list[bytes], timeout: float = 180.0) -> None:
        """Wait until every payload gets an OK answer."""
        import grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(grpc_target) as channel:
            call = channel.unary_unary(METHOD)
            pending = list(payloads)
            while pending:
                if self.proc is not None and self.proc.poll() is not None:
                    raise MLServerUnavailable(f"mlserver exited with {self.proc.returncode}: "
                                              f"{self.log_path.read_text(errors='replace')[-1500:]}")
                try:
                    call(pending[0], timeout=5)
                    pending.pop(0)
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise MLServerUnavailable(f"mlserver not ready after {timeout}s: "
                                                  f"{self.log_path.read_text(errors='replace')[-1500:]}") from None
                    time.sleep(0.5)

    def pids(self) -> list[int]:
        """The pids of its process group (the server and its workers)."""
        if self.proc is None:
            return []
        out = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == self.proc.pid:
                        out.append(int(entry))
                except (ProcessLookupError, PermissionError):
                    continue
        return out

    def stop(self) -> None:
        """SIGTERM its process group (it started them), then SIGKILL after 20 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        deadline = time.monotonic() + 10
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.1)
