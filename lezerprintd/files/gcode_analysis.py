"""What a G-code file does, computed from every line: layers, filament, extent and print time.

Runs in a worker process (`python -m lezerprintd.files.gcode_analysis FILE`), never in the
daemon, for files whose slicer did not state its figures. Rule: the file is read in blocks of
BLOCK_BYTES and never held whole, and no Python code runs per move line: a block is tokenised
with numpy (comments cut and case folded by bytes methods, numbers decoded from their digits),
and only the rare other lines (G92, G28, M204, arcs...) go through Python.

The time model is Marlin's planner (docs/api.md tells users the same):
- each move accelerates and decelerates on a trapezoid: cruise at its feed rate, limited per
  axis by the maximum feed rates (M203), with the acceleration M204 sets for printing (P),
  travel (T) or retraction (R), limited per axis by the maximum accelerations (M201);
- the speed through a corner is limited by junction deviation (M205 J, Marlin's default 0.013 mm),
  and never above either move's own speed; a move of the extruder alone starts and ends at rest;
- the planner looks LOOKAHEAD moves ahead and plans to stop after the last of them, as Marlin's
  16-block buffer does; entry and exit speeds come from its backward and forward passes (done as
  cumulative minima over squared speeds, which is what makes them vectorisable);
- dwells (G4) add their time; waiting for heaters, homing and firmware-retraction time are not
  counted (a slicer's estimate leaves them out too). Arcs (G2/G3) count their arc length.
Filament is the net extruder travel (retractions cancel their unretractions), for all tools.
Layers are the distinct heights at which the nozzle extruded while moving; the bounding box is
that of the extruding moves.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

Floats = NDArray[np.float64]
Ints = NDArray[np.intp]
Bools = NDArray[np.bool_]

BLOCK_BYTES: Final = 1024 * 1024
LOOKAHEAD: Final = 16  # Marlin's BLOCK_BUFFER_SIZE
_EVIDENCE: Final = 20  # E values needed to tell the extrusion mode of a file that does not say
_THINNEST_LAYER: Final = 0.03  # mm: closer heights are two objects' layers, not a layer height
_LONGEST_LINE: Final = 64 * 1024  # a "line" longer than this is cut: it is not G-code

# Marlin 2.1's Configuration.h defaults, used until the file sets its own.
_MAX_FEEDRATE: Final = (300.0, 300.0, 5.0, 25.0)  # mm/s: X Y Z E
_MAX_ACCELERATION: Final = (3000.0, 3000.0, 100.0, 10000.0)  # mm/s²
_ACCELERATION: Final = 3000.0  # printing, travel and retraction alike
_JUNCTION_DEVIATION: Final = 0.013  # mm
_FEEDRATE: Final = 1500.0  # mm/min until the file sets one
_SLOWEST: Final = 0.1  # mm/s: an F0 move still ends

# Bytes as the tokeniser sees them: upper case, CR as a line end, spaces and tabs removed.
_FOLD: Final = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz\r", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\n")
_COMMENT: Final = re.compile(rb";[^\n\r]*")


def _table(chosen: bytes) -> bytes:
    """A bytes.translate table giving 1 for the chosen bytes and 0 for the others."""
    return bytes(int(c in chosen) for c in range(256))


# A separator is every byte that is not a digit or a sign: letters, dots, line ends, the rest.
_SEPARATORS: Final = _table(bytes(c for c in range(256) if c not in b"0123456789-+"))
_DIGITS: Final = _table(b"0123456789")
_SIGNS: Final = _table(b"-+")
# The row of `_Lines.values` each parameter letter fills; 5 for letters not kept.
_COLUMNS: Final = bytes(b"XYZEF".find(c) if c in b"XYZEF" else 5 for c in range(256))
_POW10: Final = 10.0 ** np.arange(16)
_POW10_INTEGER: Final = 10 ** np.arange(10, dtype=np.int32)
_SLOT_DIGITS: Final = 9  # an int32 holds 9 digits; longer numbers are read in Python
_MOST_DIGITS: Final = 15  # beyond this a float64 no longer holds the digits exactly

_AXES: Final = "XYZE"
_WORD: Final = re.compile(r"([A-Z])([^A-Z]*)")
_NUMBER: Final = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")


@dataclass(slots=True)
class GcodeFigures:
    estimated_time: float  # s
    filament_length: float  # mm
    layer_count: int
    first_layer_height: float | None  # mm
    layer_height: float | None  # mm, the most common step between layers
    object_height: float | None  # mm
    min: list[float] | None  # mm, x y z of the extruding moves
    max: list[float] | None
    moves: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        return {_camel(name): value for name, value in out.items()}


@dataclass(slots=True)
class _Settings:
    """What the file has set so far that the next block starts from."""

    position: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
    relative: bool = False  # G91
    relative_e: bool = False  # M83
    feedrate: float = _FEEDRATE  # mm/min
    print_acceleration: float = _ACCELERATION
    travel_acceleration: float = _ACCELERATION
    retract_acceleration: float = _ACCELERATION
    max_feedrate: list[float] = field(default_factory=lambda: list(_MAX_FEEDRATE))
    max_acceleration: list[float] = field(default_factory=lambda: list(_MAX_ACCELERATION))
    junction_deviation: float = _JUNCTION_DEVIATION


@dataclass(slots=True)
class _Lines:
    """One block's lines that matter, in file order, as columns (NaN where not given)."""

    kind: NDArray[np.int8]  # _MOVE, _ARC_CW, _ARC_CCW, _SET, _DWELL, _MODE, _LIMITS
    values: Floats  # (5, n): X Y Z E F
    # The rest changes seldom: which rows set what.
    changes: dict[str, tuple[list[int], list[float]]]  # see _CHANGES
    dwell: float  # s, all the block's G4 together
    arcs: dict[int, tuple[float, float, float]]  # row: I J R (NaN where not given)
    limits: list[tuple[int, str, dict[str, float]]]  # (row, command, words) for M201/M203/M205


