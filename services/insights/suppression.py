"""Small-cell suppression, pure: counts under a district's threshold are withheld, and enough
other counts with them that no withheld count can be worked out from the totals and the counts
shown.

A table is a grid of counts with its row totals, column totals and grand total (a one-column
table has only the column's total). Each count sits on two lines (its row and its column; a row
total on the column of row totals, and so on), and each line adds up to its total. Seen as a
graph whose nodes are the lines and whose edges are the counts, a withheld count can be solved
for exactly when it is a bridge of the graph of withheld counts (no cycle of withheld counts
passes through it). So: withhold every count from 1 to threshold - 1 (primary), then while a
withheld count is a bridge, withhold one more count on one of its lines (complementary),
preferring the smallest non-zero one and one that closes a cycle. Zeros are shown (a zero
reveals no family); a total is withheld like any count.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

DEFAULT_THRESHOLD = 10

# A position in the full table: (row, column), where row == len(rows) is the row of column
# totals and column == len(columns) is the column of row totals.
Pos = tuple[int, int]


class Mark(StrEnum):
    shown = "shown"
    primary = "primary"  # a small count: shown as "<threshold"
    complementary = "complementary"  # withheld so a small count cannot be worked out


@dataclass(frozen=True)
class Masked:
    """A table's counts with their totals (``values[r][c]``, totals last) and a mark each."""

    values: tuple[tuple[int, ...], ...]
    marks: tuple[tuple[Mark, ...], ...]
    threshold: int

    def text(self, r: int, c: int) -> str:
        mark = self.marks[r][c]
        if mark == Mark.primary:
            return f"<{self.threshold}"
        if mark == Mark.complementary:
            return "*"
        return str(self.values[r][c])

    def shown(self, r: int, c: int) -> int | None:
        return self.values[r][c] if self.marks[r][c] == Mark.shown else None


def with_totals(counts: Sequence[Sequence[int]]) -> list[list[int]]:
    """The grid with its row totals (if it has more than one column) and column totals."""
    width = len(counts[0]) if counts else 0
    rows = [list(row) + ([sum(row)] if width > 1 else []) for row in counts]
    full_width = width + (1 if width > 1 else 0)
    totals = [sum(row[c] for row in rows) for c in range(full_width)]
    return [*rows, totals]


def suppress(counts: Sequence[Sequence[int]], threshold: int = DEFAULT_THRESHOLD) -> Masked:
    """``counts`` (rows of equal length, at least one column) with totals, suppressed."""
    if threshold < 1:
        raise ValueError("the threshold is at least 1")
    full = with_totals(counts)
    primary = {(r, c) for r, row in enumerate(full) for c, v in enumerate(row)
               if 0 < v < threshold}
    hidden = set(primary)
    while (bridge := _a_bridge(full, hidden)) is not None:
        hidden |= _complement(full, hidden, bridge)
    marks = tuple(
        tuple(Mark.primary if (r, c) in primary else
              Mark.complementary if (r, c) in hidden else Mark.shown
              for c in range(len(row)))
        for r, row in enumerate(full))
    return Masked(tuple(tuple(row) for row in full), marks, threshold)


def _nodes(full: list[list[int]], pos: Pos) -> tuple[tuple[str, int], tuple[str, int]]:
    """The two lines a count is on. A one-column table has no row totals: its rows are not
    lines (nothing adds up along them), so they are one node that constrains nothing."""
    r, c = pos
    return (("free", 0) if len(full[0]) == 1 else ("row", r)), ("col", c)


def _connected(full: list[list[int]], edges: set[Pos], start: tuple[str, int],
               goal: tuple[str, int]) -> bool:
    adjacent: dict[tuple[str, int], list[tuple[str, int]]] = {}
    for pos in edges:
        a, b = _nodes(full, pos)
        adjacent.setdefault(a, []).append(b)
        adjacent.setdefault(b, []).append(a)
    seen, todo = {start}, [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for nxt in adjacent.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def _a_bridge(full: list[list[int]], hidden: set[Pos]) -> Pos | None:
    """A withheld count that could be solved for, or None."""
    for pos in sorted(hidden):
        a, b = _nodes(full, pos)
        if not _connected(full, hidden - {pos}, a, b):
            return pos
    return None


def _complement(full: list[list[int]], hidden: set[Pos], bridge: Pos) -> set[Pos]:
    """The counts to withhold next: the cheapest path of counts joining the two lines of
    ``bridge`` other than itself (withheld counts cost nothing, a zero costs as much as a count
    at the threshold, other counts their value), so a cycle passes through it."""
    import heapq

    threshold = max(1, max((v for row in full for v in row if v), default=1))
    start, goal = _nodes(full, bridge)
    edges: dict[tuple[str, int], list[tuple[int, tuple[str, int], Pos]]] = {}
    for r, row in enumerate(full):
        for c, value in enumerate(row):
            if (r, c) == bridge:
                continue
            cost = 0 if (r, c) in hidden else (value if value else threshold)
            x, y = _nodes(full, (r, c))
            edges.setdefault(x, []).append((cost, y, (r, c)))
            edges.setdefault(y, []).append((cost, x, (r, c)))
    best: dict[tuple[str, int], int] = {start: 0}
    came: dict[tuple[str, int], tuple[tuple[str, int], Pos]] = {}
    queue = [(0, start)]
    while queue:
        cost, node = heapq.heappop(queue)
        if node == goal:
            break
        if cost > best.get(node, cost):
            continue
        for step, nxt, pos in edges.get(node, ()):
            if cost + step < best.get(nxt, cost + step + 1):
                best[nxt] = cost + step
                came[nxt] = (node, pos)
                heapq.heappush(queue, (cost + step, nxt))
    if goal not in came:  # cannot happen: every line of a table has another count on it
        raise AssertionError("no count left to withhold")
    path, node = set(), goal
    while node != start:
        node, pos = came[node]
        path.add(pos)
    return path - hidden


def revealed(masked: Masked) -> list[Pos]:
    """The withheld counts someone could solve for from what is shown (empty when the
    suppression holds): used by the tests, and by the pack as a last check."""
    full = [list(row) for row in masked.values]
    hidden = {(r, c) for r, row in enumerate(masked.marks) for c, m in enumerate(row)
              if m != Mark.shown}
    found = []
    for pos in sorted(hidden):
        a, b = _nodes(full, pos)
        if not _connected(full, hidden - {pos}, a, b):
            found.append(pos)
    return found
