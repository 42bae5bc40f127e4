"""``ether replay``: feed a recorded session's source messages through a (changed) pipeline, compare.

Source messages are the recorded messages that no other message caused (no parents) on topics the
new pipeline listens to and does not produce itself. Each is published again, in recorded order. The
pipeline is settled when a full round of ``sync`` requests (answered by each instance after everything
queued before it) leaves the recorder with nothing new. Then every derived message is keyed by its
topic and the source messages it descends from, and recorded and replayed payloads are compared.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from ether.contract.messages import InstanceCommand, RecorderCommand, read_reply
from ether.data.recorded import RecordedSession, find_session
from ether.data.recorder.store import connect, payload_of

MAX_ROUNDS = 100


def sources_of(db) -> dict[str, frozenset[str]]:
    """For every recorded message, the recorded source messages (no parents) it descends from.

    One pass over the store with memoised, iterative walks: linear in the messages and their parents.
    A parent that is not in the store contributes nothing; a message naming its own descendant as a
    parent (hostile input) cannot loop.
    """
    parents = {
        mid: json.loads(p)
        for mid, p in db.execute("SELECT msg_id, parents FROM messages WHERE msg_id IS NOT NULL")
    }
    memo: dict[str, frozenset[str]] = {}
    nothing: frozenset[str] = frozenset()
    for start in parents:
        stack, visiting = [start], set()
        while stack:
            mid = stack[-1]
            own = parents.get(mid)
            if mid in memo or own is None:
                memo.setdefault(mid, nothing)
                stack.pop()
                continue
            if not own:
                memo[mid] = frozenset((mid,))
                stack.pop()
                continue
            todo = [p for p in own if p not in memo and p not in visiting]
            if todo and mid not in visiting:
                visiting.add(mid)
                stack.extend(todo)
                continue
            known = [memo.get(p, nothing) for p in own]
            memo[mid] = known[0] if len(known) == 1 else frozenset().union(*known)
            stack.pop()
    return memo


def derived(db, rename: dict[str, str] | None = None) -> dict[tuple[str, tuple[str, ...]], Counter]:
    """Payloads of every message that has parents, per (topic, sources); sources renamed to recorded ids."""
    sources = sources_of(db)
    out: dict[tuple[str, tuple[str, ...]], Counter] = {}
    for row in db.execute("SELECT msg_id, topic, payload, data FROM messages WHERE parents != '[]'"):
        roots: Iterable[str] = sources.get(row["msg_id"], frozenset())
        if rename is not None:
            roots = [rename.get(r, r) for r in roots]
        out.setdefault((row["topic"], tuple(sorted(roots))), Counter())[_stored(row)] += 1
    return out


def _stored(row) -> str:
    """A stored payload as text to compare: its JSON, and a hash of its arrays and bytes if it has any."""
    data = row["data"]
    return (
        row["payload"] if data is None else f"{row['payload']} data sha256:{hashlib.sha256(data).hexdigest()}"
    )


def replay(recorded_path: str, config_path: str, timeout: float = 30.0) -> dict[str, Any]:
    from ether.runtime.session import new_session

    recorded = RecordedSession(recorded_path)
    session = new_session(config_path)
    subscribed = {m for i in session.config.instances.values() for m in _topics_of(i.class_path, "sub")}
    produced = {m for i in session.config.instances.values() for m in _topics_of(i.class_path, "pub")}
    sources = [
        r
        for r in recorded.db.execute("SELECT * FROM messages WHERE parents = '[]' ORDER BY row")
        if r["topic"] in subscribed and r["topic"] not in produced
    ]
    session.open(timeout)
    rename: dict[str, str] = {}
    try:
        session.start(timeout)
        for r in sources:
            meta = session.recording.publish(session.topics.data(r["topic"]), payload_of(r))
            if r["msg_id"]:
                rename[meta.id] = r["msg_id"]
        _settle(session, timeout)
    finally:
        session.close(timeout)
    if session.recording.run_dir is None:
        raise RuntimeError("the replay session was not recorded")
    db = connect(session.recording.run_dir, readonly=True)
    before, after = derived(recorded.db), derived(db, rename)
    result: dict[str, Any] = {
        "sources": len(sources),
        "same": 0,
        "differ": [],
        "run": str(session.recording.run_dir),
    }
    for topic, roots in sorted(before.keys() | after.keys()):
        old, new = before.get((topic, roots), Counter()), after.get((topic, roots), Counter())
        if old == new:
            result["same"] += 1
        else:
            result["differ"].append(
                {
                    "topic": topic,
                    "sources": list(roots),
                    "recorded": list(old.elements()),
                    "replayed": list(new.elements()),
                }
            )
    return result


def _settle(session, timeout: float) -> None:
    """Sync every instance until a whole round leaves the recorder's message count unchanged."""
    names = session.supervisor.running()
    last = -1
    for _ in range(MAX_ROUNDS):
        for name in names:
            session.supervisor.requester.request(
                session.topics.instance_control(name), InstanceCommand(command="sync"), timeout
            )
        reply = read_reply(
            session.supervisor.requester.request(
                session.topics.recorder_control(), RecorderCommand(command="barrier"), timeout
            )
        )
        if not reply.ok:
            raise RuntimeError(f"the recorder refused a barrier: {reply.error.message}")
        saved = reply.result["saved"]
        if saved == last:
            return
        last = saved


def _topics_of(class_path: str, kind: str) -> set[str]:
    from ether.config import import_class
    from ether.runtime.decorators import spec_of

    cls = import_class(class_path)
    topics = set()
    for attr in dir(cls):
        spec = spec_of(getattr(cls, attr, None))
        if spec is not None and getattr(spec, kind, None) is not None:
            topics.add(getattr(spec, kind).topic)
    return topics


def cmd_replay(args) -> int:
    result = replay(str(find_session(args.session, args.data)), args.config)
    print(f"replayed {result['sources']} source messages into {result['run']}")
    print(f"{result['same']} outputs identical, {len(result['differ'])} differ")
    for d in result["differ"][:20]:
        print(f"  {d['topic']} from {', '.join(d['sources'])}:")
        print(f"    recorded {d['recorded'][:3]}")
        print(f"    replayed {d['replayed'][:3]}")
    return 0 if not result["differ"] else 1
