"""``$ref`` in user JSON Schemas: never fetched, and refused at load when not local.

jsonschema resolves a ``$ref`` to another document by downloading it (``http://``,
``https://``) on every validation unless told otherwise: a schema in a case file would make
scoring, ``--replay`` and ``rescore`` reach the network. evalrun refuses such schemas when
they load (``validate`` says which ``$ref``), and builds every validator on a registry whose
retrieval always fails, so nothing is fetched even for a reference that slipped through.

Local references resolve: ``#/...`` pointers, anchors, and documents embedded in the schema
itself with ``$id`` (bundled schemas), plus the JSON Schema metaschemas, which jsonschema
ships.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urldefrag, urljoin

if TYPE_CHECKING:
    from referencing import Registry

__all__ = ["no_fetch_registry", "remote_refs"]

_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")
# Keywords whose values are data, not subschemas: a "$ref" inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})


def _walk(node: Any, base: str, ids: set[str], refs: list[tuple[str, str]], depth: int) -> None:
    if depth > 200:  # deeper than any real schema; what lies below is not looked at
        return
    if isinstance(node, list):
        for item in node:
            _walk(item, base, ids, refs, depth + 1)
        return
    if not isinstance(node, dict):
        return
    ident = node.get("$id", node.get("id"))
    if isinstance(ident, str) and not ident.startswith("#"):
        base = urljoin(base, ident)
        ids.add(urldefrag(base).url)
    for key in _REF_KEYWORDS:
        value = node.get(key)
        if isinstance(value, str):
            refs.append((value, base))
    for key, value in node.items():
        if key not in _DATA_KEYWORDS:
            _walk(value, base, ids, refs, depth + 1)


def _known_documents() -> set[str]:
    from jsonschema_specifications import REGISTRY

    return {urldefrag(uri).url for uri in REGISTRY}


def remote_refs(schema: Any) -> Iterator[str]:
    """Every ``$ref`` (``$dynamicRef``, ``$recursiveRef``) of ``schema`` that needs another document."""
    ids: set[str] = set()
    refs: list[tuple[str, str]] = []
    _walk(schema, "", ids, refs, 0)
    known: set[str] | None = None
    for ref, base in refs:
        target = urldefrag(urljoin(base, ref)).url
        if target == "" or target in ids:
            continue
        if known is None:
            known = _known_documents()
        if target not in known:
            yield ref


def _refuse(uri: str) -> Any:
    from referencing.exceptions import NoSuchResource

    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


def no_fetch_registry() -> Registry[Any]:
    """A ``referencing`` registry that never retrieves anything (jsonschema adds its metaschemas)."""
    from referencing import Registry

    return Registry(retrieve=_refuse)  # type: ignore[call-arg]
