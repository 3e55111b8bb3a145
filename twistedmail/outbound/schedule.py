"""
Which queue entry is due next, in logarithmic time.

After an outage the queue may hold a hundred thousand messages, and the
runner asks "what is due now, and when is the next one?" every time an
attempt finishes.  Scanning (or sorting) every entry for that makes a
backlog quadratic; a heap keyed on the next attempt time answers in
O(log n).  Entries change time or disappear far more often than they are
popped, so the heap is never searched: a change pushes a new item and the
old one becomes stale, recognised by its token and dropped when it reaches
the top (lazy invalidation).  When stale items outnumber live ones the heap
is rebuilt, so its size stays within a constant factor of the queue.
"""

from __future__ import annotations

import heapq

#: Rebuild only past this many stale items (a small heap is cheap anyway).
_COMPACT_MIN = 1024


class AttemptSchedule:
    """
    Queue ids by next attempt time; each id is in it at most once.

    ``operations`` counts heap items pushed and popped (compactions
    included): what the work is proportional to, so tests can bound it
    without timing anything.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, str]] = []
        #: id -> the sequence number of its one live heap item.
        self._live: dict[str, int] = {}
        self._sequence = 0
        self.operations = 0

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, queue_id: object) -> bool:
        return queue_id in self._live

    def put(self, queue_id: str, when: float) -> None:
        """Schedule ``queue_id`` at ``when``, replacing any earlier time."""
        self._sequence += 1
        self._live[queue_id] = self._sequence
        heapq.heappush(self._heap, (when, self._sequence, queue_id))
        self.operations += 1
        if len(self._heap) > 2 * len(self._live) + _COMPACT_MIN:
            self._compact()

    def discard(self, queue_id: str) -> None:
        """Forget ``queue_id`` (its heap item goes stale)."""
        self._live.pop(queue_id, None)

    def next_time(self) -> float | None:
        """When the earliest entry is due, or None when there is none."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> str | None:
        """The earliest entry due at ``now`` (removed), or None."""
        self._drop_stale()
        if not self._heap or self._heap[0][0] > now:
            return None
        _, _, queue_id = heapq.heappop(self._heap)
        self.operations += 1
        del self._live[queue_id]
        return queue_id

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)
            self.operations += 1

    def _compact(self) -> None:
        self.operations += len(self._heap)
        self._heap = [item for item in self._heap if self._live.get(item[2]) == item[1]]
        heapq.heapify(self._heap)
