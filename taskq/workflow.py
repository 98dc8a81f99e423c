"""Advancing workflows: turning canvas elements into messages, and what a worker does
when a task that belongs to a workflow finishes.

- chain: the envelope's `chain` holds what runs next; on success the worker launches
  it with the result prepended, on failure it marks every later task FAILURE with the
  same error, so `get()` on the chain's last result raises it. A message carries at most
  `CHAIN_INLINE` of the links after it: the rest is stored in the result store when the
  chain is launched, in chunks of `CHAIN_INLINE` links, each ending with a `stored_chain`
  element naming the next chunk's key, and stands as that element at the end of `chain`.
  The link that finds one first in its `chain` reads that chunk and goes on with it. So
  every message has a bounded size whatever the chain's length, a chunk is read once per
  `CHAIN_INLINE` links, and nothing is deleted when read: a redelivered link reads it
  again (chunks expire `CHAIN_RETENTION` after the launch). With a `message_signing_key`
  a chunk is signed as an envelope is, and verified when read.
- links of a chain or chord (`link`, `link_error` in its options) are moved onto its
  tasks when it is launched: a chain's link on its last member, its link_error on every
  member; a chord's on its body.
- group: members carry `group_id`, `group_index`, `group_size`; the member ids are
  saved in the store (`GroupResult.restore`). A group that something waits for (its
  links, the rest of a chain, the chord it is a member of) is a chord whose callback is
  `GROUP_RESULTS_TASK`, holding the links and membership: it returns the results.
- chord: members also carry `chord`, the callback. Each finished member (success or
  failure) counts itself by its index, so a redelivered member is not counted twice.
  When the broker counts chords itself (`ChordCounter`: Redis with the store on the same
  server), the member hands it its result and the callback's envelope, and the broker
  records the one and, with the last member, publishes the other in one atomic step:
  no crash in between can lose the callback, and the results live with the chord, not
  under `result_expires`. A failed member makes it publish a `taskq.chord_error`
  message in the callback's place (same id, chain and errbacks), which fails with
  `ChordError`. Otherwise the store's `chord_part_done(group_id, index, size)` counts,
  and the one call that returns True reads the results from the store and launches the
  callback, or, after a failed member, the callback with a `taskq.chord_error` in place
  of its first task, as the broker would.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from taskq import states, typed_json
from taskq.chords import CHORD_RESULTS, ChordCallback, ChordCounter, ChordPart
from taskq.defaults import CHAIN_RETENTION
from taskq.elements import (
    CHAIN,
    CHORD,
    CHORD_ERROR_TASK,
    GROUP,
    GROUP_RESULTS_TASK,
    STORED_CHAIN,
    Element,
    check_elements,
    freeze,
    kind_of,
    members,
    new_id,
    result_ids,
    result_tree,
    stored_chain,
)
from taskq.errors import ChordError, MessageError
from taskq.message import JSON, Message
from taskq.options import CALL_OPTIONS, CallOptions
from taskq.result import AsyncResult, GroupResult, save_group
from taskq.signing import Signing
from taskq.stores.base import TaskMeta

if TYPE_CHECKING:
    from taskq.app import TaskQ


@dataclass(frozen=True, slots=True)
class Membership:
    """The group a message's outcome belongs to, and the chord callback, if any."""

    group_id: str
    index: int
    size: int
    chord: Element | None = None

    @classmethod
    def of(cls, message: Message) -> Membership | None:
        if message.group_id is None or message.group_index is None or message.group_size is None:
            return None
        return cls(message.group_id, message.group_index, message.group_size, message.chord)


CHAIN_INLINE = 10  # links after it a message carries; the rest of a chain is stored
CHAIN_KEY = "chain:{}"  # a stored chunk of a chain's links, in the result store


@dataclass(slots=True)
class Plan:
    """What launching a tree publishes: messages now, groups to save for restore, and the
    chunks of long chains to store first."""

    messages: list[Message] = field(default_factory=list)
    groups: dict[str, list[Any]] = field(default_factory=dict)  # group id -> its result ids
    chains: dict[str, bytes] = field(default_factory=dict)  # chunk key -> its links (JSON)


