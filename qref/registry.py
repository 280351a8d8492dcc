"""Backend registry: entry points of the group `qref.backends`, plus in-process registrations.

A package registers a backend with one line in its pyproject:

    [project.entry-points."qref.backends"]
    mybackend = "mypkg.qref_backend:MyBackend"

The target is called with the device string (or None for the backend's default) and returns an
object satisfying `qref.backend.Backend`. It may raise `BackendUnavailable` (no CUDA, library
missing); the registry reports that reason instead of failing.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

GROUP = "qref.backends"

_LOCAL: dict[str, Callable] = {}


class BackendUnavailable(RuntimeError):
    """Raised by a backend factory that cannot run here (missing library or device)."""


def register(name: str, factory: Callable) -> None:
    """Register a backend factory in this process (tests, notebooks); entry points need no call."""
    _LOCAL[name] = factory


def unregister(name: str) -> None:
    _LOCAL.pop(name, None)


def factories() -> dict[str, Any]:
    """name -> factory (entry points loaded lazily; in-process registrations win on a name clash)."""
    found: dict[str, Any] = {ep.name: ep for ep in entry_points(group=GROUP)}
    found.update(_LOCAL)
    return found


def parse(spec: str) -> tuple[str, str | None]:
    """'torch:cuda' -> ('torch', 'cuda'); 'numpy' -> ('numpy', None)."""
    if not isinstance(spec, str) or not spec.partition(":")[0]:
        raise ValueError(f"backend must be NAME[:DEVICE], e.g. torch:cuda, got {spec!r}")
    name, colon, device = spec.partition(":")
    if colon and not device:
        raise ValueError(f"backend {spec!r}: give a device after ':' (e.g. {name}:cuda) or none")
    return name, (device or None)


def get_backend(spec: str):
    """The backend named by 'NAME[:DEVICE]'; ValueError for an unknown name, BackendUnavailable when
    it cannot run here."""
    name, device = parse(spec)
    known = factories()
    if name not in known:
        raise ValueError(f"unknown backend {name!r}; registered: {', '.join(sorted(known)) or 'none'}")
    target = known[name]
    try:
        factory = target.load() if hasattr(target, "load") else target
        devices = getattr(factory, "DEVICES", None)
        if devices is not None and device is not None and device.split(":")[0] not in devices:
            where = ", ".join(d for d in devices if d) or "the host only (no device)"
            raise ValueError(f"backend {name!r} runs on {where}; not on device {device!r}")
        return factory(device)
    except BackendUnavailable:
        raise
    except ImportError as e:
        raise BackendUnavailable(f"{spec}: {e}") from e


def available(specs=None) -> list[tuple[str, object]]:
    """[(spec, backend or the reason it is unavailable)] for the given specs, default: every
    registered backend on each device it lists in `DEVICES` (an attribute of the factory)."""
    if specs is None:
        specs = []
        for name, target in sorted(factories().items()):
            try:
                factory = target.load() if hasattr(target, "load") else target
            except ImportError:
                specs.append(name)
                continue
            devices = getattr(factory, "DEVICES", (None,))
            specs += [name if d is None else f"{name}:{d}" for d in devices]
    out = []
    for spec in specs:
        try:
            out.append((spec, get_backend(spec)))
        except BackendUnavailable as e:
            out.append((spec, str(e)))
    return out
