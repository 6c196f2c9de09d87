"""A real Prometheus server for tests, and the evaluation of Grafana dashboards through it.

``PrometheusServer`` runs Debian's ``prometheus`` binary on 127.0.0.1 (a free
port, a temporary TSDB, a generated config scraping the given targets every
second), waits until ``/-/ready``, answers PromQL through the HTTP API and
stops the process on exit. When the binary is missing the test is skipped,
unless ``CI`` is set: there a missing binary is a broken CI and fails.

``evaluate_dashboard`` takes every PromQL expression of every panel of a
Grafana dashboard JSON, substitutes the dashboard's variables and Grafana's
built-in intervals, and evaluates it through a running server. It knows
nothing about where the metrics come from, so the same proof runs against a
synthetic emitter or the real ``cqrs-ddd demo --metrics-port``.

Only the standard library talks HTTP here (``urllib``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

__all__ = [
    "DashboardQuery",
    "PrometheusError",
    "PrometheusServer",
    "assert_exact_count",
    "assert_quantile_within_bucket",
    "bucket_bounds",
    "builtin_variables",
    "dashboard_queries",
    "dashboard_variable_queries",
    "evaluate_dashboard",
    "evaluate_dashboard_variables",
    "find_binary",
    "free_port",
    "iter_panels",
    "sample_values",
    "substitute_variables",
]

DEFAULT_BINARY = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """The server did not start, did not answer, or rejected a query."""


def find_binary(name: str = "prometheus") -> str:
    """Return the path of a Prometheus tool (``prometheus``, ``promtool``).

    Skips the calling test when it is not installed, or fails it when the
    ``CI`` environment variable is set (CI installs Debian's ``prometheus``).
    """
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is not None:
        return path
    reason = (
        f"`{name}` not found on PATH or in /usr/bin; install Debian's `prometheus` package "
        "(apt-get install prometheus) to run the dashboard proofs"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: the CI script must install it)")
    pytest.skip(reason)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _duration_seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if match is None:
        raise ValueError(f"unsupported duration {duration!r} (use e.g. 500ms, 1s, 2m)")
    return float(match.group(1)) * units[match.group(2)]


class PrometheusServer:
    """A Prometheus process scraping ``targets`` (``host:port``) under one job name.

    ``start`` returns once the server is ready *and* its scrape loop runs (the targets
    need not be up yet: start the metrics source afterwards). Use it as a context manager::

        with PrometheusServer(["127.0.0.1:9464"], workdir=tmp_path) as prom:
            prom.wait_for_scrapes(3)
            prom.query("sum(cqrs_events_stored_total)")
    """

    def __init__(
        self,
        targets: Sequence[str],
        *,
        workdir: Path,
        job: str = "cqrs-ddd-demo",
        scrape_interval: str = "1s",
        binary: str | None = None,
        start_timeout: float = 30.0,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not targets:
            raise ValueError("PrometheusServer needs at least one scrape target")
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.scrape_interval_seconds = _duration_seconds(scrape_interval)
        self.workdir = Path(workdir)
        self.binary = binary or find_binary("prometheus")
        self.start_timeout = start_timeout
        self.extra_args = list(extra_args)  # e.g. --enable-feature=exemplar-storage
        self.config_path = self.workdir / "prometheus.yml"
        self.log_path = self.workdir / "prometheus.log"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config_text(self) -> str:
        """The generated configuration (JSON is valid YAML, so no YAML library is needed)."""
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.scrape_interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        return json.dumps(config, indent=2) + "\n"

    def start(self) -> PrometheusServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text())
        last_error: Exception | None = None
        # The free port may be taken between probing and binding: try a few.
        for _attempt in range(3):
            self.port = free_port()
            try:
                self._spawn()
                self._wait_ready()
            except PrometheusError as exc:
                last_error = exc
                self.stop()
                continue
            try:
                self.wait_for_scrape_loop()
            except BaseException:
                self.stop()  # __exit__ does not run when __enter__ raises
                raise
            return self
        raise PrometheusError(f"Prometheus did not start: {last_error}")

    def _spawn(self) -> None:
        storage = self.workdir / f"tsdb-{self.port}"
        command = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=info",
            *self.extra_args,
        ]
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.returncode is not None:
                raise PrometheusError(f"exited with code {self.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise PrometheusError(f"not ready after {self.start_timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, wait for a clean shutdown, SIGKILL only if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- HTTP API ----------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str | Sequence[str]] | None = None) -> Any:
        """GET ``/api/v1/<path>`` and return ``data``; raise ``PrometheusError`` on an error."""
        query = urllib.parse.urlencode(params or {}, doseq=True)
        url = f"{self.base_url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            raise PrometheusError(f"GET {url} -> HTTP {exc.code}: {detail}") from exc
        if body.get("status") != "success":
            raise PrometheusError(f"GET {url} -> {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Evaluate an instant query; return the result list (vector or scalar as one sample)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        if data["resultType"] != "vector":
            raise PrometheusError(f"{expr!r} returned a {data['resultType']}, not a vector")
        return list(data["result"])

    def query_value(self, expr: str) -> float:
        """Evaluate an expression that must return exactly one sample; return its value."""
        result = self.query(expr)
        if len(result) != 1:
            raise PrometheusError(f"{expr!r} returned {len(result)} samples, expected 1: {result}")
        return float(result[0]["value"][1])

    def label_values(self, label: str, match: str | None = None) -> list[str]:
        params: dict[str, str | Sequence[str]] = {}
        if match is not None:
            params["match[]"] = [match]
        return list(self.api(f"label/{urllib.parse.quote(label)}/values", params))

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars``: the stored exemplars of the series ``expr`` selects."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        return list(self.api("query_exemplars", params))

    def active_targets(self) -> list[dict[str, Any]]:
        return list(self.api("targets", {"state": "active"})["activeTargets"])

    def target_health(self) -> list[tuple[str, str, str]]:
        """``(scrape URL, health, last error)`` per target, for failure messages."""
        return [(t["scrapeUrl"], t["health"], t["lastError"]) for t in self.active_targets()]

    # -- waiting -------------------------------------------------------------------

    def wait_until(
        self,
        condition: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        poll: float = 0.25,
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.returncode is not None:
                raise PrometheusError(
                    f"Prometheus died while waiting for {what}:\n{self.log_tail()}"
                )
            if condition():
                return
            if time.monotonic() > deadline:
                targets = self.target_health()
                raise PrometheusError(f"timed out after {timeout}s waiting for {what}: {targets}")
            time.sleep(poll)

    def wait_for_scrape_loop(self, timeout: float = 30.0) -> None:
        """Wait until Prometheus has tried to scrape every target once (up or down).

        Prometheus applies new targets on a 5 s tick, so its first scrape comes some
        seconds after ``/-/ready``. ``start`` waits for it: a source started afterwards is
        scraped every interval from its first moment, short workloads included.
        """

        def attempted() -> bool:
            health = {t["scrapeUrl"]: t["health"] for t in self.active_targets()}
            return len(health) == len(self.targets) and "unknown" not in health.values()

        self.wait_until(attempted, timeout=timeout, what="the first scrape attempts")

    def successful_scrapes(self) -> dict[str, int]:
        """Successful scrapes so far per target (``instance``) of this job."""
        result = self.query(f'sum by (instance) (sum_over_time(up{{job="{self.job}"}}[1h]))')
        return {sample["metric"]["instance"]: int(float(sample["value"][1])) for sample in result}

    def wait_for_scrapes(self, n: int, timeout: float | None = None) -> dict[str, int]:
        """Wait until every target was scraped successfully at least ``n`` times."""
        timeout = timeout if timeout is not None else 10 + 3 * n * self.scrape_interval_seconds
        counts: dict[str, int] = {}

        def enough() -> bool:
            nonlocal counts
            counts = self.successful_scrapes()
            return all(counts.get(target, 0) >= n for target in self.targets)

        self.wait_until(enough, timeout=timeout, what=f"{n} successful scrapes of {self.targets}")
        return counts

    def wait_for_scrape_after(self, unix_time: float, timeout: float = 30.0) -> None:
        """Wait until every target had a successful scrape that *started* after ``unix_time``.

        Use it after a workload ended to be sure Prometheus holds its final counters.
        """

        selector = f'up{{job="{self.job}"}}'

        def scraped() -> bool:
            # timestamp() of a bare selector is the sample's own time (of an expression
            # such as `up == 1` it would be the evaluation time).
            stamps = self.query(f"timestamp({selector})")
            latest = {s["metric"]["instance"]: float(s["value"][1]) for s in stamps}
            up = {s["metric"]["instance"]: s["value"][1] for s in self.query(selector)}
            return all(
                latest.get(target, 0.0) > unix_time and up.get(target) == "1"
                for target in self.targets
            )

        self.wait_until(scraped, timeout=timeout, what=f"a scrape after {unix_time:.3f}")


# -- Grafana dashboards ---------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardQuery:
    """One PromQL expression of a dashboard: where it lives, as written, and as evaluated."""

    panel: str
    ref_id: str
    expr: str
    promql: str


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from iter_panels(panel)


# Grafana's built-in variables, as a dashboard query sees them for a given scrape interval.
def builtin_variables(scrape_interval_seconds: float) -> dict[str, str]:
    rate_interval = max(4 * scrape_interval_seconds, 30.0)
    return {
        "__rate_interval": f"{int(rate_interval)}s",
        "__interval": f"{int(max(scrape_interval_seconds, 15.0))}s",
        "__interval_ms": str(int(max(scrape_interval_seconds, 15.0) * 1000)),
        "__range": "5m",
        "__range_s": "300",
        "__range_ms": "300000",
    }


_VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")


def substitute_variables(expr: str, values: Mapping[str, str]) -> str:
    """Replace ``$name``, ``${name}``, ``${name:format}`` and ``[[name]]`` with ``values``.

    An unknown variable raises ``KeyError`` so a new dashboard variable is not silently
    sent to Prometheus as a literal ``$name``.
    """

    def replace(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise KeyError(f"dashboard variable ${name} has no value for the evaluation")
        return values[name]

    return _VARIABLE.sub(replace, expr)


def _variable_values(
    dashboard: Mapping[str, Any],
    overrides: Mapping[str, str] | None,
    scrape_interval_seconds: float,
) -> dict[str, str]:
    values = builtin_variables(scrape_interval_seconds)
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        if variable.get("type") == "datasource":
            values[name] = "n/a"  # only ever used as a panel's datasource uid
        elif variable.get("includeAll"):
            values[name] = variable.get("allValue") or ".*"
        else:
            current = variable.get("current", {}).get("value")
            values[name] = current if isinstance(current, str) and current else ".*"
    values.update(overrides or {})
    return values


def dashboard_queries(
    dashboard: Mapping[str, Any],
    *,
    variables: Mapping[str, str] | None = None,
    scrape_interval_seconds: float = 1.0,
) -> list[DashboardQuery]:
    """Every Prometheus target expression of every panel, with the variables substituted.

    Template variables default to their "All" value (``allValue``, else ``.*``); pass
    ``variables`` to pin some (``{"job": "cqrs-ddd-demo"}``).
    """
    values = _variable_values(dashboard, variables, scrape_interval_seconds)
    queries = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if target.get("hide") or not expr.strip():
                continue
            queries.append(
                DashboardQuery(
                    panel=panel.get("title", "?"),
                    ref_id=target.get("refId", "?"),
                    expr=expr,
                    promql=substitute_variables(expr, values),
                )
            )
    return queries


def sample_values(result: Sequence[Mapping[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def evaluate_dashboard(
    prom: PrometheusServer,
    dashboard_path: Path,
    *,
    variables: Mapping[str, str] | None = None,
) -> dict[DashboardQuery, list[dict[str, Any]]]:
    """Evaluate every panel expression of the dashboard at ``dashboard_path`` through ``prom``.

    Returns the instant-query result list per query; the caller decides what it requires
    (non-empty, finite). A PromQL error raises ``PrometheusError`` naming the panel.
    """
    dashboard = json.loads(Path(dashboard_path).read_text())
    results: dict[DashboardQuery, list[dict[str, Any]]] = {}
    for item in dashboard_queries(
        dashboard, variables=variables, scrape_interval_seconds=prom.scrape_interval_seconds
    ):
        try:
            results[item] = prom.query(item.promql)
        except PrometheusError as exc:
            raise PrometheusError(f"panel {item.panel!r} target {item.ref_id}: {exc}") from exc
    return results


_LABEL_VALUES = re.compile(
    r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$"
)


def dashboard_variable_queries(dashboard: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, query)`` of every Prometheus query variable."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        if isinstance(query, Mapping):
            query = query.get("query", "")
        found.append((variable["name"], str(query or variable.get("definition", ""))))
    return found


def evaluate_dashboard_variables(
    prom: PrometheusServer,
    dashboard_path: Path,
    *,
    variables: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """The values each ``label_values(selector, label)`` variable would offer in Grafana."""
    dashboard = json.loads(Path(dashboard_path).read_text())
    values = _variable_values(dashboard, variables, prom.scrape_interval_seconds)
    offered: dict[str, list[str]] = {}
    for name, query in dashboard_variable_queries(dashboard):
        match = _LABEL_VALUES.match(substitute_variables(query, values))
        if match is None:
            raise PrometheusError(f"variable {name!r}: unsupported query {query!r}")
        offered[name] = prom.label_values(match["label"], match["selector"])
    return offered


def bucket_bounds(value: float, boundaries: Sequence[float]) -> tuple[float, float]:
    """The histogram bucket ``(lower, upper]`` that holds ``value`` (lower of the first is 0)."""
    lower = 0.0
    for upper in boundaries:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


def assert_exact_count(
    prom: PrometheusServer,
    expr: str,
    expected: float | Mapping[str, float],
    *,
    by: str | None = None,
) -> None:
    """Assert that a counter-like ``expr`` equals what the source says it emitted, exactly.

    With ``by`` (a label), ``expr`` must be grouped by it and ``expected`` maps each label
    value to its count; otherwise ``expr`` returns one sample equal to ``expected``.
    """
    if not isinstance(expected, Mapping):
        actual = prom.query_value(expr)
        assert actual == expected, f"{expr}: Prometheus has {actual}, the source emitted {expected}"
        return
    if by is None:
        raise ValueError("per-label counts need `by`, the label they are keyed by")
    result = prom.query(expr)
    got = {sample["metric"].get(by, ""): float(sample["value"][1]) for sample in result}
    want = {key: float(value) for key, value in expected.items()}
    assert got == want, f"{expr}: Prometheus has {got}, the source emitted {want}"


def assert_quantile_within_bucket(
    prom: PrometheusServer,
    expr: str,
    exact: float,
    boundaries: Sequence[float],
) -> float:
    """Assert that Prometheus's ``histogram_quantile`` lies in the bucket of the exact quantile.

    ``exact`` is the nearest-rank quantile of the recorded samples; Prometheus interpolates
    inside the bucket that holds the same rank, so both share a bucket. Returns the estimate.
    """
    estimate = prom.query_value(expr)
    lower, upper = bucket_bounds(exact, boundaries)
    assert lower <= estimate <= upper, (
        f"{expr}: Prometheus estimates {estimate}, the exact quantile {exact} is in "
        f"bucket ({lower}, {upper}]"
    )
    return estimate
