"""Run several rclpy nodes in one process on a background executor, with bounded waits.

Used by the demo, the ingest benchmark and the ROS tests: each :class:`LocalGraph` has its own rclpy context
(optionally its own DDS domain), keeps discovery on the loopback interface unless told otherwise, spins a
:class:`~rclpy.executors.MultiThreadedExecutor` in a daemon thread, and never waits without a deadline.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

__all__ = ["LocalGraph", "wait_future"]


def wait_future(future, timeout: float, what: str = "future") -> Any:
    """Block until an rclpy future is done (the executor runs elsewhere); TimeoutError after ``timeout`` s."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"{what} not done after {timeout:.1f} s")
    return future.result()


class LocalGraph:
    def __init__(self, domain_id: int | None = None, threads: int = 4, localhost_only: bool = True):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor

        if localhost_only:
            os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
            os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")  # pre-Jazzy distributions
        self.context = rclpy.Context()
        kwargs = {"domain_id": int(domain_id)} if domain_id is not None else {}
        rclpy.init(context=self.context, **kwargs)
        self.executor = MultiThreadedExecutor(num_threads=threads, context=self.context)
        self.nodes: list = []
        self._thread: threading.Thread | None = None

    def node(self, name: str, **kwargs):
        """A plain helper node in this graph."""
        from rclpy.node import Node

        return self.add(Node(name, context=self.context, **kwargs))

    def add(self, node):
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def start(self) -> "LocalGraph":
        if self._thread is None:
            self._thread = threading.Thread(target=self._spin, name="local-graph", daemon=True)
            self._thread.start()
        return self

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shutdown races end the spin; nothing to report
            pass

    @staticmethod
    def wait_until(predicate: Callable[[], Any], timeout: float, what: str = "condition", period: float = 0.02):
        """Poll ``predicate`` until truthy (returned) or raise TimeoutError naming ``what``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
            time.sleep(period)

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        for node in reversed(self.nodes):
            try:
                node.destroy_node()
            except Exception:  # noqa: BLE001
                pass
        self.nodes.clear()
        self.context.try_shutdown()

    def __enter__(self) -> "LocalGraph":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
