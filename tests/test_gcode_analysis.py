"""The full G-code analysis: the time model checked against hand-worked trapezoids, the numpy
reader against a plain one on generated lines, the corpus's slicers against their own figures,
and hostile input that must end in figures, not a crash."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lezerprintd.files import gcode_analysis
from lezerprintd.files.gcode_analysis import GcodeFigures, analyze
from lezerprintd.files.gcode_meta import read_metadata
from tests.conftest import corpus_file


def figures_of(tmp_path: Path, text: str, name: str = "test.gcode") -> GcodeFigures:
    path = tmp_path / name
    path.write_text(text)
    return analyze(path)


def trapezoid(length: float, start: float, cruise: float, end: float, accel: float) -> float:
    """Seconds for one move, worked the long way: ramp up, cruise, ramp down."""
    up = (cruise**2 - start**2) / (2 * accel)
    down = (cruise**2 - end**2) / (2 * accel)
    if up + down > length:  # no room to cruise: a triangle with a lower peak
        cruise = math.sqrt((2 * accel * length + start**2 + end**2) / 2)
        up = (cruise**2 - start**2) / (2 * accel)
        down = (cruise**2 - end**2) / (2 * accel)
    flat = length - up - down
    return (cruise - start) / accel + flat / cruise + (cruise - end) / accel


# -- the time model ----------------------------------------------------------------------------


def test_a_move_accelerates_cruises_and_stops(tmp_path: Path) -> None:
    figures = figures_of(tmp_path, "M204 P1000 T1000\nG1 X100 F6000\n")
    # 100 mm at 100 mm/s, 1000 mm/s²: 0.1 s up, 0.9 s at speed, 0.1 s down.
    assert figures.estimated_time == pytest.approx(1.1, abs=0.05)
    assert trapezoid(100, 0, 100, 0, 1000) == pytest.approx(1.1)


def test_a_straight_line_in_pieces_takes_as_long_as_in_one(tmp_path: Path) -> None:
    pieces = "".join(f"G1 X{x} F6000\n" for x in range(1, 101))
    figures = figures_of(tmp_path, "M204 P1000 T1000\n" + pieces)
    assert figures.estimated_time == pytest.approx(1.1, abs=0.05)
    assert figures.moves == 100


def test_the_planner_sees_only_as_far_as_marlins_buffer(tmp_path: Path) -> None:
    # 0.1 mm pieces: 16 of them are 1.6 mm, too short to stop from 100 mm/s (5 mm), so the
    # printer never gets there: it must be able to stop within what it has seen.
    pieces = "".join(f"G1 X{x / 10:.1f} F6000\n" for x in range(1, 1001))
    figures = figures_of(tmp_path, "M204 P1000 T1000\n" + pieces)
    top = math.sqrt(2 * 1000 * 1.6)
    assert figures.estimated_time > 1.1 + 0.5
    assert figures.estimated_time == pytest.approx(100 / top, rel=0.05)


def test_a_corner_is_taken_at_the_junction_deviation_speed(tmp_path: Path) -> None:
    figures = figures_of(tmp_path, "M204 P1000 T1000\nG1 X50 F6000\nG1 Y50\n")
    sin_half = math.sqrt(0.5)
    corner = math.sqrt(1000 * 0.013 * sin_half / (1 - sin_half))  # Marlin's default 0.013 mm
    expected = trapezoid(50, 0, 100, corner, 1000) + trapezoid(50, corner, 100, 0, 1000)
    assert figures.estimated_time == pytest.approx(expected, abs=0.05)
    # M205 J sets the deviation: a bigger one takes the corner faster.
    square = "G1 X50 F6000\nG1 Y50\nG1 X0\nG1 Y0\n" * 10
    tight = figures_of(tmp_path, "M204 P1000 T1000\n" + square)
    looser = figures_of(tmp_path, "M205 J0.2\nM204 P1000 T1000\n" + square)
    assert looser.estimated_time < tight.estimated_time - 0.5


def test_the_files_own_limits_slow_the_moves(tmp_path: Path) -> None:
    # M203 caps X at 50 mm/s, M201 at 500 mm/s²: 100 mm take 0.1 + 1.9 s... at 50 and 500.
    text = "M203 X50\nM201 X500\nM204 P3000 T3000\nG1 X100 F6000\n"
    figures = figures_of(tmp_path, text)
    assert figures.estimated_time == pytest.approx(trapezoid(100, 0, 50, 0, 500), abs=0.05)
    # Z is slow by default (5 mm/s, 100 mm/s²), as on a Marlin printer.
    figures = figures_of(tmp_path, "G1 Z10 F6000\n")
    assert figures.estimated_time == pytest.approx(trapezoid(10, 0, 5, 0, 100), abs=0.05)


def test_dwells_add_and_retractions_take_their_time(tmp_path: Path) -> None:
    figures = figures_of(tmp_path, "G4 P500\nG4 S2\n")
    assert figures.estimated_time == pytest.approx(2.5)
    # Extruder only: 5 mm at 40 mm/s, capped at E's 25 mm/s, with M204 R1000, out and back.
    figures = figures_of(tmp_path, "M83\nM204 R1000\n" + "G1 E-5 F2400\nG1 E5\n" * 5)
    assert figures.estimated_time == pytest.approx(10 * trapezoid(5, 0, 25, 0, 1000), abs=0.06)
    assert figures.filament_length == 0  # a retraction and its return use nothing


# -- positions, filament, layers ---------------------------------------------------------------


def test_filament_follows_absolute_and_relative_extrusion(tmp_path: Path) -> None:
    absolute = "M82\nG92 E0\nG1 X10 E1\nG1 X20 E2\nG1 E1.2\nG1 X30 E3\nG92 E0\nG1 X40 E1\n"
    # 1 + 1 - 0.8 + 1.8 after the reset at 3... then 1 more: 4 in all.
    assert figures_of(tmp_path, absolute).filament_length == pytest.approx(4.0)
    relative = "M83\nG1 X10 E1\nG1 X20 E1\nG1 E-0.8\nG1 E0.8\nG1 X30 E1\n"
    assert figures_of(tmp_path, relative).filament_length == pytest.approx(3.0)
    # G91 makes everything relative, E too (as in Marlin), until G90.
    hop = "M82\nG1 X10 E1 F600\nG91\nG1 Z1 E1\nG90\nG1 X20 E3\n"
    figures = figures_of(tmp_path, hop)
    assert figures.filament_length == pytest.approx(3.0)
    assert figures.max == [20.0, 0.0, 1.0]


def test_a_file_that_does_not_say_its_extrusion_mode_is_read_by_its_values(
    tmp_path: Path,
) -> None:
    steps = "".join(f"G1 X{i} E{0.03 + (i % 3) * 0.01:.2f} F1200\n" for i in range(1, 60))
    figures = figures_of(tmp_path, steps)  # no M82/M83: values that rise and fall are relative
    assert figures.filament_length == pytest.approx(
        sum(0.03 + (i % 3) * 0.01 for i in range(1, 60))
    )
    rising = "".join(f"G1 X{i} E{i * 0.05:.2f} F1200\n" for i in range(1, 60))
    assert figures_of(tmp_path, rising).filament_length == pytest.approx(59 * 0.05)


def test_layers_are_the_heights_the_nozzle_extruded_at(tmp_path: Path) -> None:
    text = "M83\nG28\n"
    for layer in range(1, 11):
        z = 0.3 + (layer - 1) * 0.2
        text += f"G1 Z{z:.2f} F600\nG1 X{layer} Y5 E0.5 F1200\nG1 Z{z + 0.4:.2f}\nG1 X50 Y50\n"
    figures = figures_of(tmp_path, text)
    assert figures.layer_count == 10  # the hops extrude nothing
    assert figures.first_layer_height == pytest.approx(0.3)
    assert figures.layer_height == pytest.approx(0.2)
    assert figures.object_height == pytest.approx(2.1)
    assert figures.min == [0.0, 0.0, 0.3]  # moves start where the last ended: G28 puts it at 0
    assert figures.max == [50.0, 50.0, 2.1]  # each layer's line starts from the last travel


def test_arcs_count_their_length(tmp_path: Path) -> None:
    quarter = 2 * math.pi * 10 / 4
    # From (10, 0) around (0, 0) to (0, 10), counter-clockwise: a quarter circle.
    for arc in ("G3 X0 Y10 I-10 J0", "G3 X0 Y10 R10"):
        text = f"M204 P1000 T1000\nG1 X10 F600\n{arc} F600\n"
        figures = figures_of(tmp_path, text)
        expected = trapezoid(10, 0, 10, 0, 1000) + trapezoid(quarter, 0, 10, 0, 1000)
        assert figures.estimated_time == pytest.approx(expected, abs=0.05), arc
    # Clockwise the other way round is three quarters; the same point again, a full circle.
    figures = figures_of(tmp_path, "M204 P1000 T1000\nG1 X10 F600\nG2 X0 Y10 I-10 J0\n")
    assert figures.estimated_time == pytest.approx(1.0 + 3 * quarter / 10, abs=0.05)
    figures = figures_of(tmp_path, "M204 P1000 T1000\nG1 X10 F600\nG2 X10 Y0 I-10 J0\n")
    assert figures.estimated_time == pytest.approx(1.0 + 4 * quarter / 10, abs=0.05)


# -- reading -----------------------------------------------------------------------------------


def plain_reading(text: str) -> list[dict[str, float]]:
    """What each G0/G1 line sets, the slow and obvious way (the reference for numpy's)."""
    found = []
    for raw in re.split(r"\r\n|\r|\n", text):
        line = raw.split(";", 1)[0].upper().replace(" ", "").replace("\t", "")
        line = re.sub(r"^N\d*", "", line.split("*", 1)[0])  # line number and checksum
        if not re.match(r"G0?[01](?![0-9.])", line):
            continue
        words = {}
        for letter, number in re.findall(r"([A-Z])([^A-Z]*)", line)[1:]:
            if re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)", number) and letter in "XYZEF":
                words[letter] = float(number)
        found.append(words)
    return found


