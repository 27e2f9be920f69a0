"""Every search and upsert statement names the collection key on each table distributed by it.

deploy/kubernetes/README.md shows how to distribute `documents`, `chunks` and `chunk_terms` by
`collection_id` with Citus, which routes a statement to one shard only if every distributed table
in it is pinned to one collection: `alias.collection_id = <literal or $n>`, or equal to the key of
another reference that is. These tests read the statements the retriever really sends (the search
builders' output, and the SQL literal of every call in document_store.py) and check that.

The check reads SQL with a tokenizer, not a full parser, and is strict where that could mislead:
each reference of a distributed table needs an equality of its own (two references with the same
alias need two), the equalities must connect it to a constant, and a statement with an OR (where
an equality might not hold) fails outright.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections import Counter

import pytest

from ragline_retriever import bm25_top_k, document_store
from ragline_retriever.search import (
    hybrid_search_sql,
    keyword_hits_sql,
    keyword_search_sql,
    vector_candidates_sql,
    vector_search_sql,
)

DISTRIBUTED = {"documents", "chunks", "chunk_terms"}
COLLECTION = 7
# A compiled metadata filter reads both tables' metadata, as ragline_retriever.filters' do.
CONDITION = "(d.metadata || c.metadata) @> $20"
KEYWORDS = {
    "where",
    "join",
    "on",
    "cross",
    "left",
    "inner",
    "order",
    "group",
    "limit",
    "set",
    "using",
    "returning",
}
TOKEN = re.compile(r"\$\d+|[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)?|\d+|<=>|\|\||[=(),<>@:*+-/]")


def tokens(sql: str) -> list[str]:
    """The statement's tokens, string literals and comments removed."""
    sql = re.sub(r"'(?:[^']|'')*'", "''", sql)
    sql = re.sub(r"--[^\n]*", "", sql)
    return TOKEN.findall(sql)


def unpinned(sql: str) -> list[str]:
    """The references of distributed tables in `sql` that no equality pins to one collection."""
    words = tokens(sql)
    lowered = [w.lower() for w in words]
    assert "or" not in lowered, "an OR can void an equality: the check cannot vouch for this statement"
    references: list[str] = []
    for i, word in enumerate(lowered):
        if word not in DISTRIBUTED or (
            i > 0 and lowered[i - 1] in {"into"} and lowered[i + 1 : i + 2] == ["("]
        ):
            continue
        alias = (
            words[i + 2] if lowered[i + 1 : i + 2] == ["as"] else words[i + 1] if i + 1 < len(words) else ""
        )
        references.append(word if not alias or alias.lower() in KEYWORDS | {",", ")", "("} else alias)
    # INSERT INTO t (columns): the key is among the columns.
    for match in re.finditer(r"insert into (\w+) \(([^)]*)\)", " ".join(lowered).replace(" , ", ", ")):
        if match.group(1) in DISTRIBUTED and "collection_id" not in match.group(2).replace(" ", "").split(
            ","
        ):
            references.append(match.group(1))
    # Equalities on a key: `a.collection_id = x` or `x = a.collection_id` (unqualified: the table's own).
    anchored: set[str] = set()
    links: list[tuple[str, str]] = []
    pinned: Counter[str] = Counter()
    for i, word in enumerate(words):
        if word != "=":
            continue
        left, right = words[i - 1], words[i + 1]
        for key, other in ((left, right), (right, left)):
            if not key.endswith("collection_id"):
                continue
            owner = key.rpartition(".")[0] or "*"
            pinned[owner] += 1
            if re.fullmatch(r"\$\d+|\d+", other):
                anchored.add(owner)
            elif other.endswith(".collection_id"):
                links.append((owner, other.rpartition(".")[0]))
    # Keys equal to an anchored key are anchored too.
    changed = True
    while changed:
        changed = False
        for a, b in links:
            if (a in anchored) != (b in anchored):
                anchored |= {a, b}
                changed = True
    missing = []
    for name, count in Counter(references).items():
        owner = "*" if name in DISTRIBUTED else name
        if owner not in anchored or pinned[owner] < count:
            missing.append(name)
    return missing