Send = Callable[[Sequence[Message]], Awaitable[None]]

_LINKS = ("link", "link_error")


class Advancing(Protocol):
    """What advances workflows (a worker's runtime, an eager run's): the app, how it
    publishes the next steps, and the broker that counts chords itself, if any."""

    @property
    def app(self) -> TaskQ: ...

    @property
    def chord_counter(self) -> ChordCounter | None: ...

    async def send_messages(self, messages: Sequence[Message]) -> None: ...


async def launch(
    app: TaskQ,
    element: Element,
    prefix: list[Any] | None = None,
    then: list[Element] | None = None,
    membership: Membership | None = None,
    parent: Message | None = None,
    *,
    send: Send | None = None,
) -> None:
    """Publish what can start now of a tree, in one batch (freezing it first: a link
    travels unfrozen), with `send` (the app's `send_messages` unless given)."""
    plan = Plan()
    _build(app, plan, freeze(element), prefix or [], then or [], membership, parent)
    for group_id, ids in plan.groups.items():
        await save_group(app, group_id, ids)
    if plan.chains:
        store, signing = await app.connected_store(), await _signing(app)
        for key, links in plan.chains.items():
            signed = links if signing is None else signing.sign(links)
            await store.set_key(CHAIN_KEY.format(key), signed, CHAIN_RETENTION)
    await (send or app.send_messages)(plan.messages)


async def _signing(app: TaskQ) -> Signing | None:
    """How the app signs its envelopes, which signs a chain's stored links the same way."""
    return (await app.connected_broker()).options.signing


def _build(
    app: TaskQ,
    plan: Plan,
    element: Element,
    prefix: list[Any],
    then: list[Element],
    membership: Membership | None,
    parent: Message | None,
) -> None:
    kind = kind_of(element)
    if kind in (CHAIN, CHORD):
        element = _links_moved_inside(element)
    if kind == CHAIN:
        first, *rest = members(element)
        _build(app, plan, first, prefix, [*rest, *then], membership, parent)
        return
    # What follows goes into a message (a task's `chain`, or a chord's callback that every
    # member carries): past `CHAIN_INLINE` links, by reference.
    then = _stored_beyond_inline(plan, then)
    if kind == GROUP:
        tail = _after_group(element, then, membership)
        if tail:  # a group that something waits for is a chord
            bare = _without_links(element)
            _build_chord(app, plan, bare, _as_chain(tail), prefix, membership, parent)
        else:
            _build_members(app, plan, element, None, prefix, parent)
    elif kind == CHORD:
        body = element["kwargs"]["body"]
        body = _as_chain([body, *then]) if then else body
        _build_chord(app, plan, element["kwargs"]["header"], body, prefix, membership, parent)
    else:
        plan.messages.append(_message(app, element, prefix, then, membership, parent))


def _stored_beyond_inline(plan: Plan, then: list[Element]) -> list[Element]:
    """`then` with the links past `CHAIN_INLINE` moved into chunks for `plan` to store,
    each ending with the `stored_chain` element of the next; the first one ends `then`.
    One that ends with a `stored_chain` already (the rest of a message's chain) may carry
    it after `CHAIN_INLINE` links."""
    stored = 1 if then and kind_of(then[-1]) == STORED_CHAIN else 0
    if len(then) <= CHAIN_INLINE + stored:
        return then
    tail: list[Element] = []
    for start in reversed(range(CHAIN_INLINE, len(then), CHAIN_INLINE)):
        key = new_id()
        links = [*then[start : start + CHAIN_INLINE], *tail]
        plan.chains[key] = typed_json.dumps({"links": links})
        tail = [stored_chain(key)]
    return [*then[:CHAIN_INLINE], *tail]


