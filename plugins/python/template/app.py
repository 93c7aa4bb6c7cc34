"""A stepflow plugin in Python: one action, one condition, one error handler.

componentize-py generates the `wit_world` module from wit/world.wit at build time; the class
below must be called `WitWorld` and implement every function the world exports (kebab-case
names become snake_case). Return a value for `ok`, raise `Err(...)` for a step error.

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
        """Action: greets `data.name`, counting greetings; a JSON merge patch (RFC 7386) sets
        keys, nested objects merge, and null deletes a key. Return None to leave data alone."""
        d = data(ctx)
        name = d.get("name")
        if not isinstance(name, str):
            # retryable: a `retry` group may run again; StepError_Fatal: no retry will fix it
            raise Err(StepError_Retryable("data.name is not set"))
        greetings = d.get("greetings", 0) + 1
        log(Level.INFO, f"hello, {name}", [("greetings", str(greetings))])
        return json.dumps({"greeting": f"hello, {name}", "greetings": greetings})

    def ready(self, ctx: StepContext) -> bool:
        """Condition: true once `greet` has run."""
        return "greeting" in data(ctx)

    def should_retry(self, ctx: StepContext, error: str) -> bool:
        """Error handler: retry the group after a retryable error, at most 3 attempts."""
        print(f"attempt {ctx.attempt} failed: {error}")  # stdout becomes log lines
        return ctx.attempt < 3
