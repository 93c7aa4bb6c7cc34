"""A multi-stage data-processing flow against a simulated paged source.

The same plugin as plugins/rust/dataproc, in Python: the data document drives it. `pages` is how
many pages the source has, `flaky` makes every page's transform fail on its first attempt.
Everything is derived from the data document, so a run resumed after a crash ends exactly as an
uninterrupted one.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports.host import Level, log
from wit_world.imports.types import StepContext, StepError_Fatal, StepError_Retryable

U64 = 1 << 64  # the Rust plugin computes in u64, which wraps around


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def data(ctx: StepContext):
    """The data document, parsed; a fatal step error if it is not JSON."""
    try:
        return json.loads(ctx.data, parse_constant=_no_constant)
    except ValueError as e:
        raise Err(StepError_Fatal(f"the data document is not JSON: {e}"))


def field(d, key):
    """d[key], or None when d is not an object or has no such key (serde_json's `d[key]`)."""
    return d.get(key) if isinstance(d, dict) else None


def as_u64(v):
    """v when it is a non-negative integer that fits in 64 bits, else None."""
    return v if type(v) is int and 0 <= v < U64 else None


def or_default(v, default):
    return default if v is None else v


def text(v) -> str:
    """v as compact JSON, as the Rust plugin formats a JSON value."""
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def patch(value) -> str:
    """A JSON merge patch for the data document."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


class WitWorld(wit_world.WitWorld):
    def fetch_page(self, ctx: StepContext) -> str | None:
        """Fetches the next page: ten records whose values depend only on the page number."""
        d = data(ctx)
        page = (or_default(as_u64(field(d, "page")), 0) + 1) % U64
        records = [(page * 100 + i) % U64 for i in range(10)]
        log(Level.INFO, f"fetched page {page}", [])
        return patch({"page": page, "records": records})

    def transform(self, ctx: StepContext) -> str | None:
        """Transforms the current page's records and adds them to the running total; with
        `flaky` set, the first attempt on every page fails."""
        d = data(ctx)
        if field(d, "flaky") is True and ctx.attempt == 1:
            raise Err(
                StepError_Retryable(
                    f"the transform service timed out on page {text(field(d, 'page'))}"
                )
            )
        records = field(d, "records")
        values = [as_u64(v) for v in records] if isinstance(records, list) else []
        total_of_page = sum(v * 2 for v in values if v is not None)
        total = (or_default(as_u64(field(d, "total")), 0) + total_of_page) % U64
        done = (or_default(as_u64(field(d, "transformed_pages")), 0) + 1) % U64
        return patch({"total": total, "transformed_pages": done, "records": None})

    def last_page(self, ctx: StepContext) -> bool:
        d = data(ctx)
        page = or_default(as_u64(field(d, "page")), 0)
        return page >= or_default(as_u64(field(d, "pages")), 1)

    def summarize(self, ctx: StepContext) -> str | None:
        d = data(ctx)
        summary = (
            f"{or_default(as_u64(field(d, 'transformed_pages')), 0)} pages, "
            f"total {or_default(as_u64(field(d, 'total')), 0)}"
        )
        log(Level.INFO, summary, [])
        return patch({"summary": summary})