_NONE, _MOVE, _ARC_CW, _ARC_CCW, _SET, _DWELL, _MODE, _LIMITS = range(8)
# relative: G90/G91 (0 or 1); relative_e: M82/M83, and G90/G91; the rest: M204's accelerations.
_CHANGES: Final = ("relative", "relative_e", "print", "travel", "retract")


class Analysis:
    """Feed blocks of a file in order with `feed`, then `finish` for the figures."""

    def __init__(self) -> None:
        self.settings = _Settings()
        self._planner = _Planner()
        self._filament = 0.0
        self._low = np.full(3, np.inf)
        self._high = np.full(3, -np.inf)
        self._heights: set[float] = set()
        self._moves = 0
        self._dwell = 0.0
        self._extrusion_mode_known = False

    def feed(self, block: bytes) -> None:
        """Lines ending in a line end (a last partial line belongs to the next block)."""
        lines = _tokenise(block)
        if not self._extrusion_mode_known:
            self._guess_extrusion_mode(lines)
        start = 0
        self._dwell += lines.dwell
        for row, command, words in lines.limits:
            self._run(lines, start, row)
            _apply_limits(self.settings, command, words)
            start = row + 1
        self._run(lines, start, len(lines.kind))

    def _guess_extrusion_mode(self, lines: _Lines) -> None:
        """Some slicers (Kiri:Moto) write relative E without M83, leaving it to the printer's
        start macro. Until the file says, its E values tell: absolute ones only fall at a
        retraction or a G92, relative ones fall about every other move."""
        stated = lines.changes["relative_e"][0]
        before = stated[0] if stated else len(lines.kind)
        extrusions = lines.values[3, :before]
        extrusions = extrusions[~np.isnan(extrusions)]
        if len(extrusions) >= _EVIDENCE:
            falls = np.count_nonzero(np.diff(extrusions) < 0) / (len(extrusions) - 1)
            self.settings.relative_e = bool(falls > 0.15)
        self._extrusion_mode_known = bool(stated) or len(extrusions) >= _EVIDENCE

    def finish(self) -> GcodeFigures:
        time = self._planner.finish() + self._dwell
        heights = sorted(self._heights)
        steps = np.round(np.diff(heights), 3) if len(heights) > 1 else np.empty(0)
        steps = steps[steps >= _THINNEST_LAYER]
        common: float | None = None
        if len(steps):
            values, counts = np.unique(steps, return_counts=True)
            common = float(values[np.argmax(counts)])
        found = bool(np.isfinite(self._low).all())
        return GcodeFigures(
            estimated_time=round(time, 1),
            filament_length=round(max(self._filament, 0.0), 2),
            layer_count=len(heights),
            first_layer_height=heights[0] if heights else None,
            layer_height=common,
            object_height=heights[-1] if heights else None,
            min=[round(float(v), 3) for v in self._low] if found else None,
            max=[round(float(v), 3) for v in self._high] if found else None,
            moves=self._moves,
        )

    def _run(self, lines: _Lines, start: int, stop: int) -> None:
        if stop <= start:
            return
        s = self.settings
        kind = lines.kind[start:stop]
        # Modes and settings carry forward from the row that sets them; index 0 is the state
        # the rows before left.
        relative, relative_e, *accelerations = (
            _changed(lines.changes[name], start, stop, initial)
            for name, initial in zip(
                _CHANGES,
                (
                    float(s.relative),
                    float(s.relative_e),
                    s.print_acceleration,
                    s.travel_acceleration,
                    s.retract_acceleration,
                ),
                strict=True,
            )
        )
        feedrate = _carried(lines.values[4, start:stop], s.feedrate)
        moving = (kind >= _MOVE) & (kind <= _ARC_CCW)
        setting = kind == _SET
        position = []  # per axis, after each row; index 0 is where the rows before left it
        for axis in range(4):
            given_values = lines.values[axis, start:stop]
            given = ~np.isnan(given_values)
            is_relative = (relative_e if axis == 3 else relative)[1:] > 0.5
            anchor = given & (setting | moving & ~is_relative)
            relative_move = given & moving & is_relative
            position.append(_positions(s.position[axis], anchor, given_values, relative_move))
        s.position = [float(axis[-1]) for axis in position]
        s.relative, s.relative_e = bool(relative[-1] > 0.5), bool(relative_e[-1] > 0.5)
        s.feedrate = float(feedrate[-1])
        s.print_acceleration, s.travel_acceleration, s.retract_acceleration = (
            float(column[-1]) for column in accelerations
        )

        rows = np.flatnonzero(moving)
        begin = [axis[rows] for axis in position]
        delta = [axis[rows + 1] - first for axis, first in zip(position, begin, strict=True)]
        length = np.sqrt(delta[0] ** 2 + delta[1] ** 2 + delta[2] ** 2)
        arcs = np.flatnonzero(kind[rows] != _MOVE)
        if len(arcs):
            length[arcs] = _arc_lengths(
                np.array([axis[arcs] for axis in begin]).T,
                np.array(
                    [axis[arcs] + step[arcs] for axis, step in zip(begin, delta, strict=True)]
                ).T,
                np.array([lines.arcs[start + row] for row in rows[arcs].tolist()]),
                kind[rows[arcs]],
            )
        extruded = delta[3]
        real = np.flatnonzero((length > 0) | (extruded != 0))
        if not len(real):
            return
        if len(real) < len(rows):
            rows, length, extruded = rows[real], length[real], extruded[real]
            begin, delta = [axis[real] for axis in begin], [axis[real] for axis in delta]
        self._moves += len(rows)
        self._filament += float(extruded.sum())
        printing = np.flatnonzero((extruded > 0) & (length > 0))
        if len(printing):
            for axis in range(3):
                starts, ends = begin[axis][printing], begin[axis][printing] + delta[axis][printing]
                self._low[axis] = min(self._low[axis], starts.min(), ends.min())
                self._high[axis] = max(self._high[axis], starts.max(), ends.max())
            heights = np.round(begin[2][printing] + delta[2][printing], 3)
            changes = np.flatnonzero(heights[1:] != heights[:-1]) + 1
            self._heights.update(heights[0:1].tolist() + heights[changes].tolist())
        e_only = length == 0
        path = np.where(e_only, np.abs(extruded), length)
        speed = np.maximum(feedrate[1:][rows] / 60.0, _SLOWEST)
        acceleration = np.where(
            e_only,
            accelerations[2][1:][rows],
            np.where(extruded == 0, accelerations[1][1:][rows], accelerations[0][1:][rows]),
        )
        # Per axis limits: an axis that would go faster than it may slows the whole move.
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis in range(4):
                share = np.abs(delta[axis]) / path
                speed = np.minimum(speed, s.max_feedrate[axis] / share)
                acceleration = np.minimum(acceleration, s.max_acceleration[axis] / share)
            unit = [np.where(e_only, 0.0, step / length) for step in delta[:3]]
        self._planner.add(
            path, speed, acceleration, unit, e_only, junction_deviation=s.junction_deviation
        )


