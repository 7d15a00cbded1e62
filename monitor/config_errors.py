"""How a config file's validation errors are told: at the path the user wrote, in words, with the
nearest valid name for a misspelt one, and never with a secret's value. Pure.

pydantic reports a location such as ``('warehouse', 'postgres', 'dns')`` and a message such as
"Extra inputs are not permitted"; the user wrote ``warehouse.dns`` and meant ``dsn``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

# fields whose values are never repeated in a message
SECRET_FIELDS = frozenset(
    {"token", "dsn", "url", "access_token", "client_secret", "password", "app_token",
     "signing_secret"}
)  # fmt: skip
# the tags pydantic puts in a location for a validator it ran; the user never wrote them
_VALIDATOR_TAGS = ("function-after", "function-before")


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def nearest(name: str, known: Sequence[str]) -> str | None:
    """The known name ``name`` is most likely a misspelling of, if one is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, known: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` for the nearest known name, or nothing."""
    close = nearest(name, known)
    return f"; did you mean {close!r}?" if close else ""


def field_names(model: type[BaseModel]) -> list[str]:
    """The names a user writes for ``model``'s fields (aliases where they have one)."""
    return [field.alias or name for name, field in model.model_fields.items()]


def _unwrap(node: Any) -> Any:
    """``node`` without Annotated metadata and an Optional's None (None for other unions)."""
    while True:
        origin = get_origin(node)
        if origin is Annotated:
            node = get_args(node)[0]
        elif origin in (Union, UnionType):
            members = [a for a in get_args(node) if a is not type(None)]
            if len(members) != 1:
                return None
            node = members[0]
        else:
            return node


class Wording:
    """Validation errors of ``root`` (a pydantic model) as a user reads them.

    ``tags``: the values of a discriminated union's tag field (a warehouse's ``kind``) and the
    model each selects; ``tag_field`` is that field, ``tag_name`` what a value of it is called
    and ``tag_choices`` its values in words, for an unknown one.
    """

    def __init__(
        self,
        root: type[BaseModel],
        tags: Mapping[str, type[BaseModel]],
        *,
        tag_field: str,
        tag_name: str,
        tag_choices: str,
    ) -> None:
        self.root = root
        self.tags = dict(tags)
        self.tag_field = tag_field
        self.tag_name = tag_name
        self.tag_choices = tag_choices

    def where(self, error: Mapping[str, Any]) -> str:
        """The path the user wrote: ``checks[3].grain``; an unknown tag is at its field."""
        out = ""
        for part in error["loc"]:
            if isinstance(part, int):
                out += f"[{part}]"
            elif part not in self.tags and part not in _VALIDATOR_TAGS:
                out = join(out, part)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            out = join(out, self.tag_field)
        return out

    def describe(self, error: Mapping[str, Any]) -> str:
        """The problem in words, with the value given unless it may be a secret."""
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            name = str(error["loc"][-1])
            hint = did_you_mean(name, self._known_fields(tuple(error["loc"])))
            return (
                f"unknown field{hint}"
                if hint
                else "unknown field (check the spelling; the README lists every field)"
            )
        if error["type"] == "union_tag_invalid":
            tag = str(error.get("ctx", {}).get("tag", ""))
            return (
                f"unknown {self.tag_name} {tag!r}: use {self.tag_choices}"
                f"{did_you_mean(tag, list(self.tags))}"
            )
        if error["type"] == "union_tag_not_found":
            return f"required field is missing: {self.tag_choices}"
        if error["type"] == "missing":
            message = "required field is missing"
        value = error.get("input")
        if SECRET_FIELDS & {str(part) for part in error["loc"]}:
            # a secret's own validator may quote it: say what is wrong, never what was given
            return message.split(" (got ")[0].split(": '")[0]
        if error["type"] != "missing" and isinstance(value, str | int | float):
            message += f" (got {value!r})"
        return message

    def problem(self, error: Mapping[str, Any], prefix: str = "") -> str:
        """``path: problem``, the path under ``prefix``."""
        return f"{join(prefix, self.where(error)) or '(top level)'}: {self.describe(error)}"

    def _step(self, node: Any, part: int | str) -> Any:
        """The type found at ``part`` inside the type ``node`` (None when it cannot be told)."""
        if isinstance(part, str) and part in self.tags:
            return self.tags[part]  # pydantic's tag of the union member it tried
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            field = node.model_fields.get(str(part))
            if field is None:
                by_alias = {f.alias: f for f in node.model_fields.values() if f.alias}
                field = by_alias.get(str(part))
            return None if field is None else field.annotation
        origin, args = get_origin(node), get_args(node)
        if origin is list and isinstance(part, int) and args:
            return args[0]
        if origin is dict and isinstance(part, str) and len(args) == 2:
            return args[1]
        return None

    def _known_fields(self, loc: tuple[int | str, ...]) -> list[str]:
        """The valid field names next to the unknown one at ``loc``."""
        node: Any = self.root
        for part in loc[:-1]:
            node = self._step(node, part)
            if node is None:
                return []
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            return field_names(node)
        return []
