"""A stepflow plugin in Python: one action, one condition, one error handler.

componentize-py generates the `wit_world` module from wit/world.wit at build time; the class
below must be called `WitWorld` and implement every function the world exports (kebab-case
names become snake_case). Return a value for `ok`; raise `Err(...)` for a step error.

Import every module you need at the top of the file: componentize-py runs this module at build
time and snapshots the interpreter, and a component has no files to import from at run time.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.host import Level, log
from wit_world.imports.types import StepContext, StepError_Fatal, StepError_Retryable


def data(ctx: StepContext) -> dict:
    """The run's data document (a JSON object)."""
    try:
        d = json.loads(ctx.data)
    except ValueError as e:
        raise Err(StepError_Fatal(f"the data document is not JSON: {e}"))
    return d if isinstance(d, dict) else {}


class WitWorld(wit_world.WitWorld):
    def greet(self, ctx: StepContext) -> str | None:
        """Action: greets `name` and counts the greetings in a JSON merge patch (RFC 7386:
        keys it sets are set, nested objects merge, null deletes). None leaves data alone."""
        d = data(ctx)
        name = d.get("name", "world")
        if not isinstance(name, str):
            # Fatal: no retry can fix the input, so the run fails here (no handler is asked).
            raise Err(StepError_Fatal("`name` must be a string"))
        greetings = d.get("greetings", 0) + 1
        if d.get("fail_first") and greetings == 1 and ctx.attempt == 1:
            # Retryable: an enclosing `retry` may run the group again (its handler decides).
            raise Err(StepError_Retryable("the greeter is not ready yet"))
        log(Level.INFO, "greeting", [("name", name)])
        return json.dumps({"greeting": f"hello, {name}", "greetings": greetings})

    def ready(self, ctx: StepContext) -> bool:
        """Condition: true once there are `want` greetings (1 when not set)."""
        d = data(ctx)
        return d.get("greetings", 0) >= d.get("want", 1)

    def should_retry(self, ctx: StepContext, error: str) -> bool:
        """Error handler: asked only about retryable errors; retries while fewer than 3
        attempts were made."""
        log(Level.WARN, "the step failed", [("error", error), ("attempt", str(ctx.attempt))])
        return ctx.attempt < 3
