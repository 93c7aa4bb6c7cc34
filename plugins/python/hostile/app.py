"""Misbehaving Python steps: the sandbox must contain each as a step error."""

import wit_world
from wit_world.imports.types import StepContext


class WitWorld(wit_world.WitWorld):
    def spin(self, ctx: StepContext) -> str | None:
        """Loops forever: the host's time limit per call stops it."""
        while True:
            pass

    def memory_bomb(self, ctx: StepContext) -> str | None:
        """Grows the heap by 1 MiB at a time until the host's memory cap stops it."""
        hoard = []
        while True:
            hoard.append(bytes(1 << 20))

    def panic(self, ctx: StepContext) -> str | None:
        """An uncaught exception (not a componentize_py_types.Err): the component traps."""
        raise RuntimeError("the plugin gave up")