def numpy_reading(text: str) -> list[dict[str, float]]:
    lines = gcode_analysis._tokenise(text.encode())
    found = []
    for row in np.flatnonzero(lines.kind == gcode_analysis._MOVE):
        values = lines.values[:, row]
        found.append({"XYZEF"[i]: float(v) for i, v in enumerate(values) if not math.isnan(v)})
    return found


numbers = st.one_of(
    st.integers(-99999, 99999).map(str),
    st.integers(0, 6)
    .flatmap(lambda places: st.decimals(-9999, 9999, places=places, allow_nan=False))
    .map(lambda number: format(number, "f")),
    st.sampled_from([".5", "-.25", "+3", "5.", "0.000", "-0", "007.50"]),
)
words = st.tuples(st.sampled_from("XYZEFxyzefST"), numbers, st.sampled_from(["", " ", "\t"]))
move_lines = st.builds(
    lambda command, parts, comment: command + "".join(f"{a}{b}{c}" for a, b, c in parts) + comment,
    st.sampled_from(["G1 ", "G0 ", "g1", "G1", "G01 ", "G1\t"]),
    st.lists(words, max_size=6),
    st.sampled_from(["", " ; comment X1 Y2", ";", "; G1 X5"]),
)
odd_lines = st.sampled_from(
    ["G1 X1.2.3 Y4", "G1 X- Y2", "G1 X1-2", "G1 X", "G1X5*71", "N12 G1 X3 Y4*5", "G10",
     "G1.5 X2", "M104 S200", "G92 E0", "; only a comment", "", "G28", "\x00\xff garbage",
     "G1 X99999999999999999"]
)  # fmt: skip
ends = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.tuples(st.one_of(move_lines, odd_lines), ends), min_size=1, max_size=40))
def test_the_numpy_reader_reads_what_a_plain_reader_reads(lines: list[tuple[str, str]]) -> None:
    text = "".join(line + end for line, end in lines)
    got, want = numpy_reading(text), plain_reading(text)
    assert len(got) == len(want)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.keys() == theirs.keys()
        for key in mine:
            assert mine[key] == pytest.approx(theirs[key], rel=1e-12, abs=1e-12)


