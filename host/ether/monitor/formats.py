"""How values are written on screen. ``Format(stable=True)`` hides what changes from run to run (times,
process ids, rates, sizes, paths, ports), so a screenshot of a real session compares equal."""

from __future__ import annotations

import time


class Format:
    def __init__(self, stable: bool = False) -> None:
        self.stable = stable

    def rate(self, per_second: float) -> str:
        if self.stable:
            return "·/s"
        if per_second >= 1000:
            return f"{per_second / 1000:.1f}k/s"
        return f"{per_second:.1f}/s" if per_second else "0/s"

    def bytes_rate(self, per_second: float) -> str:
        if self.stable:
            return "· B/s"
        return f"{self.size(int(per_second))}/s" if per_second else "0 B/s"

    def age(self, seconds: float) -> str:
        """How long ago: ``0.3s``, ``12s``, ``4m``, ``2h``."""
        if self.stable:
            return "·s"
        if seconds < 10:
            return f"{seconds:.1f}s"
        if seconds < 120:
            return f"{seconds:.0f}s"
        return f"{seconds / 60:.0f}m" if seconds < 7200 else f"{seconds / 3600:.0f}h"

    def jitter(self, seconds: float | None) -> str:
        if seconds is None:
            return "-"
        return "·ms" if self.stable else f"{1000 * seconds:.1f}ms"

    def seconds(self, seconds: float | None) -> str:
        """A short duration: ``40 ms``, ``1.2 s``."""
        if seconds is None:
            return "-"
        if self.stable:
            return "· s"
        return f"{1000 * seconds:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"

    def uptime(self, since: float | None) -> str:
        if since is None:
            return "-"
        if self.stable:
            return "··"
        seconds = max(0, int(time.time() - since))
        hours, rest = divmod(seconds, 3600)
        minutes, seconds = divmod(rest, 60)
        return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"

    def process(self, host: str, pid: int | None) -> str:
        if pid is None:
            return "-"
        return "host:pid" if self.stable else f"{host}:{pid}"

    def size(self, size: int | None) -> str:
        if size is None:
            return "?"
        if self.stable:
            return "· MB"
        scaled = float(size)
        for unit in ("B", "kB", "MB", "GB"):
            if scaled < 1000 or unit == "GB":
                return f"{scaled:.0f} {unit}" if unit == "B" else f"{scaled:.1f} {unit}"
            scaled /= 1000
        return "?"

    def path(self, path: str) -> str:
        if not path:
            return "-"
        return "<run folder>" if self.stable else path

    def clock(self, t: float) -> str:
        return "--:--:--" if self.stable else time.strftime("%H:%M:%S", time.localtime(t))

    def url(self, url: str) -> str:
        return url.rsplit(":", 1)[0] + ":PORT" if self.stable else url

    def count(self, n: int | None) -> str:
        return "?" if n is None else f"{n:,}"
