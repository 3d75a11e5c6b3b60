"""Stop sequences on their own: what is held back, when a stream has ended, and which rows a step must look at."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine import stops


@pytest.mark.parametrize(("text", "seqs", "held"), [
    ("hello wor", ("world",), 3),  # "wor" may still become "world"
    ("hello", ("world",), 0),
    ("abab", ("abc",), 2),  # the longest end that is a prefix: "ab", not "b"
    ("xa", ("ab", "aab"), 1),
    ("xaa", ("ab", "aab"), 2),  # "aa" for the second sequence beats "a" for the first
    ("world", ("world",), 0),  # a whole match is not a proper prefix: ending() finds it
    ("", ("ab",), 0),
    ("a", ("a",), 0),  # a one-character sequence never holds anything back
])
def test_held_suffix_is_the_longest_end_that_could_still_become_a_stop_sequence(text, seqs, held):
    assert stops.held_suffix(text, seqs) == held


def test_ending_is_the_longest_stop_sequence_the_text_ends_with():
    assert stops.ending("to be or not", ("not", "or not", "be")) == 6
    assert stops.ending("to be or no", ("not",)) == 0
    assert stops.ending("abc", ()) == 0


def test_sendable_holds_back_a_possible_start_and_drops_the_stop_sequence_at_the_end():
    assert stops.sendable("hello wor", ("world",), 0, final=False) == 6
    assert stops.sendable("hello wor", (), 0, final=False) == 9
    assert stops.sendable("hello world", ("world",), 5, final=True) == 6  # ended by the stop sequence
    assert stops.sendable("hello wor", ("world",), 0, final=True) == 9  # ended by max_tokens: nothing held back


def test_the_table_flags_only_rows_whose_new_id_ends_one_of_their_own_sequences():
    texts = ["\ufffd", "a", "b", "c"]
    table = stops.StopTable(texts, n_slots=3)
    table.admit(0, ("ab",))
    table.admit(2, ("c", "xa"))
    slots, ids = np.array([0, 1, 2]), np.array([2, 2, 1])  # slot 0 read "b", slot 1 "b", slot 2 "a"
    assert table.flagged(slots, ids) == [0, 2]
    assert table.flagged(slots, np.array([1, 3, 2])) == []
    table.release(2)
    assert table.flagged(slots, ids) == [0]


def test_a_stop_sequence_ending_in_a_character_outside_the_vocabulary_flags_nothing():
    table = stops.StopTable(["\ufffd", "a"], n_slots=1)
    table.admit(0, ("a~",))
    assert table.flagged(np.array([0]), np.array([1])) == []
