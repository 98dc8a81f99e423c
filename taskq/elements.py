"""Workflow elements on the wire: the JSON dicts that canvas builds and workers advance.

An element is a task signature `{"task", "args", "kwargs", "options", "immutable"}`, or a
composite with `"subtask_type"`: a chain or group (`kwargs["tasks"]`, its members) or a chord
(`kwargs["header"]`, a group, and `kwargs["body"]`). Published elements are frozen: every
task has `options["task_id"]`, every group `options["group_id"]`. `options` may also hold
`link` / `link_error` (lists of elements) and, for the body of a chord that is itself a
member of a group, `membership`.

A long chain's remainder is kept in the result store, a chunk at a time, and stands in a
message's `chain` as a `stored_chain` element (`kwargs["key"]`, see `taskq.workflow`).

`check_element` is what a worker applies to the elements of every message it receives
(`chain`, `chord`, `callbacks`, `errbacks`): a message whose workflow it could not advance
is malformed, refused before it runs rather than failing after. Links (`callbacks`,
`errbacks`, `link`, `link_error`) travel unfrozen; a worker freezes one when it launches it.

Imports nothing of taskq but `errors` and `options`.
"""

from __future__ import annotations

import uuid
from typing import Any

from taskq.errors import MessageError
from taskq.options import WIRE_TYPES

Element = dict[str, Any]

CHAIN, GROUP, CHORD = "chain", "group", "chord"
STORED_CHAIN = "stored_chain"  # the rest of a chain, under a key of the result store
MAP_TASK, STARMAP_TASK = "taskq.map", "taskq.starmap"  # the builtin tasks behind map, starmap
TOLERANT_MAP_TASK = "taskq.tolerant_map"  # and behind tolerant_map
CHORD_ERROR_TASK = "taskq.chord_error"  # runs instead of a callback whose chord failed
GROUP_RESULTS_TASK = "taskq.group_results"  # ends a group that something waits for

# The JSON types of the call options a worker passes on when it publishes an element; other
# keys are left alone (a newer producer's), as unknown envelope fields are.
_OPTION_TYPES: dict[str, tuple[type, ...]] = {**WIRE_TYPES, "group_id": (str,)}
_MEMBERSHIP_KEYS = frozenset({"group_id", "index", "size", "chord"})


def kind_of(element: Element) -> str | None:
    return element.get("subtask_type")


def members(element: Element) -> list[Element]:
    found: list[Element] = element["kwargs"]["tasks"]
    return found


def stored_chain(key: str) -> Element:
    """The element standing for the rest of a chain kept under `key` in the result store."""
    return {
        "task": "taskq.stored_chain",
        "args": [],
        "kwargs": {"key": key},
        "options": {},
        "immutable": False,
        "subtask_type": STORED_CHAIN,
    }


def new_id() -> str:
    """A task or group id."""
    return uuid.uuid4().hex


def freeze(element: Element) -> Element:
    """Give every task (and group) of the tree its id, in place; returns the element."""
    kind = kind_of(element)
    if kind == CHORD:
        freeze(element["kwargs"]["header"])
        freeze(element["kwargs"]["body"])
    elif kind in (CHAIN, GROUP):
        for member in members(element):
            freeze(member)
        if kind == GROUP:
            element["options"].setdefault("group_id", new_id())
    elif kind != STORED_CHAIN:  # stored frozen
        element["options"].setdefault("task_id", new_id())
    return element


def result_ids(element: Element) -> list[str]:
    """Every task id of a frozen tree, in order."""
    kind = kind_of(element)
    if kind == CHORD:
        return result_ids(element["kwargs"]["header"]) + result_ids(element["kwargs"]["body"])
    if kind in (CHAIN, GROUP):
        return [task_id for member in members(element) for task_id in result_ids(member)]
    return [element["options"]["task_id"]]


