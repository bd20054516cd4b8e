"""The libyaml event walker must read every file exactly as the PyYAML node walker does: same values,
same issues, same lines; anything it does not handle falls back to the node walker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.config import yamlsource
from proxy.config.yamlsource import ConfigError, Document, parse_document

ENV = {"SET": "value-of-set", "EMPTY": ""}


@pytest.fixture
def node_walker_only() -> Iterator[None]:
    saved = yamlsource._FAST_LOADER
    yamlsource._FAST_LOADER = None
    try:
        yield
    finally:
        yamlsource._FAST_LOADER = saved


def read(text: str) -> tuple[object, list[str], dict[yamlsource.Path, int]]:
    """Values, issues and every line, as one of the two walkers sees them."""
    try:
        document = parse_document(text, "f.yaml", ENV)
    except ConfigError as exc:
        return None, [str(issue) for issue in exc.issues], {}
    issues = [str(issue) for issue in document.issues]
    issues += [f"{yamlsource.format_path(path)}: {name} is not set" for path, name in document.unset]
    document.line_of(())
    return document.data, issues, document.lines


def both(text: str) -> tuple[tuple[object, list[str], dict[yamlsource.Path, int]], ...]:
    fast = read(text)
    saved = yamlsource._FAST_LOADER
    yamlsource._FAST_LOADER = None
    try:
        slow = read(text)
    finally:
        yamlsource._FAST_LOADER = saved
    return fast, slow


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["yes", "No", "on", "~", "null", "0x1F", "1_000", "2026-01-02", "+1 415", "${SET}", "${NOPE:-d}"]),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(data=DATA, flow=st.sampled_from([None, True, False]))
def test_the_event_walker_reads_what_the_node_walker_reads(data: object, flow: bool | None) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True)
    fast, slow = both(text)
    assert fast == slow


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",
        "<<: {a: 1}\nb: 2\n",
        "? [1, 2]\n: x\nb: 3\n",
        "? {k: v}\n: x\n",
        "1: one\ntrue: yes\nnull: x\n",
        "a: ${SET}\nb: ${UNSET}\nc: ${EMPTY:-fallback}\n",
        "list:\n  - {id: u1, to: '+1 415'}\n  - {id: u2, to: [a, b]}\n",
        "a: !!str 12\nb: !!int '7'\nc: !!float 1\n",
        "",
        "# only a comment\n",
        "just a scalar\n",
        "- 1\n- 2\n",
        "base: &b {x: 1}\nother: *b\n",
        "a: 1\n---\nb: 2\n",
        "a: [1, 2\n",
        "a: b: c\n",
        "a:\n\t- x\n",
        'k: "\x07"\n',
        "a: 2001-12-14t21:59:43.10-05:00\nb: 0o17\nc: .inf\n",
        "a: 2001-13-45\nb: [!!int x, !!float y]\nc: {d: !!bool maybe}\n",
    ],
)
def test_edge_cases_read_the_same(text: str) -> None:
    fast, slow = both(text)
    assert fast == slow


def test_lines_are_found_only_when_an_issue_needs_them() -> None:
    document = parse_document("users:\n  - id: u1\n    name: One\n", "f.yaml", ENV)
    assert document.lines == {} and document.text is not None
    assert document.line_of(("users", 0, "name")) == 3
    assert document.text is None


def test_an_unset_variable_is_recorded_at_its_path_for_the_loader_to_judge() -> None:
    document = parse_document("a: 1\nb:\n  - ${UNSET}\n", "f.yaml", ENV)
    assert document.unset == [(("b", 0), "UNSET")]
    assert document.data == {"a": 1, "b": [""]}
    assert document.line_of(("b", 0)) == 3


def test_the_node_walker_is_still_there_for_files_the_event_walker_leaves(node_walker_only: None) -> None:
    document = parse_document("a: &x 1\nb: *x\n", "f.yaml", ENV)
    assert isinstance(document, Document) and document.data == {"a": 1, "b": 1}
