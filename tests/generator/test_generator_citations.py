"""Reading [n] markers from answers, and the grammar that makes the local model end with one."""

from __future__ import annotations

from llama_cpp.llama_grammar import LlamaGrammar

from ragline.v1 import common_pb2
from ragline_generator.citations import SNIPPET_CHARS, citation_grammar, citations, cited_numbers, snippet


def test_single_grouped_and_adjacent_markers_are_read_in_order_of_first_mention() -> None:
    text = "Paris [2]. Also bananas [1, 3] and water [3][2]. Again [1]."
    assert cited_numbers(text, passages_used=3) == ([2, 1, 3], 0)


def test_numbers_outside_the_prompts_passages_are_dropped_and_counted() -> None:
    assert cited_numbers("A [0]. B [4]. C [2, 7]. D [1]", passages_used=3) == ([2, 1], 3)


def test_text_without_markers_or_with_other_brackets_cites_nothing() -> None:
    assert cited_numbers("No citation here [a] [ ] [1.5]", passages_used=3) == ([], 0)


def test_citations_carry_the_passages_ids_score_and_snippet() -> None:
    long_text = "word " * 100
    passages = [
        common_pb2.Passage(document_id="d1", chunk_id="c1", text="Short passage.", score=0.9),
        common_pb2.Passage(document_id="d2", chunk_id="c2", text=long_text, score=0.5),
    ]
    cited = citations([2, 1], passages)
    assert [(c.number, c.document_id, c.chunk_id) for c in cited] == [(2, "d2", "c2"), (1, "d1", "c1")]
    assert cited[1].snippet == "Short passage."
    assert abs(cited[0].score - 0.5) < 1e-6
    assert len(cited[0].snippet) <= SNIPPET_CHARS + 1 and cited[0].snippet.endswith("…")


def test_snippet_keeps_short_text_whole() -> None:
    assert snippet("abc") == "abc"


def test_citation_grammar_is_valid_gbnf_limited_to_the_given_passages() -> None:
    grammar = citation_grammar(3, 'I don\'t "know".')
    assert 'number ::= "1" | "2" | "3"' in grammar
    assert 'sentence ::= [^[\\n.]+ " [" number "]."' in grammar
    assert '"I don\'t \\"know\\"."' in grammar
    LlamaGrammar.from_string(grammar, verbose=False)
