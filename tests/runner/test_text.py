"""Sentence splitting with offsets, the S-stemmer, citation markers and lexical support."""

from __future__ import annotations

from ragline.runner.text import answer_sentences, markers, s_stem, split_sentences, strip_markers, support, terms


def test_sentences_keep_exact_offsets() -> None:
    text = 'Hello world. This is (a test).\n\nA list item\n- bullet one! Next? "Quoted." End'
    got = split_sentences(text)
    assert [s.text for s in got] == ["Hello world.", "This is (a test).", "A list item", "- bullet one!", "Next?",
                                     '"Quoted."', "End"]
    assert all(text[s.start:s.end] == s.text for s in got)


def test_s_stemmer_rules() -> None:  # Harman, JASIS 1991
    assert [s_stem(w) for w in ("colonies", "hives", "bees", "aloes", "bus", "glass", "queens", "is")] == [
        "colony", "hive", "bee", "aloe", "bus", "glass", "queen", "is"]
    assert terms("How many bees are in the colonies?") == ["bee", "colony"]


def test_answer_sentences_and_markers() -> None:
    answer = "The standard method is the alcohol wash: [1] The mite is bad. [2] Bees [1] and wasps [2, 3] sting."
    assert answer_sentences(answer) == ["The standard method is the alcohol wash: [1]", "The mite is bad. [2]",
                                        "Bees [1] and wasps [2, 3] sting."]
    assert markers(answer) == [1, 2, 1, 2, 3]
    assert strip_markers("Bees [1] and wasps [2, 3] sting.") == "Bees and wasps sting."


def test_support_is_the_share_of_content_terms() -> None:
    chunk = set(terms("The pump must be primed with water before the first start."))
    assert support("Prime the pump with water [1].", chunk) == 2 / 3  # prime != primed
    assert support("The pump needs water.", chunk) == 2 / 3
    assert support("It is.", chunk) == 1.0  # no content terms
