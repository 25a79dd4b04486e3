"""Cohort rules: a small, checked SQL predicate language over log fields.

A stage's ``cohort`` is written like a SQL ``WHERE`` clause (``tenant_tier = 'internal'``,
``region IN ('eu', 'uk') AND NOT queue LIKE 'batch%'``). It is parsed with sqlglot and only
this subset is accepted — field names, string/number/boolean literals, comparisons,
``IN``, ``LIKE``, ``IS [NOT] NULL``, ``AND``/``OR``/``NOT`` — then translated to an ibis
expression, so the same rule runs on DuckDB, PostgreSQL or a warehouse and user text never
reaches a query as SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalrun.project.config import VERSION_LABELS

if TYPE_CHECKING:
    import ibis.expr.types as ir

    from evalrun.watch.plan import Source

BASE_FIELDS: tuple[str, ...] = ("cohort", "session_id", "response_format", *VERSION_LABELS)
"""Normalised fields every cohort rule may use (plus the source's ``cohort_fields``)."""


def allowed_fields(source: Source) -> list[str]:
    """Field names a cohort rule over ``source`` may mention."""
    return sorted({*BASE_FIELDS, *source.cohort_fields})


def _parse(rule: str) -> Any:
    import sqlglot
    from sqlglot.errors import ParseError

    try:
        tree = sqlglot.parse_one(rule, read="postgres")
    except ParseError as exc:
        first = exc.errors[0]["description"] if exc.errors else str(exc)
        raise ValueError(f"cannot parse cohort rule: {first}") from None
    return tree


def check_cohort_rule(rule: str, source: Source) -> None:
    """Raise ValueError (one line) unless ``rule`` is a valid predicate over allowed fields."""
    _translate(_parse(rule), set(allowed_fields(source)), None)


def cohort_filter(rule: str, source: Source, table: ir.Table) -> ir.BooleanValue:
    """The ibis boolean expression for ``rule`` over the normalised ``table``."""
    return _translate(_parse(rule), set(allowed_fields(source)), table)


def _translate(node: Any, fields: set[str], t: Any) -> Any:
    from sqlglot import exp

    def lit(n: Any) -> Any:
        if isinstance(n, exp.Literal):
            if n.is_string:
                return n.this
            text = str(n.this)
            return float(text) if any(c in text for c in ".eE") else int(text)
        if isinstance(n, exp.Boolean):
            return bool(n.this)
        if isinstance(n, exp.Neg) and isinstance(n.this, exp.Literal) and not n.this.is_string:
            return -lit(n.this)
        raise ValueError(f"cohort rule: expected a literal value, found {n.sql()!r}")

    def col(n: Any) -> Any:
        if not isinstance(n, exp.Column) or n.table:
            raise ValueError(f"cohort rule: expected a field name, found {n.sql()!r}")
        name = n.name
        if name not in fields:
            raise ValueError(
                f"cohort rule: unknown field {name!r} (known: {', '.join(sorted(fields))}; "
                "declare others in source.cohort_fields)"
            )
        return None if t is None else t[name]

    def go(n: Any) -> Any:
        if isinstance(n, exp.Paren):
            return go(n.this)
        if isinstance(n, exp.And):
            a, b = go(n.left), go(n.right)
            return None if t is None else a & b
        if isinstance(n, exp.Or):
            a, b = go(n.left), go(n.right)
            return None if t is None else a | b
        if isinstance(n, exp.Not):
            a = go(n.this)
            return None if t is None else ~a
        ops = {exp.EQ: "__eq__", exp.NEQ: "__ne__", exp.GT: "__gt__", exp.GTE: "__ge__",
               exp.LT: "__lt__", exp.LTE: "__le__"}
        for klass, method in ops.items():
            if isinstance(n, klass):
                c, v = col(n.left), lit(n.right)
                return None if t is None else getattr(c, method)(v)
        if isinstance(n, exp.In):
            c = col(n.this)
            values = [lit(v) for v in n.expressions]
            if not values:
                raise ValueError("cohort rule: IN needs at least one value")
            return None if t is None else c.isin(values)
        if isinstance(n, exp.Like | exp.ILike):
            c, v = col(n.this), lit(n.expression)
            if not isinstance(v, str):
                raise ValueError("cohort rule: LIKE needs a string pattern")
            if t is None:
                return None
            return c.ilike(v) if isinstance(n, exp.ILike) else c.like(v)
        if isinstance(n, exp.Is) and isinstance(n.expression, exp.Null):
            c = col(n.this)
            if t is None:
                return None
            return c.notnull() if n.args.get("negate") else c.isnull()
        raise ValueError(f"cohort rule: {n.sql()!r} is not supported (use comparisons, IN, LIKE, "
                         "IS NULL, AND, OR, NOT)")

    return go(node)
