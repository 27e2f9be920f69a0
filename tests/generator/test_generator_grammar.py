"""The citation grammar, run by llama.cpp's own grammar sampler over the bundled model's tokens.

Each text is tokenised as the model would write it and fed token by token: a token the grammar
forbids gets a logit of -inf from the sampler, exactly what stops the model writing it.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Iterator

import llama_cpp
import pytest
from llama_cpp import Llama

from ragline_generator.backends import bundled_model_path
from ragline_generator.citations import citation_grammar


@pytest.fixture(scope="module")
def vocabulary() -> Iterator[Llama]:
    model = Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    yield model
    model.close()


def _allows(model: Llama, grammar: str, text: str) -> bool:
    """Whether the grammar lets the model write `text` (as a prefix of its answer)."""
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    try:
        for token in model.tokenize(text.encode(), add_bos=False, special=False):
            data = (llama_cpp.llama_token_data * 1)(llama_cpp.llama_token_data(token, 0.0, 0.0))
            candidates = llama_cpp.llama_token_data_array(data, 1, -1, False)
            llama_cpp.llama_sampler_apply(sampler, ctypes.byref(candidates))
            if math.isinf(data[0].logit):
                return False
            llama_cpp.llama_sampler_accept(sampler, token)
        return True
    finally:
        llama_cpp.llama_sampler_free(sampler)


@pytest.mark.parametrize(
    "text",
    [
        "The ferry stops running at 4.2 metres [1].",
        "Tools, e.g. hammers, are sold in the U.S. [2].",
        "It rose by 3.5 per cent in 1973 [1]. Prices fell [3].",
        "I don't know.",
    ],
)
def test_decimals_abbreviations_and_two_cited_sentences_can_be_written(vocabulary: Llama, text: str) -> None:
    assert _allows(vocabulary, citation_grammar(3, "I don't know."), text)


@pytest.mark.parametrize(
    "text",
    [
        "It stops. Then it goes [1].",  # a period that ends a sentence without its marker
        "A [1]. B [2]. C [3].",  # a third sentence, where the small model starts repeating
        "It stops at 4 metres [4].",  # a passage that is not in the prompt
    ],
)
def test_uncited_sentences_a_third_sentence_and_unknown_passages_cannot(vocabulary: Llama, text: str) -> None:
    assert not _allows(vocabulary, citation_grammar(3, "I don't know."), text)