def _build_chord(
    app: TaskQ,
    plan: Plan,
    header: Element,
    body: Element,
    prefix: list[Any],
    membership: Membership | None,
    parent: Message | None,
) -> None:
    if membership is not None:  # the chord is itself a member: its callback finishes that
        body = {
            **body,
            "options": {**body["options"], "membership": dataclasses.asdict(membership)},
        }
    if not members(header):
        _build(app, plan, body, [[]], [], None, parent)
    else:
        _build_members(app, plan, header, body, prefix, parent)


def _build_members(
    app: TaskQ,
    plan: Plan,
    group: Element,
    chord: Element | None,
    prefix: list[Any],
    parent: Message | None,
) -> None:
    group_id = group["options"]["group_id"]
    tasks = members(group)
    plan.groups[group_id] = [result_tree(task) for task in tasks]
    for index, task in enumerate(tasks):
        _build(app, plan, task, prefix, [], Membership(group_id, index, len(tasks), chord), parent)


def _message(
    app: TaskQ,
    element: Element,
    prefix: list[Any],
    then: list[Element],
    membership: Membership | None,
    parent: Message | None,
) -> Message:
    options = dict(element["options"])
    links, errbacks = options.pop("link", []), options.pop("link_error", [])
    outer = options.pop("membership", None)
    membership = membership or (Membership(**outer) if outer else None)
    args = element["args"] if element.get("immutable") else [*prefix, *element["args"]]
    call: CallOptions = {key: value for key, value in options.items() if key in CALL_OPTIONS}  # type: ignore[assignment]
    message = app.build_message(element["task"], args, element["kwargs"], **call)
    message.chain, message.callbacks, message.errbacks = then, links, errbacks
    if membership is not None:
        message.group_id, message.group_index = membership.group_id, membership.index
        message.group_size, message.chord = membership.size, membership.chord
    if parent is not None:
        message.parent_id, message.root_id = parent.id, parent.root_id or parent.id
    return message


def _links_moved_inside(element: Element) -> Element:
    """A chain's or chord's own links on the tasks that end it, as Celery places them: a
    chain's `link` on its last member and its `link_error` on every member (the one that
    fails runs it), a chord's on its body (which fails with `ChordError` when a member does)."""
    links = _links_of(element)
    if not links:
        return element
    bare, kwargs = _without_links(element), element["kwargs"]
    if kind_of(element) == CHORD:
        return {**bare, "kwargs": {**kwargs, "body": _with_links(kwargs["body"], links)}}
    *tasks, last = members(element)
    errbacks = {"link_error": links.get("link_error", [])}
    moved = [*(_with_links(task, errbacks) for task in tasks), _with_links(last, links)]
    return {**bare, "kwargs": {**kwargs, "tasks": moved}}


def _after_group(
    group: Element, then: list[Element], membership: Membership | None
) -> list[Element]:
    """What waits for a group to finish: its own links (run by a `GROUP_RESULTS_TASK`
    with its results), the rest of a chain, the count of the chord it is a member of
    (which the same task joins with the group's results); nothing for a plain group."""
    links = _links_of(group)
    counted = membership is not None and membership.chord is not None
    if links or (counted and not then):
        return [_builtin(GROUP_RESULTS_TASK, links), *then]
    return then


def _builtin(task: str, options: dict[str, Any]) -> Element:
    """A frozen call of the builtin `task` with these options."""
    return freeze({"task": task, "args": [], "kwargs": {}, "options": options, "immutable": False})


def _links_of(element: Element) -> dict[str, list[Element]]:
    return {key: element["options"][key] for key in _LINKS if element["options"].get(key)}


def _without_links(element: Element) -> Element:
    options = {key: value for key, value in element["options"].items() if key not in _LINKS}
    return {**element, "options": options}


def _with_links(element: Element, links: dict[str, list[Element]]) -> Element:
    options = dict(element["options"])
    for key, added in links.items():
        if added:
            options[key] = [*options.get(key, []), *added]
    return {**element, "options": options}


def _as_chain(elements: list[Element]) -> Element:
    if len(elements) == 1:
        return elements[0]
    tasks = {"tasks": elements}
    return {
        "task": "taskq.chain",
        "args": [],
        "kwargs": tasks,
        "options": {},
        "immutable": False,
        "subtask_type": CHAIN,
    }


