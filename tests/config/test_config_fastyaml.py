"""rapidyaml's reading (`fastyaml.read`) is only ever used where it is the walker's: same values of the same
types, same `${...}` expansions; everything else falls back to the walker, which reports with file:line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import orjson
import pytest
import ryml
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.generate import RoutingOptions, environment, routing_yaml
from proxy.cli import main
from proxy.config import fastyaml, load_config, parse_config
from proxy.config.yamlsource import ConfigError, parse_document

ROOT = Path(__file__).resolve().parents[2]
ENV = {"SET": "value-of-set", "EMPTY": ""}


def typed(value: object) -> object:
    """`value` with every scalar's type made part of it (True == 1 and 1 == 1.0 in Python, not in YAML)."""
    if isinstance(value, dict):
        return {typed(key): typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item) for item in value]
    return (type(value).__name__, value)


def walker_reading(text: str) -> tuple[object, list[object], dict[object, str]] | None:
    """The reference: `yamlsource`'s walker (itself tested equal to PyYAML's node walker); None if refused."""
    try:
        document = parse_document(text, "f.yaml", ENV)
    except ConfigError:
        return None
    if document.issues:
        return None
    return typed(document.data), list(document.unset), dict(document.expanded)


def assert_same_or_declined(text: str) -> bool:
    """rapidyaml's reading, when it gives one, is the walker's. True when it gave one."""
    document = fastyaml.read(text, "f.yaml", ENV)
    if document is None:
        return False
    assert walker_reading(text) == (typed(document.data), list(document.unset), dict(document.expanded)), text
    if "${" not in text:
        assert typed(yaml.load(text, Loader=yaml.CSafeLoader)) == typed(document.data), text
    return True


# Plain scalars YAML 1.1 (PyYAML) and 1.2 (rapidyaml) read differently, or that look like it.
TRICKY = [
    *("yes", "No", "ON", "off", "y", "n", "True", "true", "FALSE", "null", "Null", "~", ""),
    *("0x1F", "0o17", "017", "0b101", "1_000", "+1", "-0", "+0", "1:30", "-1:30:00", "1e3", "1.5e3", "1.5e+3"),
    *("1E-2", ".5", "-.5", "+.5", "1.", "-1.", "0.", ".inf", "-.Inf", "inf", "nan", ".NaN", "NaN", "Infinity"),
    *("2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10", "<<", "=", "!", "&", "*"),
    *("+16502000000", "+1 415 555 0100", "1234567890123456789012345", "12", "-7", "3.25", "007", "08", "09"),
    *("${SET}", "${UNSET}", "${EMPTY:-fallback}", "x${SET}y", "${BROKEN", "AT&T", "goodbye!", "a *b*", "#x"),
    *("a: b", "a #b", "- x", "[x]", "{x}", "x,y", "'q'", '"q"', "tab\tin", "é", "multi word", "a\\b"),
]
TOKENS = st.one_of(st.sampled_from(TRICKY), st.text(alphabet="0123456789.-+eE_xo:~yYnNtT&*!#' \"\\", max_size=6))


@st.composite
def scalars(draw: st.DrawFn) -> str:
    token = draw(TOKENS)
    style = draw(st.sampled_from(["plain", "plain", "single", "double"]))
    if style == "single":
        return "'" + token.replace("'", "''") + "'"
    if style == "double":
        return orjson.dumps(token).decode()
    return token


KEYS = st.one_of(st.sampled_from(["id", "name", "to", "user", "a", "b"]), scalars())
TREES = st.recursive(
    scalars(),
    lambda inner: st.lists(inner, max_size=3) | st.lists(st.tuples(KEYS, inner), max_size=3),
    max_leaves=10,
)


def render(tree: object, indent: int, flow: bool) -> str:
    """`tree` as YAML: str leaves are written as they are; a list of pairs is a mapping."""
    pad = " " * indent
    if isinstance(tree, str):
        return tree
    assert isinstance(tree, list)
    is_map = bool(tree) and isinstance(tree[0], tuple)
    if flow or not tree:
        if is_map:
            return "{" + ", ".join(f"{key}: {render(value, 0, True)}" for key, value in tree) + "}"
        return "[" + ", ".join(render(item, 0, True) for item in tree) + "]"
    lines = []
    for item in tree:
        key, value = item if is_map else ("-", item)
        lead = f"{pad}{key}:" if is_map else f"{pad}-"
        if isinstance(value, list) and value and not flow:
            lines.append(lead + "\n" + render(value, indent + 2, False))
        else:
            lines.append(f"{lead} {render(value, 0, True)}")
    return "\n".join(lines)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(pairs=st.lists(st.tuples(KEYS, TREES), min_size=1, max_size=4), flow=st.booleans())
def test_rapidyaml_is_used_only_where_it_reads_what_the_walker_reads(
    pairs: list[tuple[str, object]], flow: bool
) -> None:
    assert_same_or_declined(render(pairs, 0, flow) + "\n")


