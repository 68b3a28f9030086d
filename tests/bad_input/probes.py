"""The registry of bad-input probes and the assertion they share (not collected: no test_ prefix).

Every probe is a test decorated with ``@probe(kind, *names)``: ``kind`` is ``"error"`` when it
asserts a named ``ValueError``/``TypeError`` or ``"value"`` when it asserts a finite, correct
value on a degenerate input (a limit, an empty batch, an overflow-prone scale). ``names`` are
the public names it exercises, as ``"family.name"``. ``test_coverage.py`` fails when a public
name has no probe and reports the counts.
"""

from __future__ import annotations

import contextlib
import itertools
import re

import pytest

KINDS = ("error", "value")
# (qualified test name, kind, names, number of cases)
REGISTRY: list[tuple[str, str, tuple[str, ...], int]] = []


def _cases(fn) -> int:
    n = 1
    for mark in getattr(fn, "pytestmark", []):
        if mark.name == "parametrize":
            n *= len(mark.args[1])
    return n


def probe(kind: str, *names: str):
    """Registers the decorated test as a probe of ``names``; put it above ``parametrize``."""
    assert kind in KINDS, kind
    assert names and all(n.count(".") == 1 for n in names), names

    def deco(fn):
        REGISTRY.append((f"{fn.__module__}.{fn.__name__}", kind, names, _cases(fn)))
        return fn

    return deco


@contextlib.contextmanager
def raises(exc: type[Exception], argument: str, *fragments: str):
    """Asserts ``exc`` (ValueError or TypeError) whose message names ``argument``.

    ``fragments`` (the offending value, the expected shape ...) must appear in the message too.
    """
    assert exc in (ValueError, TypeError), exc
    with pytest.raises(exc) as info:
        yield info
    message = str(info.value)
    for needle in itertools.chain((argument,), fragments):
        assert needle in message, f"{needle!r} not in the message {message!r}"
    # A message that only echoes a JAX internals error is not a named error.
    assert not re.search(r"\bTracer\b|ConcretizationTypeError|ZeroDivision", message), message
