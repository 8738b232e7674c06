"""rclpy init / executor / spin / shutdown, written once.

Every process of mirage_ros goes through here:

* :func:`run` is the ``main()`` of each executable (the node, the synthetic camera, the bag replay): rclpy
  init with the process arguments (``--ros-args ...``), build the nodes, spin in the foreground (or spin in
  the background while ``work`` runs in the foreground), then destroy the nodes and shut down. Ctrl-C and an
  external shutdown end it with 0; the errors a user can fix (bad parameters, missing files) print one line
  and exit 2.
* :class:`LocalGraph` runs several nodes in one process on a background executor, with bounded waits (the
  demo, the ingest benchmark, the ROS tests); by default with its own rclpy context and DDS discovery on the
  loopback interface.

Both load the shipped Fast DDS profile for large images before rclpy initialises (:mod:`mirage_ros.dds`), unless
the user set a profile of their own or uses another middleware.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any, Callable, Sequence

__all__ = ["LocalGraph", "run", "wait_future"]


def _user_errors() -> tuple[type[BaseException], ...]:
    """What :func:`run` reports in one line with exit status 2: bad parameters, missing files."""
    from rclpy.exceptions import ParameterException

    return (ValueError, FileNotFoundError, ParameterException)


def wait_future(future, timeout: float, what: str = "future") -> Any:
    """Block until an rclpy future is done (the executor runs elsewhere); TimeoutError after ``timeout`` s."""
    done = threading.Event()
    future.add_done_callback(lambda _: done.set())
    if not done.wait(timeout):
        raise TimeoutError(f"{what} not done after {timeout:.1f} s")
    return future.result()


# Distributions without ROS_AUTOMATIC_DISCOVERY_RANGE (added in Iron): they read ROS_LOCALHOST_ONLY instead, which
# Iron and Jazzy still honour with a warning on every rcl init (and which overrides the range there).
LOCALHOST_ONLY_DISTROS = ("foxy", "galactic", "humble")


def keep_discovery_local(environ) -> None:
    """Keep DDS discovery on this host unless ``environ`` already says otherwise (ROS_AUTOMATIC_DISCOVERY_RANGE;
    ROS_LOCALHOST_ONLY only where ROS_DISTRO names a distribution that knows no range)."""
    environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if environ.get("ROS_DISTRO", "").lower() in LOCALHOST_ONLY_DISTROS:
        environ.setdefault("ROS_LOCALHOST_ONLY", "1")


class LocalGraph:
    """Nodes of one process on one executor spinning in a daemon thread (:meth:`start`) or in the caller (:meth:`spin`).

    Args:
        domain_id: DDS domain of a new context (None: ROS_DOMAIN_ID / 0).
        threads: executor threads (``single_threaded=True``: a SingleThreadedExecutor).
        localhost_only: keep discovery on loopback unless the environment says otherwise.
        context: an initialised rclpy Context to use instead of a new one (it is shut down by :meth:`close`).
    """

    def __init__(self, domain_id: int | None = None, threads: int = 4, localhost_only: bool = True,
                 context=None, single_threaded: bool = False):
        import rclpy
        from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor

        from mirage_ros.dds import use_large_data_profile

        use_large_data_profile()  # before the first participant of this process exists
        if localhost_only:
            keep_discovery_local(os.environ)
        if context is None:
            context = rclpy.Context()
            rclpy.init(context=context, **({"domain_id": int(domain_id)} if domain_id is not None else {}))
        self.context = context
        self.executor = SingleThreadedExecutor(context=context) if single_threaded else \
            MultiThreadedExecutor(num_threads=threads, context=context)
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

    def remove(self, node) -> None:
        """Take ``node`` out of the executor and destroy it (the graph keeps running)."""
        self.executor.remove_node(node)
        self.nodes.remove(node)
        node.destroy_node()

    def start(self) -> "LocalGraph":
        if self._thread is None:
            self._thread = threading.Thread(target=self._spin_quietly, name="local-graph", daemon=True)
            self._thread.start()
        return self

    def spin(self) -> None:
        """Spin in the calling thread until shutdown (raises KeyboardInterrupt / ExternalShutdownException)."""
        self.executor.spin()

    def _spin_quietly(self) -> None:
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


def run(build: Callable[[LocalGraph], Any], argv: Sequence[str] | None = None, *, prog: str,
        threads: int = 4, single_threaded: bool = False, work: Callable[[Any], int | None] | None = None) -> int:
    """The ``main()`` of a mirage_ros executable; returns the exit status.

    ``build(graph)`` creates the process's nodes with ``context=graph.context`` and adds them (``graph.add``);
    its return value goes to ``work``. Without ``work`` the executor spins here until Ctrl-C or shutdown; with
    it, the executor spins in a background thread while ``work(built)`` runs here and gives the exit status.
    ``argv`` defaults to ``sys.argv`` (rclpy reads ``--ros-args`` from it).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    from mirage_ros.dds import use_large_data_profile

    use_large_data_profile()  # Fast DDS reads its profile when the first participant is created: before init
    # The default context: rclpy installs its SIGINT / SIGTERM handlers only for that one (launch stops
    # processes with SIGINT), and they wake the executor instead of waiting for its next timer.
    rclpy.init(args=list(sys.argv if argv is None else argv))
    graph = LocalGraph(context=rclpy.get_default_context(), threads=threads, single_threaded=single_threaded,
                       localhost_only=False)
    try:
        built = build(graph)
        if work is None:
            graph.spin()
            return 0
        graph.start()
        return int(work(built) or 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except _user_errors() as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    finally:
        graph.close()
