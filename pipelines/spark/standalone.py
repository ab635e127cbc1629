"""A Spark standalone cluster on loopback: one master and one worker, from pyspark's own jars.

For tests and benchmarks that must run on a real cluster manager rather than ``local[N]``
(the driver then talks to executors in another JVM over RPC, and shuffles go through the
worker's block manager). Started with ``spark-class org.apache.spark.deploy.master.Master``
and ``...worker.Worker`` as child processes bound to 127.0.0.1, stopped by their process ids.

Usage::

    with StandaloneCluster(cores=2, memory="2g") as cluster:
        session = spark_session(SparkSection(master=cluster.url, conf=cluster.driver_conf()))
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

__all__ = ["ClusterError", "StandaloneCluster"]

LOOPBACK = "127.0.0.1"


class ClusterError(RuntimeError):
    """The cluster could not start (no Java, no spark-class, a process that exited, a timeout)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


class StandaloneCluster:
    """A master and a worker on 127.0.0.1; ``url`` is the master's ``spark://`` address."""

    def __init__(self, *, cores: int = 2, memory: str = "2g", timeout: float = 60.0) -> None:
        self.cores, self.memory, self.timeout = cores, memory, timeout
        self.port = _free_port()
        self.url = f"spark://{LOOPBACK}:{self.port}"
        self._procs: list[subprocess.Popen] = []
        self._dir: Path | None = None

    def driver_conf(self) -> dict[str, str]:
        """Settings for a driver in this process: loopback addresses, the worker's cores."""
        return {
            "spark.driver.host": LOOPBACK,
            "spark.driver.bindAddress": LOOPBACK,
            "spark.cores.max": str(self.cores),
            "spark.executor.cores": str(self.cores),
            "spark.executor.memory": self.memory,
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            # the default 200 makes every small aggregate pay for 200 tasks on 2 cores
            "spark.sql.shuffle.partitions": "8",
        }

    def _start(self, name: str, *args: str) -> subprocess.Popen:
        home = _spark_home()
        spark_class = home / "bin" / "spark-class"
        if not spark_class.exists():
            raise ClusterError(f"{spark_class} not found (pyspark without its launcher scripts)")
        env = {
            **os.environ,
            "SPARK_HOME": str(home),
            "SPARK_LOCAL_IP": LOOPBACK,
            "SPARK_LOCAL_DIRS": str(self._dir / "local"),
            "SPARK_WORKER_DIR": str(self._dir / "work"),
            "SPARK_LOG_DIR": str(self._dir / "logs"),
        }
        log = (self._dir / f"{name}.log").open("wb")
        proc = subprocess.Popen([str(spark_class), *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        self._procs.append(proc)
        return proc

    def _wait_for(self, proc: subprocess.Popen, name: str, text: str) -> None:
        log = self._dir / f"{name}.log"
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterError(f"the {name} exited with code {proc.returncode}: {self.log_tail(name)}")
            if text in log.read_text(errors="replace"):
                return
            time.sleep(0.3)
        raise ClusterError(f"the {name} did not start within {self.timeout:.0f} s: {self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 1500) -> str:
        path = self._dir / f"{name}.log" if self._dir else None
        return path.read_text(errors="replace")[-chars:] if path and path.exists() else ""

    def start(self) -> Self:
        if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
            raise ClusterError("Spark needs Java (17) on the PATH or JAVA_HOME")
        self._dir = Path(tempfile.mkdtemp(prefix="propensity-spark-cluster-"))
        try:
            master = self._start("master", "org.apache.spark.deploy.master.Master", "--host", LOOPBACK,
                                 "--port", str(self.port), "--webui-port", str(_free_port()))
            self._wait_for(master, "master", "I have been elected leader")
            worker = self._start("worker", "org.apache.spark.deploy.worker.Worker", self.url, "--host", LOOPBACK,
                                 "--cores", str(self.cores), "--memory", self.memory,
                                 "--webui-port", str(_free_port()))
            self._wait_for(worker, "worker", "Successfully registered with master")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the worker, then the master (by their process ids), and remove their folder."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
