"""Small-cell suppression (services/insights/suppression.py), checked against an independent
solver: for every table, no withheld count can be worked out exactly from the counts shown and
the fact that every row and column adds up to its total (linear algebra over the rationals,
not the module's own graph reasoning)."""

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.insights.suppression import Mark, Masked, suppress, with_totals


def _rank(rows: list[list[Fraction]]) -> int:
    rows = [r[:] for r in rows]
    rank, width = 0, len(rows[0]) if rows else 0
    for col in range(width):
        pivot = next((i for i in range(rank, len(rows)) if rows[i][col] != 0), None)
        if pivot is None:
            continue
        rows[rank], rows[pivot] = rows[pivot], rows[rank]
        for i in range(len(rows)):
            if i != rank and rows[i][col] != 0:
                factor = rows[i][col] / rows[rank][col]
                rows[i] = [a - factor * b for a, b in zip(rows[i], rows[rank], strict=True)]
        rank += 1
    return rank


def solvable(masked: Masked) -> list[tuple[int, int]]:
    """The withheld counts whose value the table's equations fix."""
    values = masked.values
    height, width = len(values), len(values[0])
    hidden = [(r, c) for r in range(height) for c in range(width)
              if masked.marks[r][c] != Mark.shown]
    index = {pos: i for i, pos in enumerate(hidden)}
    lines: list[list[tuple[tuple[int, int], int]]] = []
    if width == 1:
        lines.append([((r, 0), 1) for r in range(height - 1)] + [((height - 1, 0), -1)])
    else:
        for r in range(height):
            lines.append([((r, c), 1) for c in range(width - 1)] + [((r, width - 1), -1)])
        for c in range(width):
            lines.append([((r, c), 1) for r in range(height - 1)] + [((height - 1, c), -1)])
    matrix = []
    for line in lines:
        row = [Fraction(0)] * len(hidden)
        for pos, sign in line:
            if pos in index:
                row[index[pos]] += sign
        if any(row):
            matrix.append(row)
    base = _rank(matrix) if matrix else 0
    found = []
    for pos, i in index.items():
        unit = [Fraction(int(j == i)) for j in range(len(hidden))]
        if _rank([*matrix, unit]) == base:
            found.append(pos)
    return found


def test_a_small_cell_in_a_row_with_its_total_is_not_given_away_by_subtraction() -> None:
    # Without complementary suppression 23 - 20 would give the 3 away.
    masked = suppress([[3, 20], [15, 40]], 10)
    assert masked.text(0, 0) == "<10"
    assert masked.marks[0][1] != Mark.shown or masked.marks[0][2] != Mark.shown
    assert solvable(masked) == []


def test_a_single_small_count_in_a_list_hides_another_not_the_total() -> None:
    masked = suppress([[3], [20], [15]], 10)
    assert [masked.text(r, 0) for r in range(4)] == ["<10", "20", "*", "38"]
    assert solvable(masked) == []


def test_a_small_total_is_withheld_too() -> None:
    masked = suppress([[2], [3]], 10)
    assert [masked.text(r, 0) for r in range(3)] == ["<10", "<10", "<10"]


def test_counts_at_the_threshold_and_zeros_are_shown() -> None:
    masked = suppress([[10, 0], [12, 30]], 10)
    assert all(m == Mark.shown for row in masked.marks for m in row)
    assert masked.values == tuple(tuple(r) for r in with_totals([[10, 0], [12, 30]]))


def test_the_threshold_is_the_districts() -> None:
    assert suppress([[5], [30]], 5).text(0, 0) == "5"
    assert suppress([[5], [30]], 6).text(0, 0) == "<6"


def test_two_small_cells_in_one_column_protect_each_other_but_not_across_rows() -> None:
    masked = suppress([[4, 50, 60], [6, 30, 40], [11, 12, 13]], 10)
    assert solvable(masked) == []
    assert masked.text(0, 0) == "<10" and masked.text(1, 0) == "<10"


grids = st.integers(1, 6).flatmap(lambda width: st.lists(
    st.lists(st.one_of(st.integers(0, 12), st.integers(0, 200)), min_size=width,
             max_size=width), min_size=1, max_size=7))


@settings(max_examples=300, deadline=None)
@given(grids, st.integers(1, 15))
def test_no_withheld_count_can_be_worked_out(counts: list[list[int]], threshold: int) -> None:
    masked = suppress(counts, threshold)
    full = with_totals(counts)
    for r, row in enumerate(full):
        for c, value in enumerate(row):
            if 0 < value < threshold:
                assert masked.marks[r][c] == Mark.primary
                assert masked.text(r, c) == f"<{threshold}"
            elif masked.marks[r][c] == Mark.shown:
                assert masked.text(r, c) == str(value)
    assert solvable(masked) == []
