"""A one-line progress bar on stderr for long benchmark runs (no dependency).

On a terminal the line is redrawn in place (carriage return) at most every
`interval` seconds; elsewhere (a log file, a pipe) nothing is drawn, so logs keep
only the result lines. ``clear()`` erases the bar before other output.
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class ProgressBar:
    def __init__(self, stream: Optional[TextIO] = None, width: int = 24,
                 enabled: Optional[bool] = None, interval: float = 0.1):
        self.stream = stream or sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.width = width
        self.interval = interval
        self.start = time.perf_counter()
        self._last = -1.0
        self._shown = 0
        self._first = None   # (time, fraction) of the first update: the rate's origin

    def line(self, fraction: float, label: str) -> str:
        """The bar's text for `fraction` done (0..1) and `label`."""
        fraction = min(max(fraction, 0.0), 1.0)
        full = int(round(fraction * self.width))
        now = time.perf_counter()
        elapsed = now - self.start
        if self._first is None:
            self._first = (now, fraction)
        t0, f0 = self._first
        eta = ""
        if fraction < 1 and fraction - f0 > 0.02:
            eta = f", ~{(now - t0) * (1 - fraction) / (fraction - f0):.0f} s left"
        return (f"[{'#' * full}{'.' * (self.width - full)}] {fraction * 100:3.0f}% "
                f"{elapsed:.0f} s{eta}  {label}")

    def update(self, fraction: float, label: str = "") -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if fraction < 1 and now - self._last < self.interval:
            return
        self._last = now
        text = self.line(fraction, label)
        pad = max(0, self._shown - len(text))
        self.stream.write("\r" + text + " " * pad)
        self.stream.flush()
        self._shown = len(text)

    def clear(self) -> None:
        """Erase the bar (before printing other lines)."""
        if self.enabled and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0
