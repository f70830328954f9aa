"""A test hook that kills the training process at a named point, to test crash-safe resume.

    UNIFT_TEST_KILL_AT=checkpoint_write:3 unift train ...

With this variable set, the process sends itself SIGKILL when it reaches the point of that step.
Nothing is flushed or cleaned up, as in a real crash. The points are:

    rollout           (RL only) the rollouts of step N are generated and not yet scored
    update            the optimizer has updated the weights for step N, and the step is not yet counted
    checkpoint_write  the checkpoint of step N is half written: its model files are in the
                      temporary directory, and the optimizer, RNG, state and manifest files are not

When the variable is unset (outside the tests) each call costs one environment lookup.
"""

from __future__ import annotations

import os
import signal

KILL_AT = "UNIFT_TEST_KILL_AT"


def kill_point(point: str, step: int) -> None:
    """SIGKILL this process if UNIFT_TEST_KILL_AT is set to "point:step"."""
    if os.environ.get(KILL_AT) == f"{point}:{step}":
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))
