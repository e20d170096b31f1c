"""The steady-state controller: a pure scheduler core (`core`), the asyncio shell that runs it
for real (`shell`), the executors that run candidates (`executor`), and a discrete-event
simulation of it at scale (`simulate`)."""

from evolve.controller.core import Scheduler, Settings
from evolve.controller.executor import Executor, LocalExecutor, RayExecutor
from evolve.controller.shell import Controller, Progress, RunRecorder
from evolve.controller.wiring import operator_names

__all__ = ["Controller", "Executor", "LocalExecutor", "Progress", "RayExecutor", "RunRecorder",
           "Scheduler", "Settings", "operator_names"]