@pytest.mark.parametrize(
    "text",
    [
        *(f"a: {plain}\n" for plain in ("yes", "on", "~", "Null", "0x1F", "017", "1:30", "2024-01-01", ".inf")),
        *(f"a: {plain}\n" for plain in ("1e3", "1.5e3", "-.5", "+1", "nan", "1_000")),
        "a: &x 1\nb: *x\n",  # rapidyaml's JSON gives b the text "*x"
        "a: !!str 1\n",  # rapidyaml's JSON drops the tag: 1
        "a: !custom x\n",
        "---\na: 1\n---\nb: 2\n",
        "%YAML 1.1\n---\na: 1\n",
        "a: 1\na: 2\n",  # JSON keeps the last: the walker refuses the duplicate
        "users:\n  - {id: u1, id: u2}\n",
        "1: a\n",
        "yes: a\n",
        "<<: {a: 1}\n",
        "a: b: c\n",
        "a:\n\t- x\n",
        "- a\n- b\n",
        "just text\n",
        "",
        "a: ${BROKEN\n",
        "\ufeffa: 1\n",
        # Found by the differential test: plain scalars rapidyaml accepts and PyYAML refuses.
        "{:: []}\n",
        "{a #b: []}\n",
        "id: [08:]\n",
        "id: {a: x, :b: y}\n",
        'a: "${BROKEN"\nb: 2001-13-45\n',  # the walker must report the reference, not fail on the date
        # Entries after the first, whose keys are known by then: the list's shortcut must still look.
        *(f"users:\n  - {{id: a, name: b}}\n  - {{id: c, name: {plain}}}\n" for plain in ("yes", "1:30", "~", "+1")),
        "users:\n  - id: a\n    name: b\n  - id: c\n    name: ${BROKEN\n",
        "users:\n  - {id: a, name: b}\n  - {id: c, name: [x, yes]}\n",
    ],
)
def test_what_rapidyaml_would_read_differently_is_left_to_the_walker(text: str) -> None:
    assert fastyaml.read(text, "f.yaml", ENV) is None


@pytest.mark.parametrize(
    "text",
    [
        'a: "yes"\nb: \'on\'\nc: "1e3"\nd: "~"\ne: ""\n',
        'to: "+16502000000"\nalso: ["+14155550100", "+1 415 555 0101"]\n',
        "a: 1\nb: 1.5\nc: true\nd: null\ne:\nf: -7\ng: 0.25\nh: 1.5e+3\ni: 12345678901234567890\n",
        "---\na: 1\n",
        "name: AT&T\ngreeting: goodbye!\nwhy: 2*3\n# a *comment* & more!\n",
        "a: ${SET}\nb: x${UNSET}y\nc: ${EMPTY:-fallback}\n",
        "prompt: |\n  Hello!\n  Line two: AT&T!\n\nfolded: >-\n  a\n  b\n",
        'users:\n  - {id: a, name: b}\n  - {id: c, name: "${SET}", to: "+16502000000"}\n  - {id: d, name: "a #b"}\n',
        'routes:\n  - {to: "+16502000000", user: a}\n  - {to: "+16502000001", user: b, n: 3}\n',
    ],
)
def test_plain_files_are_read_by_rapidyaml_as_the_walker_reads_them(text: str) -> None:
    assert assert_same_or_declined(text)


def test_a_plain_number_with_a_plus_sign_is_not_json() -> None:
    # Why "+15551230000" needs no look at its quotes: written plain, rapidyaml's JSON would hold a number
    # with a `+`, which orjson refuses, so the whole file goes to the walker.
    tree = ryml.parse_in_arena(b"to: +16502000000\n")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(ryml.emit_json_malloc(tree, tree.root_id()))
    assert fastyaml.read("to: +16502000000\n", "f.yaml", ENV) is None


def test_the_benchmark_file_and_the_example_load_the_same_either_way() -> None:
    env = environment()
    text = routing_yaml(RoutingOptions(users=300, fixed_ids=True))
    assert fastyaml.read(text, "bench.yaml", env) is not None
    fast = parse_config(text, "bench.yaml", env, fast=True)
    slow = parse_config(text, "bench.yaml", env)
    assert fast.users == slow.users and fast.routes == slow.routes and fast.routing == slow.routing
    assert (fast.version, fast.server, fast.nango, fast.templates) == (
        slow.version,
        slow.server,
        slow.nango,
        slow.templates,
    )
    example = ROOT / "config.example.yaml"
    assert fastyaml.read(example.read_text(), "config.example.yaml", {}) is not None
    with pytest.MonkeyPatch.context():
        fast = load_config(example, {}, secrets_optional=True, fast=True)
        slow = load_config(example, {}, secrets_optional=True)
    assert fast.users == slow.users and fast.routes == slow.routes and fast.warnings == slow.warnings


BROKEN = """\
version: 1
templates: {default: {model: {provider: openai, model: gpt-4o}}}
users:
  - {id: u1, name: One}
  - {id: u1, name: One again, name: twice}
routes:
  - {to: "+14155550100", user: u2}
"""


def test_a_broken_file_is_reported_by_the_walker_with_lines_and_no_rapidyaml_noise(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "routing.yaml"
    for text, expected in (
        (BROKEN, [":5: users[1].name: duplicate key", ":5: users[1].id: duplicate user id 'u1'"]),
        ("version: 1\nauth: b: c\n", [":2: (top level): invalid YAML: mapping values are not allowed here"]),
    ):
        path.write_text(textwrap.dedent(text))
        assert main(["check", "--config", str(path)]) == 1
        err = capfd.readouterr().err
        for line in expected:
            assert f"error: {path}{line}" in err.splitlines(), err
        assert "ERROR" not in err and "parse_engine" not in err


def test_json_longer_than_the_first_buffer_is_written_again_whole() -> None:
    import ryml

    text = "".join(f"key{i}: value{i}\n" for i in range(20)).encode()
    tree = ryml.Tree()
    ryml.parse_in_arena(text, tree)
    short = fastyaml._json_of(ryml, tree, tree.root_id(), 0)  # a 64-byte first buffer
    assert len(short) > 64
    assert orjson.loads(short) == {f"key{i}": f"value{i}" for i in range(20)}
