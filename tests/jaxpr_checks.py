"""Reading a jaxpr in tests (not collected): the precision of every matmul.

The CPU ignores matmul precision, so the precision policy (DESIGN.md) is checked where it is
recorded: the ``precision`` of each ``dot_general``, nested jaxprs (scan, map, custom rules)
included.
"""

from __future__ import annotations

import jax


def dot_precisions(fn, *args, **kwargs) -> list:
    """The ``precision`` parameter of every ``dot_general`` in ``fn(*args, **kwargs)``'s jaxpr."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn.params["precision"])
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(lambda *a: fn(*a, **kwargs))(*args).jaxpr)
    return found