def search_statements() -> dict[str, str]:
    return {
        "vector": vector_search_sql(COLLECTION, 8),
        "vector, filtered": vector_search_sql(COLLECTION, 8, CONDITION),
        "keyword": keyword_hits_sql(COLLECTION),
        "keyword, filtered": keyword_search_sql(COLLECTION, CONDITION),
        "hybrid": hybrid_search_sql(COLLECTION, 8),
        "hybrid, filtered": hybrid_search_sql(COLLECTION, 8, CONDITION),
        "hybrid, vector list read first": hybrid_search_sql(COLLECTION, 8, vector_ranked=True),
        "hybrid's vector list": vector_candidates_sql(COLLECTION, 8),
        "keyword lookups (bm25_top_k)": bm25_top_k._LOOKUP_SQL,
        "keyword terms and their cache signatures": bm25_top_k._CACHED_TERMS_SQL,
        "posting cache: block rows": bm25_top_k._BLOCKS_SQL,
        "posting cache: block row versions": bm25_top_k._VERSIONS_SQL,
        "posting cache: some block rows": bm25_top_k._SOME_BLOCKS_SQL,
    }


def document_store_statements() -> dict[str, str]:
    """The SQL literal of every `conn.<method>(sql, ...)` call in document_store.py, by line.

    Names formatted into an f-string are replaced by their module-level values.
    """
    module = inspect.getsource(document_store)
    statements = {}
    for node in ast.walk(ast.parse(module)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args):
            continue
        if node.func.attr not in {"fetch", "fetchrow", "fetchval", "execute", "executemany"}:
            continue
        first = node.args[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            statements[f"line {node.lineno}"] = first.value
        elif isinstance(first, ast.JoinedStr):
            parts = []
            for part in first.values:
                if isinstance(part, ast.Constant):
                    parts.append(str(part.value))
                else:
                    assert isinstance(part, ast.FormattedValue) and isinstance(part.value, ast.Name)
                    parts.append(str(getattr(document_store, part.value.id)))
            statements[f"line {node.lineno}"] = "".join(parts)
    return statements


@pytest.mark.parametrize(("name", "sql"), list(search_statements().items()))
def test_every_search_statement_pins_each_distributed_table_to_the_collection(name: str, sql: str) -> None:
    assert unpinned(sql) == []


def test_every_document_statement_pins_each_distributed_table_to_the_collection() -> None:
    statements = document_store_statements()
    assert len(statements) >= 12, "the statements were not found"
    assert {where: unpinned(sql) for where, sql in statements.items() if unpinned(sql)} == {}
    # Binary COPY of new chunks writes the key too.
    assert "collection_id" in document_store._COPY_COLUMNS


@pytest.mark.parametrize(
    ("sql", "missing"),
    [
        (
            "SELECT 1 FROM chunks AS c JOIN documents AS d ON d.id = c.document_id WHERE c.collection_id = $1",
            ["d"],
        ),
        ("DELETE FROM chunks WHERE document_id = $1 AND ordinal >= $2", ["chunks"]),
        ("UPDATE documents SET metadata = $2 WHERE id = $1", ["documents"]),
        ("INSERT INTO chunks (document_id, ordinal) VALUES ($1, $2)", ["chunks"]),
        # One equality for two references of the same alias pins only one of them.
        (
            "SELECT 1 FROM chunks AS c WHERE c.collection_id = 3 "
            "UNION ALL SELECT 1 FROM chunks AS c WHERE c.document_id = 1",
            ["c"],
        ),
        # Keys equal to each other but to no constant.
        ("SELECT 1 FROM chunks AS c JOIN documents AS d ON d.collection_id = c.collection_id", ["c", "d"]),
        (
            "SELECT 1 FROM chunks AS c JOIN documents AS d ON d.collection_id = c.collection_id AND c.collection_id = 3",
            [],
        ),
    ],
)
def test_the_check_finds_statements_without_the_key(sql: str, missing: list[str]) -> None:
    assert unpinned(sql) == missing


def test_the_check_refuses_a_statement_with_or() -> None:
    with pytest.raises(AssertionError, match="OR"):
        unpinned("SELECT 1 FROM chunks WHERE collection_id = $1 OR true")
