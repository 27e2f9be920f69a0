"""Reading [n] markers from answers, and the grammar that makes the local model end with one."""

from __future__ import annotations

from llama_cpp.llama_grammar import LlamaGrammar

from ragline.snippets import SNIPPET_CHARS, snippet
from ragline.v1 import common_pb2
from ragline_generator.citations import (
    CitationRepairer,
    citation_grammar,
    citations,
    cited_numbers,
)


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
    assert 'sentence ::= piece+ "."? " [" number "]" "."? " "?' in grammar
    assert "root ::= " in grammar and grammar.split("\n")[0].endswith("| sentence sentence?")
    assert '"I don\'t \\"know\\"."' in grammar
    LlamaGrammar.from_string(grammar, verbose=False)


PASSAGES = [
    "At sea level, pure water boils at 100 degrees Celsius.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
]


def test_a_citation_is_moved_to_the_passage_that_holds_the_sentence() -> None:
    repairer = CitationRepairer(PASSAGES)
    released = repairer.feed("The Eiffel Tower is in Paris, France [1].")
    assert released == "The Eiffel Tower is in Paris, France [2]."
    assert repairer.repaired == 1


def test_text_streams_through_and_only_an_unfinished_marker_waits() -> None:
    repairer = CitationRepairer(PASSAGES)
    assert repairer.feed("Pure water boils at 100 degrees") == "Pure water boils at 100 degrees"
    assert repairer.feed(" Celsius [") == " Celsius"
    assert (
        repairer.feed("1]. The tower stands in Paris, France [") == " [1]. The tower stands in Paris, France"
    )
    assert repairer.feed("1].") == " [2]."
    assert repairer.flush() == ""
    assert repairer.repaired == 1
    assert (
        repairer.text == "Pure water boils at 100 degrees Celsius [1]. The tower stands in Paris, France [2]."
    )


def test_a_bracket_that_is_not_a_marker_is_released_and_repair_can_be_off() -> None:
    repairer = CitationRepairer(PASSAGES)
    assert repairer.feed("See [the appendix") == "See"
    assert repairer.feed(" for the full table") == " [the appendix for the full table"
    assert repairer.flush() == ""
    assert CitationRepairer(PASSAGES, enabled=False).feed("Paris, France [1].") == "Paris, France [1]."


def test_a_weakly_supported_move_is_not_made() -> None:
    repairer = CitationRepairer(PASSAGES)
    # "tower" is in passage 2, but "water" and "boils" are in passage 1, the one cited.
    assert repairer.feed("Water boils near the tower [1].") == "Water boils near the tower [1]."


def test_a_marker_whose_sentence_shares_nothing_with_any_passage_is_dropped() -> None:
    repairer = CitationRepairer(PASSAGES)
    assert repairer.feed("Bananas grow quickly [2]. Water boils at 100 degrees [2].") == (
        "Bananas grow quickly. Water boils at 100 degrees [1]."
    )
    assert repairer.repaired == 2
    first, second = repairer.sentences
    assert (first.text, list(first.citations), first.supported) == ("Bananas grow quickly", [], False)
    assert (second.text, list(second.citations), second.supported) == (
        "Water boils at 100 degrees",
        [1],
        True,
    )


def test_a_number_that_no_cited_passage_holds_is_never_supported() -> None:
    repairer = CitationRepairer(PASSAGES)
    repairer.feed("Pure water boils at 90 degrees Celsius [1]. The tower is in Paris [2].")
    repairer.flush()
    wrong, right = repairer.sentences
    assert not wrong.supported and list(wrong.unsupported_numbers) == ["90"]
    assert wrong.support > 0.5
    assert right.supported and not right.unsupported_numbers


def test_adjacent_markers_join_one_sentence_and_uncited_text_is_unsupported() -> None:
    repairer = CitationRepairer(PASSAGES, enabled=False)
    repairer.feed("Water boils at 100 degrees in Paris [1][2]. Then it rains")
    repairer.flush()
    joined, trailing = repairer.sentences
    assert list(joined.citations) == [1, 2] and joined.supported
    assert (trailing.text, list(trailing.citations), trailing.supported) == ("Then it rains", [], False)
