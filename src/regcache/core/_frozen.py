"""An immutable, hashable string mapping for frozen values (parameters, annotations)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class FrozenStrMap(Mapping[str, str]):
    """An immutable, hashable ``str -> str`` mapping that keeps its order.

    Frozen attrs values (challenge parameters, descriptor annotations) hold
    these so they stay hashable.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str] | Iterable[tuple[str, str]] = ()) -> None:
        self._items: dict[str, str] = dict(items)

    def __getitem__(self, key: str) -> str:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return self._items == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenStrMap({self._items!r})"
