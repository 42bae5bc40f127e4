"""The topic graph of a config, before anything runs: who publishes what, who listens, what is missing.

A pool (``workers: N``) is one node; a shared subscription (``$share/<group>/<filter>``) listens to
what its filter matches."""

from __future__ import annotations

from dataclasses import dataclass, field

from ether.config import Config, import_class
from ether.contract.topics import matches
from ether.runtime.decorators import spec_of


@dataclass
class TopicGraph:
    publishes: dict[str, set[str]] = field(default_factory=dict)  # instance -> topics
    subscribes: dict[str, set[str]] = field(default_factory=dict)  # instance -> topic filters
    pools: dict[str, int] = field(default_factory=dict)  # pool -> its number of workers

    @classmethod
    def of(cls, config: Config) -> TopicGraph:
        """One node per instance, and per pool (``workers: N``: its workers share one input)."""
        graph = cls()
        for worker, instance in config.instances.items():
            name = instance.pool or worker
            if name in graph.publishes:  # another worker of the same pool
                continue
            if instance.pool:
                graph.pools[name] = instance.workers
            klass = import_class(instance.class_path)
            graph.publishes[name], graph.subscribes[name] = set(), set()
            for attr in dir(klass):
                spec = spec_of(getattr(klass, attr, None))
                if spec and spec.pub:
                    graph.publishes[name].add(spec.pub.topic)
                if spec and spec.sub:
                    graph.subscribes[name].add(spec.sub.topic)
            if hasattr(klass, "graph_topics"):  # topics an instance uses without decorators (SimulatedBoard)
                publishes, subscribes = klass.graph_topics(*instance.args, **instance.kwargs)
                graph.publishes[name] |= set(publishes)
                graph.subscribes[name] |= set(subscribes)
        return graph

    def edges(self) -> list[tuple[str, str, str]]:
        """(publisher, topic, subscriber) for every topic that connects two instances."""
        return sorted(
            (pub, topic, sub)
            for pub, topics in self.publishes.items()
            for topic in topics
            for sub, filters in self.subscribes.items()
            if any(matches(f, topic) for f in filters)
        )

    def warnings(self) -> list[str]:
        fed = {
            (sub, f) for pub, topic, sub in self.edges() for f in self.subscribes[sub] if matches(f, topic)
        }
        heard = {(pub, topic) for pub, topic, _ in self.edges()}
        out = [
            f"instance '{sub}' subscribes to '{f}' but no instance publishes to it (only outside clients can feed it)"
            for sub, filters in sorted(self.subscribes.items())
            for f in sorted(filters)
            if (sub, f) not in fed
        ]
        out += [
            f"instance '{pub}' publishes to '{topic}' but no instance subscribes to it"
            for pub, topics in sorted(self.publishes.items())
            for topic in sorted(topics)
            if (pub, topic) not in heard
        ]
        return out

    def mermaid(self) -> str:
        lines = ["flowchart LR"]
        lines += [f"    {name}[{self._label(name)}]" for name in sorted(self.publishes)]
        lines += [f"    {pub} -->|{topic}| {sub}" for pub, topic, sub in self.edges()]
        return "\n".join(lines)

    def _label(self, name: str) -> str:
        return f"{name} x{self.pools[name]} workers" if name in self.pools else name