class _Planner:
    """Entry and exit speeds of each move, and its time; LOOKAHEAD moves are held back until
    the moves after them are known (or the file ends)."""

    def __init__(self) -> None:
        self.time = 0.0
        self._held: tuple[Floats, ...] = tuple(np.empty(0) for _ in range(4))
        self._entry = 0.0  # squared speed the first held move starts at
        self._unit = [0.0, 0.0, 0.0]  # direction of the last move seen
        self._speed = 0.0  # and its speed, 0 when it was an extruder-only move

    def add(
        self,
        path: Floats,
        speed: Floats,
        acceleration: Floats,
        unit: list[Floats],
        e_only: Bools,
        *,
        junction_deviation: float,
    ) -> None:
        # The corner each move starts with (Marlin's junction deviation).
        cos_theta = np.zeros(len(path))
        for axis, along in enumerate(unit):
            cos_theta -= np.concatenate([[self._unit[axis]], along[:-1]]) * along
        previous_speed = np.concatenate([[self._speed], speed[:-1]])
        previous_e_only = np.concatenate([[self._speed == 0.0], e_only[:-1]])
        sin_half = np.sqrt(np.clip(0.5 * (1.0 - cos_theta), 0.0, 1.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            corner = acceleration * junction_deviation * sin_half / (1.0 - sin_half)
        corner = np.where(cos_theta < -0.999999, np.inf, corner)  # straight on
        corner = np.minimum(corner, np.minimum(speed, previous_speed) ** 2)
        corner[e_only | previous_e_only] = 0.0
        self._unit = [float(along[-1]) for along in unit]
        self._speed = 0.0 if e_only[-1] else float(speed[-1])
        fresh = (path, speed**2, acceleration, corner)
        moves = tuple(
            np.concatenate([held, new]) for held, new in zip(self._held, fresh, strict=True)
        )
        done = len(moves[0]) - LOOKAHEAD
        if done > 0:
            self._plan(moves, done)
            self._held = tuple(column[done:] for column in moves)
        else:
            self._held = moves

    def finish(self) -> float:
        if len(self._held[0]):
            self._plan(self._held, len(self._held[0]))
            self._held = tuple(column[:0] for column in self._held)
        return self.time

    def _plan(self, moves: tuple[Floats, ...], done: int) -> None:
        """Time the first `done` of `moves`; each ends at rest LOOKAHEAD moves later at the
        latest. In squared speeds both planner passes are running minima of sums."""
        path, cruise, acceleration, corner = moves
        n = len(path)
        reach = 2.0 * acceleration * path  # how much a move can change the squared speed
        before = np.concatenate([[0.0], np.cumsum(reach)])  # before[k]: sum of reach[:k]
        # Backward: entry[k] <= corner[j] + reach[k..j-1] for j in the window, and the
        # stop at its end; padded with stops past the last move.
        bound = np.concatenate([corner + before[:n], [before[n]]])
        window = np.full(n, np.inf)
        for offset in range(LOOKAHEAD):
            ahead = bound[offset : offset + n]
            window[: len(ahead)] = np.minimum(window[: len(ahead)], ahead)
        stops = before[LOOKAHEAD : LOOKAHEAD + n]  # at rest after the window's last move
        window[: len(stops)] = np.minimum(window[: len(stops)], stops)
        limit = window - before[:n]
        # Forward: entry[k+1] <= entry[k] + reach[k]; the first entry is what is carried.
        limit[0] = self._entry
        entry = np.minimum.accumulate(limit - before[:n]) + before[:n]
        entry = np.maximum(entry, 0.0)
        exit_ = np.empty(n)
        exit_[:-1] = entry[1:]
        exit_[-1] = 0.0
        k = slice(0, done)
        self.time += float(
            _trapezoid_times(path[k], cruise[k], acceleration[k], entry[k], exit_[k]).sum()
        )
        self._entry = float(entry[done]) if done < n else 0.0


def _trapezoid_times(
    path: Floats, cruise: Floats, acceleration: Floats, entry: Floats, exit_: Floats
) -> Floats:
    """Seconds for each move: accelerate from entry, cruise, decelerate to exit (speeds²)."""
    peak = np.minimum(cruise, (2.0 * acceleration * path + entry + exit_) / 2.0)
    peak = np.maximum(peak, np.maximum(entry, exit_))
    top, start, stop = np.sqrt(peak), np.sqrt(entry), np.sqrt(exit_)
    ramps = (peak - entry + peak - exit_) / (2.0 * acceleration)
    with np.errstate(divide="ignore", invalid="ignore"):
        cruising = np.where(top > 0, np.maximum(path - ramps, 0.0) / top, 0.0)
    return (2 * top - start - stop) / acceleration + cruising


def _carried(column: Floats, initial: float) -> Floats:
    """The column with each NaN replaced by the value above it, after `initial`."""
    given = ~np.isnan(column)
    if not given.any():
        return np.full(len(column) + 1, initial)
    values = np.concatenate([[initial], column])
    index = np.concatenate([[0], np.where(given, np.arange(1, len(values)), 0)])
    np.maximum.accumulate(index, out=index)
    result: Floats = values[index]
    return result


def _changed(
    change: tuple[list[int], list[float]], start: int, stop: int, initial: float
) -> Floats:
    """A setting's value after each row from `start` to `stop`, after `initial`."""
    rows, values = change
    count = stop - start
    if not rows:
        return np.full(count + 1, initial)
    where, value = np.array(rows), np.array(values)
    inside = (where >= start) & (where < stop)
    index = np.zeros(count + 1, np.intp)
    index[where[inside] - start + 1] = np.arange(1, np.count_nonzero(inside) + 1)
    np.maximum.accumulate(index, out=index)
    result: Floats = np.concatenate([[initial], value[inside]])[index]
    return result


def _positions(initial: float, anchor: Bools, values: Floats, relative: Bools) -> Floats:
    """An axis's position after each row: the last absolute value (or `initial`) plus the
    relative moves since it. Index 0 is `initial`."""
    n = len(anchor)
    index = np.concatenate([[0], np.where(anchor, np.arange(1, n + 1), 0)])
    np.maximum.accumulate(index, out=index)
    base = np.concatenate([[initial], np.where(anchor, values, 0.0)])
    result: Floats = base[index]
    if relative.any():
        total = np.concatenate([[0.0], np.cumsum(np.where(relative, values, 0.0))])
        result += total - total[index]
    return result


def _arc_lengths(begin: Floats, end: Floats, arc: Floats, kind: NDArray[np.int8]) -> Floats:
    """Length of G2 (clockwise) / G3 arcs in XY, with any Z change along them."""
    i, j, radius = arc[:, 0], arc[:, 1], arc[:, 2]
    i, j = np.nan_to_num(i), np.nan_to_num(j)
    chord = end[:, :2] - begin[:, :2]
    chord_length = np.hypot(chord[:, 0], chord[:, 1])
    by_radius = ~np.isnan(radius)
    r = np.where(by_radius, np.abs(np.nan_to_num(radius)), np.hypot(i, j))
    clockwise = kind == _ARC_CW
    start_angle = np.arctan2(-j, -i)
    centre = begin[:, :2] + np.column_stack([i, j])
    end_angle = np.arctan2(end[:, 1] - centre[:, 1], end[:, 0] - centre[:, 0])
    sweep = np.where(clockwise, start_angle - end_angle, end_angle - start_angle)
    sweep = np.mod(sweep, 2 * math.pi)
    sweep = np.where(sweep < 1e-9, 2 * math.pi, sweep)  # the same point: a full circle
    # R form: the short arc for R > 0, the long one for R < 0.
    with np.errstate(invalid="ignore"):
        half = np.arcsin(np.clip(chord_length / np.maximum(2 * r, 1e-12), 0.0, 1.0))
    short = 2 * half
    sweep = np.where(
        by_radius, np.where(np.nan_to_num(radius) < 0, 2 * math.pi - short, short), sweep
    )
    planar = r * sweep
    result: Floats = np.hypot(planar, end[:, 2] - begin[:, 2])
    return result


def _mask(text: bytes, table: bytes) -> Bools:
    """Where `text` holds the bytes `table` chooses (numpy finds True fastest in bools)."""
    return np.frombuffer(text.translate(table), np.bool_)


def _tokenise(block: bytes) -> _Lines:
    """The block's non-empty lines as columns: plain G0/G1 lines decoded by numpy, the rest
    in Python.

    After folding, a line is separators (letters, dots, anything but digits and signs) each
    followed by a slot of digits: "G1X10.5E-.2" is G|1 X|10 .|5 E|- .|2. A G0/G1 line whose
    every separator is a letter or a dot in its place is decoded here. A slot's digits become
    its value by place: a running sum of d * 10^place, differenced at the slot's ends (in int32
    the sum wraps around; the differences stay exact for slots of up to 9 digits).
    """
    clean = _COMMENT.sub(b"", block).translate(_FOLD, b" \t")
    text = b"\n" + clean + b"\n\n"
    raw = np.frombuffer(text, np.uint8)
    separator = np.flatnonzero(_mask(text, _SEPARATORS))
    after = raw[separator]  # the separating byte
    slot_end = np.append(separator[1:], len(text))  # each slot runs to the next separator
    slot_length = slot_end - separator - 1
    slot_count = len(separator)
    line_end = after == 10
    line_of = np.cumsum(line_end, dtype=np.int32) - 1  # the line each slot is on

    signs = np.flatnonzero(_mask(text, _SIGNS))
    sign_slot = np.searchsorted(separator, signs) - 1
    digits = (slot_length - np.bincount(sign_slot, minlength=slot_count)).astype(np.int32)
    digit_at = np.flatnonzero(_mask(text, _DIGITS))
    last_digit = np.cumsum(digits) - 1
    place = np.repeat(last_digit, digits) - np.arange(len(digit_at), dtype=np.int32)
    running = np.zeros(len(digit_at) + 1, np.int32)
    digit_values = raw[digit_at] & 15  # "0".."9" are 0x30..0x39
    np.cumsum(digit_values * _POW10_INTEGER[np.minimum(place, 9)], out=running[1:])
    whole = running[last_digit + 1] - running[last_digit + 1 - digits]

    # A number is a letter's slot, and the slot after it when that one starts with a dot.
    letter = (after >= 65) & (after <= 90)
    dot = after == 46
    dotted = np.append(dot[1:], False)  # the next slot holds this one's fraction
    values = whole.astype(np.float64)
    total_digits = digits.copy()
    before_dot = np.flatnonzero(dotted)
    values[before_dot] += whole[before_dot + 1] / _POW10.take(digits[before_dot + 1], mode="clip")
    total_digits[before_dot] += digits[before_dot + 1]
    values[sign_slot[raw[signs] == ord("-")]] *= -1
    short = (digits <= _SLOT_DIGITS) & np.append(digits[1:] <= _SLOT_DIGITS, True)
    well_formed = letter & short & (total_digits > 0) & (total_digits <= _MOST_DIGITS) | line_end
    # A dot belongs right after a letter's slot; a sign only at the start of a letter's slot.
    well_formed |= dot & np.append(False, letter[:-1])
    misplaced = signs[raw[signs - 1] < 65]
    well_formed[np.searchsorted(separator, misplaced) - 1] = False

    # Lines: the slot of a line end holds what comes before the line's first letter.
    starts = np.flatnonzero(line_end)[:-1]
    lines = len(starts)
    first_letter = starts + 1
    move = (
        (slot_length[starts] == 0)
        & (after[first_letter] == ord("G"))
        & (slot_length[first_letter] == 1)
        & (whole[first_letter] <= 1)
        & ~dotted[first_letter]
    )
    move[line_of[~well_formed]] = False
    line_start = separator[line_end]
    nonempty = np.flatnonzero(np.diff(line_start) > 1)
    row_of_line = np.full(lines, -1)
    row_of_line[nonempty] = np.arange(len(nonempty))
    rows = len(nonempty)
    out = _Lines(
        kind=np.where(move[nonempty], _MOVE, _NONE).astype(np.int8),
        values=np.full((6, rows), np.nan),
        changes={name: ([], []) for name in _CHANGES},
        dwell=0.0,
        arcs={},
        limits=[],
    )
    parameter = np.flatnonzero(letter)
    parameter = parameter[move[line_of[parameter]]]
    column = np.frombuffer(after[parameter].tobytes().translate(_COLUMNS), np.uint8)
    target = column.astype(np.intp) * rows + row_of_line[line_of[parameter]]
    out.values.ravel()[target] = values[parameter]
    for line in np.flatnonzero(~move).tolist():
        row = int(row_of_line[line])
        if row >= 0:
            begin, stop = int(line_start[line]), int(line_start[line + 1]) - 1
            text_line = clean[begin : min(stop, begin + _LONGEST_LINE)]
            _read_other(text_line.decode("ascii", "replace"), row, out)
    out.values = out.values[:5]
    return out


def _read_other(line: str, row: int, out: _Lines) -> None:
    """One line the numpy pass left: anything but a plain G0/G1 (or a G0/G1 with odd words)."""
    line = line.split("*", 1)[0]  # a checksum, as a host would send the line
    if line.startswith("N"):  # and a line number
        line = line.lstrip("N0123456789")
    match = _WORD.match(line)
    if match is None:
        return
    command = match[1] + match[2]
    words: dict[str, float] = {}
    flags: set[str] = set()
    for letter, number in _WORD.findall(line[match.end() :]):
        if _NUMBER.fullmatch(number):
            words[letter] = float(number)
        else:
            flags.add(letter)  # a letter alone (G28 X), or a number that is not one: ignored
    if command in ("G0", "G1", "G00", "G01", "G2", "G3", "G02", "G03"):
        kinds = {"0": _MOVE, "1": _MOVE, "2": _ARC_CW, "3": _ARC_CCW}
        out.kind[row] = kinds[command[-1]]
        for column, name in enumerate("XYZEF"):
            if name in words:
                out.values[column, row] = words[name]
        if out.kind[row] != _MOVE:
            out.arcs[row] = (
                words.get("I", math.nan),
                words.get("J", math.nan),
                words.get("R", math.nan),
            )
    elif command in ("G92", "G28"):
        out.kind[row] = _SET
        named = [axis for axis in _AXES if axis in words or axis in flags]
        home = command == "G28"
        for axis in named or (_AXES[:3] if home else _AXES):
            out.values[_AXES.index(axis), row] = 0.0 if home else words.get(axis, 0.0)
    elif command in ("G90", "G91"):
        out.kind[row] = _MODE
        _change(out, row, "relative", float(command == "G91"))
        _change(out, row, "relative_e", float(command == "G91"))
    elif command in ("M82", "M83"):
        out.kind[row] = _MODE
        _change(out, row, "relative_e", float(command == "M83"))
    elif command in ("G4", "G04"):
        out.kind[row] = _DWELL
        out.dwell += words.get("S", 0.0) + words.get("P", 0.0) / 1000.0
    elif command == "M204":
        out.kind[row] = _MODE
        both = words.get("S")
        for change, name in zip(_CHANGES[2:], "PTR", strict=True):
            value = words.get(name, both if name != "R" else None)
            if value is not None and value > 0:
                _change(out, row, change, value)
    elif command in ("M201", "M203", "M205"):
        out.kind[row] = _LIMITS
        out.limits.append((row, command, words))


def _change(out: _Lines, row: int, name: str, value: float) -> None:
    rows, values = out.changes[name]
    rows.append(row)
    values.append(value)


def _apply_limits(settings: _Settings, command: str, words: dict[str, float]) -> None:
    if command == "M205":
        if words.get("J", 0.0) > 0:
            settings.junction_deviation = words["J"]
        return
    target = settings.max_feedrate if command == "M203" else settings.max_acceleration
    for index, axis in enumerate(_AXES):
        if words.get(axis, 0.0) > 0:
            target[index] = words[axis]


def blocks(path: Path) -> Iterator[bytes]:
    """The file in blocks of whole lines (a line longer than a block is cut)."""
    rest = b""
    with path.open("rb") as source:
        while chunk := source.read(BLOCK_BYTES):
            chunk = rest + chunk
            cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1
            if cut == 0:
                cut = len(chunk)
            yield chunk[:cut]
            rest = chunk[cut:]
    if rest:
        yield rest + b"\n"


def analyze(path: Path) -> GcodeFigures:
    """The figures of the G-code file at `path`. Blocking: run it in a worker."""
    analysis = Analysis()
    for block in blocks(path):
        analysis.feed(block)
    return analysis.finish()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def keep_freed_memory() -> None:
    """Have glibc keep freed memory for the next block instead of returning it to the kernel.

    Every block allocates and frees arrays of a few MB; by default glibc unmaps or trims them
    and the kernel must fault the pages in again for the next block, which took 40% of the
    time here. The process is short-lived, so its peak is what it holds either way."""
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt(-3, 512 * 1024 * 1024)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 512 * 1024 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass  # not glibc: slower, still correct


def main(arguments: list[str]) -> int:
    """`python -m lezerprintd.files.gcode_analysis FILE`: the figures as JSON on stdout."""
    import os

    os.nice(10)  # the printer and the web come first
    keep_freed_memory()
    try:
        figures = analyze(Path(arguments[0]))
    except MemoryError:
        print("the file is too big for the memory this appliance has", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"the file cannot be read: {error.strerror}", file=sys.stderr)
        return 2
    print(json.dumps(figures.to_json()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
