"""Method registry: one decorator per extension point (style of verl's ``core_algos.py``).

A paper's method is a plain function registered under a name with the paper it comes from, the
source it was ported from and its hyperparameters (with units). The trainer looks methods up by
name; unknown names fail with the list of valid ones and registering a name twice fails.

Extension points and their contracts (``ctx`` is :class:`harness.context.TokenContext`):

- ``loss``:      ``fn(ctx, **hparams) -> (per_token_loss (B, T) tensor, metrics dict)``
- ``advantage``: ``fn(rewards (N,) tensor, group_size, stats dict, **hparams) -> (advantages, metrics)``
- ``reward``:    ``fn(prompts, completions, **kwargs) -> list[float | None]`` (TRL reward function)
- ``rollout``:   ``fn(prompts, trainer, **hparams) -> dict`` (TRL ``rollout_func``)
- ``data``:      ``fn(dataset, **hparams) -> dataset``
- ``config``:    no function body of its own: the method is a set of TRL ``GRPOConfig`` overrides.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

EXTENSION_POINTS = ("loss", "advantage", "reward", "rollout", "data", "config")


class RegistryError(KeyError):
    """Unknown or duplicate registry entry (message names the valid choices)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class HParam:
    """One hyperparameter: default, unit and where the value comes from (paper section / code line)."""

    default: Any
    unit: str
    help: str
    source: str


@dataclass(frozen=True)
class Method:
    name: str
    point: str
    paper: str
    source: str
    fn: Callable | None
    hparams: dict[str, HParam] = field(default_factory=dict)
    trl_overrides: dict[str, Any] = field(default_factory=dict)
    requires_off_policy: bool = False
    description: str = ""

    def resolve(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """Defaults updated with ``overrides``; an unknown hyperparameter name is an error."""
        overrides = dict(overrides or {})
        unknown = sorted(set(overrides) - set(self.hparams))
        if unknown:
            raise RegistryError(
                f"method '{self.name}' has no hyperparameter {unknown[0]!r}; "
                f"valid: {', '.join(sorted(self.hparams)) or '(none)'}"
            )
        values = {k: hp.default for k, hp in self.hparams.items()}
        values.update(overrides)
        return values


_REGISTRY: dict[str, Method] = {}


def _register(point: str, name: str, *, paper: str, source: str, hparams: dict[str, HParam] | None = None,
              trl_overrides: dict[str, Any] | None = None, requires_off_policy: bool = False,
              description: str = ""):
    if point not in EXTENSION_POINTS:
        raise RegistryError(f"unknown extension point {point!r}; valid: {', '.join(EXTENSION_POINTS)}")

    def deco(fn: Callable | None):
        if name in _REGISTRY:
            raise RegistryError(f"method {name!r} is already registered (by {_REGISTRY[name].paper})")
        _REGISTRY[name] = Method(name=name, point=point, paper=paper, source=source, fn=fn,
                                 hparams=dict(hparams or {}), trl_overrides=dict(trl_overrides or {}),
                                 requires_off_policy=requires_off_policy,
                                 description=description or (fn.__doc__ or "").strip().split("\n")[0] if fn else description)
        return fn

    return deco


def register_loss(name: str, **kw):
    """Register a per-token loss ``fn(ctx, **hparams) -> (per_token_loss, metrics)``."""
    return _register("loss", name, **kw)


def register_advantage(name: str, **kw):
    return _register("advantage", name, **kw)


def register_reward(name: str, **kw):
    return _register("reward", name, **kw)


def register_rollout(name: str, **kw):
    return _register("rollout", name, **kw)


def register_data(name: str, **kw):
    return _register("data", name, **kw)


def register_config(name: str, **kw) -> None:
    """Register a method that is only TRL configuration (``trl_overrides``), e.g. the GRPO baseline."""
    _register("config", name, **kw)(None)


def get_method(name: str) -> Method:
    _load_builtin_methods()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RegistryError(f"unknown method {name!r}; valid: {', '.join(sorted(_REGISTRY))}") from None


def all_methods() -> dict[str, Method]:
    _load_builtin_methods()
    return dict(sorted(_REGISTRY.items()))


def _load_builtin_methods() -> None:
    import harness.methods  # noqa: F401  (importing registers the built-in methods)