# -- in the worker, after a task of a workflow finished ---------------------------------


async def replace(runtime: Advancing, message: Message, element: Element) -> None:
    """Launch `element` in the place of the task of `message` (`Task.replace`): its task
    whose result is the element's takes the message's id (a group's results are gathered
    by a `GROUP_RESULTS_TASK`), with the message's links, before the rest of its chain, as
    the member of its group or chord."""
    element = _with_result_id(element, message.id)
    links = {"link": message.callbacks, "link_error": message.errbacks}
    element = _with_links(element, {key: value for key, value in links.items() if value})
    membership, send = Membership.of(message), runtime.send_messages
    await launch(runtime.app, element, [], message.chain, membership, message, send=send)


async def add_to_chord(
    runtime: Advancing, message: Message, token: str, element: Element
) -> AsyncResult[Any]:
    """Add `element` to the chord `message`'s task is a member of (`Task.add_to_chord`), as
    its member after the last one: recorded where the chord is counted (once per `token`,
    so a redelivered caller adds the same member again), then published. Counting the
    chord reads what was added, and the caller has not counted itself yet, so the callback
    cannot start before the added member ends."""
    membership = Membership.of(message)
    assert membership is not None and membership.chord is not None
    app, group_id = runtime.app, membership.group_id
    element = freeze(element)
    found = _result_task(element)
    task_id = found["options"]["task_id"] if found is not None else new_id()
    counter = runtime.chord_counter
    publishes = _callbacks_of(app, membership) if counter is not None else None
    if counter is not None and publishes is not None:
        queue = publishes.callback.queue
        added = await counter.add_member(queue, group_id, token, task_id)
    else:
        store = await app.connected_store()
        added = await store.chord_add_member(group_id, token, task_id)
    grown = dataclasses.replace(membership, index=membership.size + added.position)
    element = _with_result_id(element, added.task_id)
    await launch(app, element, [], None, grown, message, send=runtime.send_messages)
    return AsyncResult(added.task_id, app=app)


def _with_result_id(element: Element, task_id: str) -> Element:
    """`element` (frozen) whose result is that of a task with id `task_id` (a group's
    results gathered by a `GROUP_RESULTS_TASK`)."""
    found = _result_task(element)
    if found is None:
        found = _builtin(GROUP_RESULTS_TASK, {})
        element = _as_chain([element, found])
    found["options"]["task_id"] = task_id
    return element


def _result_task(element: Element) -> Element | None:
    """The task of `element` whose result is the element's; None for a group's."""
    kind = kind_of(element)
    if kind == CHAIN:
        return _result_task(members(element)[-1])
    if kind == CHORD:
        return _result_task(element["kwargs"]["body"])
    return None if kind == GROUP else element


def in_workflow(message: Message) -> bool:
    return bool(message.chain or message.group_size or message.callbacks or message.errbacks)


def reads_results_next(message: Message) -> bool:
    """Whether what this task's success starts may read its stored result: the rest of a
    chain, the callback of the chord it belongs to, or a link. A plain group's member
    starts nothing."""
    return bool(message.chain or message.chord or message.callbacks)


async def task_succeeded(runtime: Advancing, message: Message, value: Any) -> None:
    app, send = runtime.app, runtime.send_messages
    membership = Membership.of(message)
    if message.chain:
        first, *rest = await _unstored_head(app, message.chain)
        await launch(app, first, [value], rest, membership, message, send=send)
    elif membership is not None and membership.chord is not None:
        await _member_done(runtime, message, membership, value, None)
    for callback in message.callbacks:
        await launch(app, callback, [value], parent=message, send=send)


