"""Every public name of every family has at least one bad-input probe.

Imports the probe modules beside this file, so the check holds whichever xdist worker runs it.
Run as a script (``python tests/bad_input/test_coverage.py``) it prints the counts.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import sys

import probes

import jaxtricks

# Every public family: the subpackages, less the command line's claims.
FAMILIES = sorted(
    m.name for m in pkgutil.iter_modules(jaxtricks.__path__) if not m.name.startswith("_")
)
FAMILIES.remove("reproduce")
HERE = pathlib.Path(__file__).parent


def _load_probe_modules() -> None:
    sys.path.insert(0, str(HERE))
    for path in sorted(HERE.glob("test_*_bad_input.py")):
        importlib.import_module(path.stem)


def _public() -> list[str]:
    out = []
    for family in FAMILIES:
        module = importlib.import_module(f"jaxtricks.{family}")
        out += [f"{family}.{name}" for name in module.__all__]
    return out


def _counts() -> dict[str, object]:
    _load_probe_modules()
    seen = {}
    for key, kind, names, cases in probes.REGISTRY:
        seen[key] = (kind, names, cases)  # a module imported twice registers once
    by_name: dict[str, dict[str, int]] = {}
    for kind, names, cases in seen.values():
        for name in names:
            by_name.setdefault(name, {"error": 0, "value": 0})[kind] += cases
    return {
        "tests": len(seen),
        "cases": sum(c for _, _, c in seen.values()),
        "error": sum(c for k, _, c in seen.values() if k == "error"),
        "value": sum(c for k, _, c in seen.values() if k == "value"),
        "by_name": by_name,
    }


def test_every_public_name_has_a_probe():
    counts = _counts()
    missing = [n for n in _public() if n not in counts["by_name"]]
    assert not missing, f"public names without a bad-input probe: {missing}"


def test_probes_name_only_public_names():
    counts = _counts()
    public = set(_public())
    unknown = sorted(set(counts["by_name"]) - public)
    assert not unknown, f"probes name objects that are not public: {unknown}"


def test_callables_have_an_error_probe():
    """Every public function and class (records aside) has at least one named-error probe."""
    counts = _counts()
    lacking = []
    for qual in _public():
        family, name = qual.split(".")
        obj = getattr(importlib.import_module(f"jaxtricks.{family}"), name)
        record = inspect.isclass(obj) and issubclass(obj, tuple)
        if not record and counts["by_name"].get(qual, {}).get("error", 0) == 0:
            lacking.append(qual)
    assert not lacking, f"public callables without a named-error probe: {lacking}"


if __name__ == "__main__":
    c = _counts()
    print(
        f"{len(_public())} public names; {c['tests']} probe tests, {c['cases']} cases: "
        f"{c['error']} named-error cases, {c['value']} edge-value cases"
    )
    for name in _public():
        e = c["by_name"].get(name, {"error": 0, "value": 0})
        print(f"  {name:45s} error {e['error']:3d}  value {e['value']:3d}")