def result_tree(element: Element) -> Any:
    """The ids of a frozen tree's outcome, as a saved group holds them: a task's id (a
    chain's last task, a chord's body), or `{"group": id, "results": [...]}` for a group."""
    kind = kind_of(element)
    if kind == CHORD:
        return result_tree(element["kwargs"]["body"])
    if kind == CHAIN:
        return result_tree(members(element)[-1])
    if kind == GROUP:
        results = [result_tree(member) for member in members(element)]
        return {"group": element["options"]["group_id"], "results": results}
    return element["options"]["task_id"]


def check_elements(elements: object, where: str, *, frozen: bool = True) -> None:
    """`MessageError` unless `elements` is a list of elements (see `check_element`)."""
    if type(elements) is not list:
        raise _malformed(where, "is not a list")
    for index, element in enumerate(elements):
        check_element(element, f"{where}[{index}]", frozen=frozen)


def check_element(element: object, where: str, *, frozen: bool = True) -> None:
    """`MessageError` naming `where` and what is wrong, unless `element` is an element, with
    its ids when `frozen` (links are frozen when a worker launches them)."""
    try:
        _check(element, where, frozen)
    except RecursionError:
        raise _malformed(where, "is nested too deeply") from None


def _check(element: object, where: str, frozen: bool) -> None:
    if type(element) is not dict:
        raise _malformed(where, "is not a signature")
    options, kwargs = element.get("options"), element.get("kwargs")
    if type(options) is not dict:
        raise _malformed(where, "has no 'options' dict")
    if type(kwargs) is not dict:
        raise _malformed(where, "has no 'kwargs' dict")
    kind = element.get("subtask_type")
    if kind in (CHAIN, GROUP):
        tasks = kwargs.get("tasks")
        check_elements(tasks, f"{where}.tasks", frozen=frozen)
        if kind == CHAIN and not tasks:
            raise _malformed(where, "is an empty chain")
        if kind == GROUP and frozen:
            _need(options, "group_id", str, where)
    elif kind == CHORD:
        header = kwargs.get("header")
        _check(header, f"{where}.header", frozen)
        if kind_of(header) != GROUP:  # type: ignore[arg-type]
            raise _malformed(f"{where}.header", "is not a group")
        _check(kwargs.get("body"), f"{where}.body", frozen)
    elif kind == STORED_CHAIN:
        _need(kwargs, "key", str, where)
    elif kind is None:
        _need(element, "task", str, where)
        if not element["task"]:
            raise _malformed(where, "has an empty 'task'")
        _need(element, "args", list, where)
        if type(element.get("immutable", False)) is not bool:
            raise _malformed(where, "has an 'immutable' that is not true or false")
        if frozen:
            _need(options, "task_id", str, where)
    else:
        raise _malformed(where, f"has an unknown subtask_type {kind!r:.40}")
    for key, value in options.items():
        allowed = _OPTION_TYPES.get(key)
        if allowed is not None and type(value) not in allowed:
            raise _malformed(f"{where}.options.{key}", f"is a {type(value).__name__}")
    priority = options.get("priority")
    if priority is not None and not 0 <= priority <= 9:
        raise _malformed(f"{where}.options.priority", "is not 0-9")
    for key in ("link", "link_error"):
        if key in options:
            check_elements(options[key], f"{where}.options.{key}", frozen=False)
    if "membership" in options:
        _check_membership(options["membership"], f"{where}.options.membership", frozen)


def _check_membership(membership: object, where: str, frozen: bool) -> None:
    if type(membership) is not dict or not set(membership) <= _MEMBERSHIP_KEYS:
        raise _malformed(where, f"is not a dict of {', '.join(sorted(_MEMBERSHIP_KEYS))}")
    _need(membership, "group_id", str, where)
    _need(membership, "index", int, where)
    _need(membership, "size", int, where)
    if membership.get("chord") is not None:
        _check(membership["chord"], f"{where}.chord", frozen)


def _need(mapping: dict[str, Any], key: str, kind: type, where: str) -> None:
    if type(mapping.get(key)) is not kind:
        raise _malformed(where, f"has no {key!r} ({kind.__name__})")


def _malformed(where: str, problem: str) -> MessageError:
    return MessageError(f"malformed message: {where} {problem}")