async def task_failed(runtime: Advancing, message: Message, meta: TaskMeta) -> None:
    app = runtime.app
    later = message.chain
    while later:
        later = await _unstored_head(app, later)
        await _fail_all(app, later[0], meta)
        later = later[1:]
    membership = Membership.of(message)
    if membership is not None and membership.chord is not None:
        await _member_done(runtime, message, membership, None, meta)
    error = {"type": meta.exc_type, "message": meta.exc_message}
    for errback in message.errbacks:
        await launch(app, errback, [message.id, error], parent=message, send=runtime.send_messages)


async def _member_done(
    runtime: Advancing,
    message: Message,
    membership: Membership,
    value: Any,
    failure: TaskMeta | None,
) -> None:
    app, counter = runtime.app, runtime.chord_counter
    part = chord_part(app, message, membership, value, failure) if counter else None
    if counter is not None and part is not None:
        await counter.chord_part_done(part)
    else:
        await _store_member_done(runtime, membership)


def chord_part(
    app: TaskQ, message: Message, membership: Membership, value: Any, failure: TaskMeta | None
) -> ChordPart | None:
    """What a `ChordCounter` broker records for the finished member `message` (`failure`
    if it failed, else its `value`); None if the callback is not one JSON envelope (a
    group or chord as the body, another serializer): then the store counts."""
    publishes = _callbacks_of(app, membership)
    if publishes is None:
        return None
    outcome, failed = _outcome(message, membership.index, value, failure)
    return ChordPart(
        membership.group_id, membership.index, membership.size, outcome, failed, publishes
    )


class _Callbacks:
    """Each chord's `ChordCallback` (or None), built once per process: it is the same for
    every member, except for a callback due at a time, which counts from the last one."""

    LIMIT = 1024  # chords remembered; the oldest is forgotten first

    def __init__(self) -> None:
        self._built: dict[str, ChordCallback | None] = {}

    def of(self, app: TaskQ, membership: Membership) -> ChordCallback | None:
        if membership.group_id in self._built:
            return self._built[membership.group_id]
        assert membership.chord is not None
        built = _chord_callback(app, membership.chord)
        if built is None or built.callback.eta is None:
            self._built[membership.group_id] = built
            if len(self._built) > self.LIMIT:
                del self._built[next(iter(self._built))]
        return built


_callbacks: weakref.WeakKeyDictionary[TaskQ, _Callbacks] = weakref.WeakKeyDictionary()


def _callbacks_of(app: TaskQ, membership: Membership) -> ChordCallback | None:
    """What a `ChordCounter` publishes when the chord of `membership` ends; None if it is
    not one JSON envelope (the store counts that chord)."""
    return _callbacks.setdefault(app, _Callbacks()).of(app, membership)


def _chord_callback(app: TaskQ, body: Element) -> ChordCallback | None:
    """The one JSON message launching `body` with the results would send, `CHORD_RESULTS`
    in their place, and its failure; None if launching it sends more than one message or
    stores anything first."""
    plan = Plan()
    outer = body["options"].get("membership")
    _build(app, plan, body, [CHORD_RESULTS], [], Membership(**outer) if outer else None, None)
    single = len(plan.messages) == 1 and not plan.groups and not plan.chains
    if not single or plan.messages[0].content_type != JSON:
        return None
    callback = plan.messages[0]
    failure = dataclasses.replace(callback, task=CHORD_ERROR_TASK, args=[CHORD_RESULTS], kwargs={})
    return ChordCallback(callback, failure)


def _outcome(
    message: Message, index: int, value: Any, failure: TaskMeta | None
) -> tuple[bytes, bool]:
    """The member's result as JSON, or the failure that `taskq.chord_error` raises."""
    if failure is None:
        try:
            return typed_json.dumps(value), False
        except TypeError as exc:
            reason = f"MessageError: result is not serializable: {exc}"
    else:
        reason = f"{failure.exc_type}: {failure.exc_message}"
    return orjson.dumps({"index": index, "id": message.id, "reason": reason}), True