def test_blocks_do_not_change_the_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "M83\nG28\n" + "".join(
        f"G1 Z{0.2 * (i // 50 + 1):.1f}\nG1 X{i % 37} Y{(i * 7) % 23} E0.1{i % 10} F{1200 + i}\n"
        + ("G2 X5 Y5 I2 J2\nG4 P10\nM204 P800\n" if i % 97 == 0 else "")
        for i in range(2000)
    )
    whole = figures_of(tmp_path, text)
    monkeypatch.setattr(gcode_analysis, "BLOCK_BYTES", 997)
    assert figures_of(tmp_path, text) == whole
    assert whole.layer_count == 40


# -- hostile files -----------------------------------------------------------------------------


def test_junk_and_giant_lines_end_in_figures_not_a_crash(tmp_path: Path) -> None:
    junk = bytes(range(256)) * 4096 + b"\nG1 X10 F600\n" + b"X" * 3_000_000 + b"\nG1 X20\n"
    path = tmp_path / "junk.gcode"
    path.write_bytes(junk)
    figures = analyze(path)
    assert figures.moves >= 2
    assert math.isfinite(figures.estimated_time)
    empty = tmp_path / "empty.gcode"
    empty.write_bytes(b"")
    assert analyze(empty) == GcodeFigures(0.0, 0.0, 0, None, None, None, None, None, 0)


