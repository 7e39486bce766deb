"""Declarative configuration that fails at start, naming the key that is wrong.

A service declares its settings once as a schema of `Field`s and `Section`s, then calls `load_config`.
Values come from, lowest precedence first: field defaults, a YAML file, a dict (for example command
line overrides), and environment variables carrying a prefix. Any problem (unknown key, missing key,
wrong type, out of range, failed validator) raises `ConfigError` whose message starts with the dotted
key path, so an operator reading one log line knows exactly what to fix. A half-configured service
that starts and fails later, far from the cause, is what this module exists to prevent.

Example::

    SCHEMA = [
        Field("api_addr", str, default="127.0.0.1:8000", validator=parse_hostport),
        Field("peers", list[str], default=()),
        Section("tls", [
            Field("cert", str, validator=existing_file),
            Field("key", str, validator=existing_file),
        ]),
        Field("jwt_secret", str, secret=True),
    ]
    cfg = load_config(SCHEMA, path="/etc/agenda/db.yaml", env_prefix="AGENDA_DB")
    cfg.tls.cert                 # attribute access
    cfg["tls.cert"]              # dotted access
    AGENDA_DB_TLS__CERT=/x       # environment override of tls.cert

String values are coerced for every scalar type (environment variables are always strings, and
templated YAML often quotes numbers); non-string values must already have the right type.
`list[str]` values are returned as tuples so the loaded configuration is truly immutable.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

__all__ = [
    "REQUIRED",
    "Config",
    "ConfigError",
    "Field",
    "Section",
    "SectionList",
    "existing_file",
    "load_config",
    "parse_bool",
    "parse_hostport",
    "read_file",
]


class ConfigError(Exception):
    """A configuration value is unusable; `key` is the dotted path, `reason` says why.

    An empty `key` means the problem concerns the whole document (for example an unreadable file).
    """

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}" if key else reason)

    def __reduce__(self) -> tuple[type[ConfigError], tuple[str, str]]:
        # Exceptions pickle their args by default; ours are (key, reason), not the formatted message.
        return (type(self), (self.key, self.reason))


class _Required:
    """Sentinel type: a field without a default must be provided."""

    _instance: _Required | None = None

    def __new__(cls) -> _Required:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()

_SCALARS: Final = (str, int, float, bool)
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})
_NAME_RE: Final = re.compile(r"^[a-z][a-z0-9_]*$")
_MASK: Final = "***"


def _list_item_type(tp: Any) -> type | None:
    """Return T for `list[T]` (T a scalar), None for anything else."""
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp) or (str,)
        return item if item in _SCALARS else None
    return None


def _type_name(tp: Any) -> str:
    item = _list_item_type(tp)
    if item is not None:
        return f"list of {_type_name(item)}"
    return {str: "string", int: "integer", float: "number", bool: "boolean"}.get(tp, repr(tp))


@dataclass(frozen=True)
class Field:
    """One setting.

    `type` is str, int, float, bool or list[T] of those. `validator` receives the coerced value and
    either returns a replacement (for example `parse_hostport` turns "h:1" into ("h", 1)) or None to
    keep it; it signals a bad value by raising ValueError or ConfigError, whose reason is reported
    under this field's key. `secret` values are masked in repr, str, `as_dict()` and error messages.
    """

    name: str
    type: Any
    default: Any = REQUIRED
    help: str = ""
    validator: Callable[[Any], Any] | None = None
    choices: Sequence[Any] | None = None
    min: float | None = None
    max: float | None = None
    secret: bool = False

    def __post_init__(self) -> None:
        # Schema mistakes are programming errors: fail at import of the service, not at deploy time.
        _check_name(self.name)
        if self.type not in _SCALARS and _list_item_type(self.type) is None:
            raise TypeError(f"field {self.name!r}: unsupported type {self.type!r}")
        if (self.min is not None or self.max is not None) and self.type not in (int, float):
            raise TypeError(f"field {self.name!r}: min/max only apply to int and float fields")
        if isinstance(self.default, list):
            object.__setattr__(self, "default", tuple(self.default))

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Section:
    """A named group of fields, loaded from a nested mapping and returned as a nested `Config`."""

    name: str
    fields: Sequence[Field | Section]
    help: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "fields", _check_children(self.fields, self.name))


@dataclass(frozen=True)
class SectionList:
    """A list of mappings that share one schema (VRRP instances, track scripts).

    Each item loads as a `Config`; the result is a tuple of them. Errors name the item by its
    index (`instances.1.priority`). Environment variables cannot reach inside a list: a list is
    configured in the file.
    """

    name: str
    fields: Sequence[Field | Section]
    help: str = ""
    min_items: int = 0
    max_items: int | None = None
    default: Sequence[Any] = ()

    def __post_init__(self) -> None:
        _check_name(self.name)
        object.__setattr__(self, "fields", _check_children(self.fields, self.name))


def _check_name(name: str) -> None:
    if not _NAME_RE.match(name):
        raise ValueError(f"config name {name!r} must be lowercase snake_case")
    if name.startswith("_") or hasattr(Config, name):
        raise ValueError(f"config name {name!r} clashes with a Config attribute")


def _check_children(children: Sequence[Field | Section | SectionList], where: str) -> tuple[Any, ...]:
    seen: set[str] = set()
    for child in children:
        if not isinstance(child, Field | Section | SectionList):
            raise TypeError(f"{where}: schema entries must be Field or Section, got {child!r}")
        if child.name in seen:
            raise ValueError(f"{where}: duplicate config name {child.name!r}")
        seen.add(child.name)
    return tuple(children)


class Config:
    """Frozen result of `load_config`: attribute access, dotted item access, secrets masked in repr."""

    __slots__ = ("_secrets", "_values")

    _values: Mapping[str, Any]
    _secrets: frozenset[str]

    def __init__(self, values: Mapping[str, Any], secrets: frozenset[str] = frozenset()) -> None:
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_secrets", secrets)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"no config key {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("Config is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Config is immutable")

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Config) or part not in node._values:
                raise KeyError(dotted)
            node = node._values[part]
        return node

    def __contains__(self, dotted: object) -> bool:
        if not isinstance(dotted, str):
            return False
        try:
            self[dotted]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Config) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))

    def as_dict(self, *, reveal_secrets: bool = False) -> dict[str, Any]:
        """Plain nested dict; secrets are masked unless explicitly revealed."""
        out: dict[str, Any] = {}
        for name, value in self._values.items():
            if isinstance(value, Config):
                out[name] = value.as_dict(reveal_secrets=reveal_secrets)
            elif isinstance(value, tuple) and value and all(isinstance(item, Config) for item in value):
                out[name] = [item.as_dict(reveal_secrets=reveal_secrets) for item in value]
            elif name in self._secrets and not reveal_secrets and value is not None:
                out[name] = _MASK
            else:
                out[name] = value
        return out

    def __repr__(self) -> str:
        parts = []
        for name, value in self._values.items():
            shown = _MASK if name in self._secrets and value is not None else repr(value)
            parts.append(f"{name}={shown}")
        return f"Config({', '.join(parts)})"

    __str__ = __repr__


# --------------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys, which PyYAML otherwise resolves silently (last wins)."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("", f"config file does not exist: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read config file {path}: {exc}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError("", f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", f"config file {path} must contain a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _env_name(prefix: str, path: Sequence[str]) -> str:
    return prefix + "__".join(part.upper() for part in path)


def _collect_env_names(
    children: Sequence[Field | Section], prefix: str, path: tuple[str, ...], out: dict[str, tuple[str, ...]]
) -> None:
    for child in children:
        if isinstance(child, SectionList):
            continue
        child_path = (*path, child.name)
        out[_env_name(prefix, child_path)] = child_path
        if isinstance(child, Section):
            _collect_env_names(child.fields, prefix, child_path, out)


def _suggest(name: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _show(value: Any, secret: bool) -> str:
    return "the secret value" if secret else repr(value)


def parse_bool(value: str) -> bool:
    """Parse true/false/1/0/yes/no/on/off (any case); anything else is a ValueError."""
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false/yes/no/1/0), got {value!r}")


def _coerce_scalar(tp: type, value: Any, secret: bool) -> Any:
    shown = _show(value, secret)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            try:
                return parse_bool(value)
            except ValueError:
                pass
        raise ValueError(f"expected a boolean (true/false/yes/no/1/0), got {shown}")
    if tp is int:
        # bool is an int subclass; `port: true` is a typo, not 1.
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip(), 10)
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {shown}")
    if tp is float:
        result: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                result = None
        if result is None or not math.isfinite(result):
            raise ValueError(f"expected a finite number, got {shown}")
        return result
    if isinstance(value, str):
        return value
    # YAML turns `password: 1234` into an int; say how to fix it rather than guessing.
    raise ValueError(f"expected a string, got {type(value).__name__} {shown} (quote it in YAML)")


def _coerce(fld: Field, value: Any) -> Any:
    item = _list_item_type(fld.type)
    if item is None:
        return _coerce_scalar(fld.type, value, fld.secret)
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected {_type_name(fld.type)}, got {type(value).__name__}")
    coerced = []
    for index, element in enumerate(value):
        try:
            coerced.append(_coerce_scalar(item, element, fld.secret))
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
    return tuple(coerced)


def _check_value(fld: Field, value: Any) -> Any:
    value = _coerce(fld, value)
    if fld.choices is not None and value not in fld.choices:
        allowed = ", ".join(repr(choice) for choice in fld.choices)
        raise ValueError(f"must be one of {allowed}, got {_show(value, fld.secret)}")
    if fld.min is not None and value < fld.min:
        raise ValueError(f"must be >= {fld.min}, got {_show(value, fld.secret)}")
    if fld.max is not None and value > fld.max:
        raise ValueError(f"must be <= {fld.max}, got {_show(value, fld.secret)}")
    if fld.validator is not None:
        replaced = fld.validator(value)
        if replaced is not None:
            value = replaced
    return value


def _resolve(
    children: Sequence[Field | Section],
    raw: Any,
    path: tuple[str, ...],
    env_values: Mapping[tuple[str, ...], tuple[str, str]],
) -> Config:
    dotted = ".".join(path)
    if raw is None:
        raw = {}  # `tls:` with nothing under it in YAML
    if not isinstance(raw, Mapping):
        raise ConfigError(dotted, f"expected a mapping of settings, got {type(raw).__name__}")

    names = [child.name for child in children]
    for key in raw:
        if key not in names:
            where = ".".join((*path, str(key)))
            raise ConfigError(where, f"unknown key{_suggest(str(key), names)}")

    values: dict[str, Any] = {}
    secrets: set[str] = set()
    for child in children:
        child_path = (*path, child.name)
        key = ".".join(child_path)
        if isinstance(child, Section):
            values[child.name] = _resolve(child.fields, raw.get(child.name), child_path, env_values)
            continue
        if isinstance(child, SectionList):
            values[child.name] = _resolve_list(child, raw.get(child.name, child.default), child_path)
            continue
        if child.secret:
            secrets.add(child.name)
        origin = ""
        if child_path in env_values:
            env_name, value = env_values[child_path]
            origin = f" (from environment variable {env_name})"
        elif child.name in raw:
            value = raw[child.name]
        elif child.required:
            hint = f" ({child.help})" if child.help else ""
            raise ConfigError(key, f"required key is missing{hint}")
        else:
            value = child.default
        if value is None and child.default is None:
            values[child.name] = None
            continue
        try:
            values[child.name] = _check_value(child, value)
        except ConfigError as exc:  # a validator such as parse_hostport that names its own key
            raise ConfigError(key, exc.reason + origin) from None
        except ValueError as exc:
            raise ConfigError(key, f"{exc}{origin}") from None
    return Config(values, frozenset(secrets))


def _resolve_list(child: SectionList, raw: Any, path: tuple[str, ...]) -> tuple[Config, ...]:
    key = ".".join(path)
    if raw is None:
        raw = []
    if not isinstance(raw, list | tuple):
        raise ConfigError(key, f"expected a list of mappings, got {type(raw).__name__}")
    if len(raw) < child.min_items:
        raise ConfigError(key, f"needs at least {child.min_items} item(s), got {len(raw)}")
    if child.max_items is not None and len(raw) > child.max_items:
        raise ConfigError(key, f"takes at most {child.max_items} item(s), got {len(raw)}")
    return tuple(_resolve(child.fields, item, (*path, str(index)), {}) for index, item in enumerate(raw))


def load_config(
    schema: Sequence[Field | Section] | Section,
    *,
    path: str | os.PathLike[str] | None = None,
    data: Mapping[str, Any] | None = None,
    env_prefix: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load, merge, coerce and validate configuration; raise ConfigError naming the first bad key.

    Precedence (later wins): defaults < YAML file at `path` < `data` < environment variables.
    With `env_prefix="AGENDA_DB"`, `api_addr` is overridden by AGENDA_DB_API_ADDR and `tls.cert` by
    AGENDA_DB_TLS__CERT. An unknown variable carrying the prefix is an error too, because a typo in
    an override is as silent as a typo in the file. `environ` defaults to os.environ.
    """
    children = schema.fields if isinstance(schema, Section) else _check_children(schema, "schema")
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(path)
    if data is not None:
        raw = _deep_merge(raw, data)

    env_values: dict[tuple[str, ...], tuple[str, str]] = {}
    if env_prefix:
        prefix = env_prefix if env_prefix.endswith("_") else env_prefix + "_"
        known: dict[str, tuple[str, ...]] = {}
        _collect_env_names(children, prefix, (), known)
        sections = {name for name, p in known.items() if _is_section(children, p)}
        source = os.environ if environ is None else environ
        for name in sorted(source):
            if not name.startswith(prefix):
                continue
            if name not in known:
                raise ConfigError(name, f"unknown environment variable{_suggest(name, list(known))}")
            if name in sections:
                dotted = ".".join(known[name])
                raise ConfigError(dotted, f"{name} names a section; set its keys with {name}__<KEY> instead")
            env_values[known[name]] = (name, source[name])

    return _resolve(children, raw, (), env_values)