async def _store_member_done(runtime: Advancing, membership: Membership) -> None:
    app = runtime.app
    store = await app.connected_store()
    if not await store.chord_part_done(membership.group_id, str(membership.index), membership.size):
        return
    body = membership.chord
    assert body is not None
    group = await GroupResult.restore(membership.group_id, app=app)
    if group is None:
        raise ChordError(f"chord {membership.group_id}: its group is no longer in the store")
    added = await store.chord_added(membership.group_id)
    results = [*group.results, *(AsyncResult(task_id, app=app) for task_id in added)]
    leaves = [result.id for result in _leaves(results)]
    metas = dict(zip(leaves, await store.get_many(leaves), strict=True))
    send = runtime.send_messages
    failed = next(
        (
            (index, leaf)
            for index, member in enumerate(results)
            for leaf in _leaves([member])
            if not _succeeded(metas[leaf.id])
        ),
        None,
    )
    outer = body["options"].get("membership")
    if failed is None:
        values = [_value(member, metas) for member in results]
        outer_membership = Membership(**outer) if outer else None
        await launch(app, body, [values], membership=outer_membership, send=send)
        return
    index, leaf = failed
    meta = metas[leaf.id]
    reason = f"{meta.exc_type}: {meta.exc_message}" if meta else "no result"
    described = {"index": index, "id": leaf.id, "reason": reason}
    outer_membership = Membership(**outer) if outer else None
    await launch(app, _failing(body), [described], membership=outer_membership, send=send)


def _failing(element: Element) -> Element:
    """`element` starting with a `CHORD_ERROR_TASK` in place of its first task (or before
    it, when a group or chord starts it): it fails with the chord's `ChordError`, and what
    follows, the chord it is a member of and its errbacks go on as after any failure."""
    kind = kind_of(element)
    if kind == CHAIN:
        first, *rest = members(element)
        return {**element, "kwargs": {**element["kwargs"], "tasks": [_failing(first), *rest]}}
    if kind is None:
        return {**element, "task": CHORD_ERROR_TASK, "args": [], "kwargs": {}, "immutable": False}
    return _as_chain([_builtin(CHORD_ERROR_TASK, {}), element])


def _leaves(results: list[Any]) -> list[AsyncResult[Any]]:
    """The task results of a saved group's members, nested groups' members included."""
    return [
        leaf
        for result in results
        for leaf in (_leaves(result.results) if isinstance(result, GroupResult) else [result])
    ]


def _succeeded(meta: TaskMeta | None) -> bool:
    return meta is not None and meta.status == states.SUCCESS


def _value(result: Any, metas: dict[str, TaskMeta | None]) -> Any:
    """A chord member's value: its task's result, or a list for a group that ends it."""
    if isinstance(result, GroupResult):
        return [_value(member, metas) for member in result.results]
    meta = metas[result.id]
    assert meta is not None
    return meta.result


async def _unstored_head(app: TaskQ, chain: list[Element]) -> list[Element]:
    """`chain` whose first link is a task or a workflow, not a `stored_chain`: the chunk
    it names read from the result store in its place."""
    while kind_of(chain[0]) == STORED_CHAIN:
        key = CHAIN_KEY.format(chain[0]["kwargs"]["key"])
        raw = await (await app.connected_store()).get_key(key)
        if raw is None:
            raise MessageError(f"chain: its links stored under {key!r} are no longer stored")
        signing = await _signing(app)
        chain = [*_stored_links(raw if signing is None else signing.verified(raw), key), *chain[1:]]
    return chain


def _stored_links(raw: bytes, key: str) -> list[Element]:
    """The links of a stored chunk, checked as a message's are; `MessageError` otherwise."""
    try:
        stored = typed_json.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"malformed message: {key} is not JSON ({exc})") from None
    links = stored.get("links") if type(stored) is dict else None
    check_elements(links, f"{key}.links")
    assert isinstance(links, list)
    return links


async def _fail_all(app: TaskQ, element: Element, meta: TaskMeta) -> None:
    """Record `meta`'s failure for every task of `element` (they will not run)."""
    store = await app.connected_store()
    for task_id in result_ids(element):
        await store.set_state(
            task_id, dataclasses.replace(meta, task_id=task_id), app.conf.result_expires
        )
