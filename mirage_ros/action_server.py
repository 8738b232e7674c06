"""``~/imagine_trajectory``: the rclpy ActionServer glue over :class:`~mirage_ros.core.goals.GoalRunner`.

Named ``action_server`` because ``mirage_ros.action`` is the package rosidl generates for the interfaces.
The goal callback asks the runner to admit (policy), the cancel callback forwards the cancel, the execute
callback (a reentrant group on a multi-threaded executor, so cancels and services are served meanwhile) runs
the goal and turns its :class:`~mirage_ros.core.goals.GoalOutcome` into the result and the goal's final state.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from mirage_ros.core.goals import CANCELED, SUCCEEDED, FrameBatch, GoalFeedback, GoalOutcome, GoalPlan, GoalRunner

__all__ = ["ImagineActionServer"]


class ImagineActionServer:
    """Serves ImagineTrajectory on ``node`` under ``name``; ``publish_frames`` streams each decoded batch."""

    def __init__(self, node, runner: GoalRunner, publish_frames: Callable[[FrameBatch], None] | None = None,
                 name: str = "~/imagine_trajectory", callback_group=None,
                 publish_plan: Callable[[GoalPlan], None] | None = None,
                 poses: Callable[[Any, Any], list] | None = None, before_goal: Callable[[], None] | None = None):
        """``publish_plan`` receives a goal's poses before its rollout (the Path); ``poses(cam_to_world, stamps)``
        builds the result's PoseStamped list; ``before_goal()`` runs in the goal's thread before its rollout."""
        from rclpy.action import ActionServer
        from rclpy.callback_groups import ReentrantCallbackGroup

        from mirage_ros.action import ImagineTrajectory

        self.runner = runner
        self.publish_frames = publish_frames
        self.last_outcome: GoalOutcome | None = None  # for /diagnostics
        self.goals_done = 0
        self.publish_plan = publish_plan
        self.poses = poses
        self.before_goal = before_goal
        self._types = ImagineTrajectory
        self.server = ActionServer(node, ImagineTrajectory, name, execute_callback=self._execute,
                                   goal_callback=self._on_goal, cancel_callback=self._on_cancel,
                                   callback_group=callback_group or ReentrantCallbackGroup())

    def _on_goal(self, goal):
        from rclpy.action import GoalResponse

        return GoalResponse.ACCEPT if self.runner.admit() else GoalResponse.REJECT

    def _on_cancel(self, goal_handle):
        from rclpy.action import CancelResponse

        self.runner.cancel(goal_handle)
        return CancelResponse.ACCEPT

    def _feedback(self, goal_handle, fb: GoalFeedback) -> None:
        msg = self._types.Feedback()
        msg.frames_done, msg.frames_total, msg.chunks_done = fb.frames_done, fb.frames_total, fb.chunks_done
        msg.chunks_total, msg.step, msg.steps_per_chunk = fb.chunks_total, fb.step, fb.steps_per_chunk
        msg.frames_per_chunk, msg.seconds_elapsed = fb.frames_per_chunk, fb.seconds_elapsed
        goal_handle.publish_feedback(msg)

    def _execute(self, goal_handle):
        from mirage_ros import conversions as conv

        goal = goal_handle.request
        if self.before_goal is not None:
            self.before_goal()
        outcome = self.runner.run(goal_handle, goal, cancel_requested=lambda: goal_handle.is_cancel_requested,
                                  feedback=lambda fb: self._feedback(goal_handle, fb), on_frames=self.publish_frames,
                                  on_plan=self.publish_plan)
        self.last_outcome, self.goals_done = outcome, self.goals_done + 1
        result = self._types.Result()
        result.message = outcome.message
        result.frames_generated = len(outcome.frames)
        result.seconds_per_frame = float(outcome.seconds_per_frame)
        result.camera_frame = outcome.frame_id
        if outcome.status == SUCCEEDED and outcome.cam_to_world is not None and self.poses is not None:
            result.poses = self.poses(outcome.cam_to_world, outcome.stamps)
        if outcome.status == SUCCEEDED and goal.return_frames:
            result.frames = [conv.numpy_to_image(f, "rgb8", stamp=int(t), frame_id=outcome.frame_id)
                             for f, t in zip(outcome.frames, outcome.stamps)]
            if outcome.masks is not None:
                result.observed_masks = [conv.numpy_to_image(m, "mono8", stamp=int(t), frame_id=outcome.frame_id)
                                         for m, t in zip(outcome.masks, outcome.stamps)]
        self._finish(goal_handle, outcome)
        return result

    @staticmethod
    def _finish(goal_handle, outcome: GoalOutcome) -> None:
        if outcome.status == SUCCEEDED:
            goal_handle.succeed()
            return
        if outcome.status == CANCELED:
            # rclpy moves the goal to CANCELING just after the cancel callback returns, which may be a moment
            # after the rollout already stopped on the runner's token.
            deadline = time.monotonic() + 1.0
            while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                time.sleep(0.005)
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
                return
        goal_handle.abort()

    def destroy(self) -> None:
        self.server.destroy()