def test_the_worker_answers_json_and_says_why_it_cannot(tmp_path: Path) -> None:
    path = tmp_path / "part.gcode"
    path.write_text("G1 X10 F600\n")
    done = subprocess.run(
        [sys.executable, "-m", "lezerprintd.files.gcode_analysis", str(path)],
        capture_output=True,
        check=True,
        text=True,
    )
    assert '"estimatedTime"' in done.stdout
    gone = subprocess.run(
        [sys.executable, "-m", "lezerprintd.files.gcode_analysis", str(tmp_path / "gone.gcode")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode == 2
    assert "cannot be read" in gone.stderr


# -- the corpus --------------------------------------------------------------------------------


# Files whose slicer states an estimate from a comparable model: ours is within 10% of it.
@pytest.mark.parametrize(
    "name",
    ["prusaslicer.gcode", "prusaslicer-issue1.gcode", "superslicer.gcode", "m486.gcode",
     "cura.gcode", "ideamaker.gcode"],
)  # fmt: skip
def test_the_estimate_is_close_to_the_slicers_own(name: str) -> None:
    path = corpus_file(f"gcode/{name}")
    stated = read_metadata(path)
    figures = analyze(path)
    assert stated.estimated_time is not None
    assert figures.estimated_time == pytest.approx(stated.estimated_time, rel=0.10)
    if stated.layer_count is not None:
        assert figures.layer_count == stated.layer_count


@pytest.mark.parametrize(
    ("name", "layers", "layer_height", "first_layer", "height"),
    [("icesl.gcode", 43, 0.12, 0.12, 5.04), ("slic3r.gcode", 16, 0.3, 0.4, 4.9)],
)
def test_the_files_without_an_estimate_get_one(
    name: str, layers: int, layer_height: float, first_layer: float, height: float
) -> None:
    path = corpus_file(f"gcode/{name}")
    stated = read_metadata(path)
    assert stated.estimated_time is None
    figures = analyze(path)
    assert (figures.layer_count, figures.layer_height) == (layers, layer_height)
    assert (figures.first_layer_height, figures.object_height) == (first_layer, height)
    assert stated.layer_height in (None, layer_height)
    # Both print a 5 mm test part in a few minutes, as their moves and feed rates add up to.
    assert 300 < figures.estimated_time < 600
    if stated.filament_length is not None:  # Slic3r states its filament, not its time
        assert figures.filament_length == pytest.approx(stated.filament_length, rel=0.01)
    assert figures.min is not None
    assert figures.max is not None
    assert all(
        0 < low < high < 250 for low, high in zip(figures.min[:2], figures.max[:2], strict=True)
    )


def test_kiri_motos_unstated_relative_extrusion_is_recognised() -> None:
    path = corpus_file("gcode/kirimoto.gcode")
    figures = analyze(path)
    stated = read_metadata(path)
    assert stated.filament_length is not None
    assert figures.filament_length == pytest.approx(stated.filament_length, rel=0.05)
