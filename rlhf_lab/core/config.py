"""Configs are dataclasses with one rule for reading them back: `from_dict` refuses unknown keys, naming them.

    @dataclass
    class MyConfig(Config):
        sampling: SamplingConfig = field(default_factory=SamplingConfig)
        def __post_init__(self):
            self.sampling = as_config(self.sampling, SamplingConfig)   # a dict (from JSON) becomes the dataclass

    MyConfig.from_dict(json.loads(text))   # ValueError: Unknown MyConfig fields ['lr']; known: [...]
"""

from __future__ import annotations

from dataclasses import asdict, fields

__all__ = ["Config", "Seeded", "as_config"]


class Config:
    """Mixin for dataclass configs: `to_dict` (plain JSON-able values) and a strict `from_dict`."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict):
        """The inverse of `to_dict`; unknown keys raise a ValueError that names them (a typo never passes)."""
        if not isinstance(values, dict):
            raise ValueError(f"{cls.__name__}.from_dict needs a dict, got {type(values).__name__}.")
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown {cls.__name__} fields {unknown}; known: {sorted(known)}.")
        try:
            return cls(**values)
        except (TypeError, AttributeError) as err:  # e.g. "x" where a number belongs: its check could not compare
            raise ValueError(f"{cls.__name__}: a value of the wrong type ({err}): check the config's numbers, texts "
                             "and settings.") from None


class Seeded:
    """Mixin for a config whose `seed` may be None ("follow the experiment's seed"; 0 on its own)."""

    @property
    def seed_value(self) -> int:
        """The seed in use: `seed`, or 0 when it is None."""
        return 0 if self.seed is None else self.seed


def as_config(value, cls):
    """`value` as an instance of the config class `cls`: a dict is read with `cls.from_dict`, anything else (an
    instance, or None for an optional setting) is returned as it is; any other value is refused."""
    if isinstance(value, dict):
        return cls.from_dict(value)
    if value is not None and not isinstance(value, cls):
        raise ValueError(f"Expected {cls.__name__}'s settings (a JSON object, or None), got {value!r}.")
    return value