def _is_section(children: Sequence[Field | Section], path: tuple[str, ...]) -> bool:
    node: Field | Section | None = None
    level: Sequence[Field | Section] = children
    for part in path:
        node = next(child for child in level if child.name == part)
        level = node.fields if isinstance(node, Section) else ()
    return isinstance(node, Section)


# --------------------------------------------------------------------------------------------------
# Validators and parsers


_HOSTNAME_RE: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$")


def parse_hostport(value: str, key: str = "address", *, allow_port_zero: bool = False) -> tuple[str, int]:
    """Split "host:port" or "[ipv6]:port" into (host, port); ConfigError naming `key` otherwise.

    IPv6 literals must be bracketed because "::1:80" is ambiguous. Port 0 (let the kernel choose) is
    refused unless `allow_port_zero`, since it is only meaningful for a listener.
    Usable directly as a `Field(validator=parse_hostport)`: the loader re-keys the error.
    """
    text = value.strip()
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise ConfigError(key, f"expected [ipv6]:port, got {value!r}")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(key, f"{host!r} is not a valid IPv6 address") from None
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise ConfigError(key, f"expected host:port, got {value!r}")
        if ":" in host:
            raise ConfigError(key, f"IPv6 addresses must be bracketed, as in [::1]:80; got {value!r}")
        if not _HOSTNAME_RE.match(host):
            raise ConfigError(key, f"{host!r} is not a valid host name or address")
    if not port_text.isdigit():
        raise ConfigError(key, f"port must be a number, got {port_text!r}")
    port = int(port_text)
    low = 0 if allow_port_zero else 1
    if not low <= port <= 65535:
        raise ConfigError(key, f"port must be between {low} and 65535, got {port}")
    return host, port


def existing_file(value: str) -> None:
    """Validator: the path names a readable regular file (certificates, keys, CA bundles)."""
    path = Path(value)
    if not path.exists():
        raise ValueError(f"file does not exist: {value}")
    if not path.is_file():
        raise ValueError(f"not a regular file: {value}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"file is not readable: {value}")


def read_file(key: str, path: str | os.PathLike[str]) -> bytes:
    """The bytes of the file setting `key` names (a certificate, a key); ConfigError naming `key`."""
    file = Path(path)
    if not file.exists():
        raise ConfigError(key, f"file does not exist: {path}")
    if not file.is_file():
        raise ConfigError(key, f"not a regular file: {path}")
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(key, f"file is not readable: {path} ({exc.strerror})") from None
