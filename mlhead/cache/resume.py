"""Can what is already on disk be kept? One pure decision for complete caches and interrupted partials.

:func:`resume_decision` compares the fingerprint of what exists (a complete cache's ``fingerprint_json``
or a partial's ``progress.json``) with the fingerprint of the run about to start. It reads no file and
raises nothing; callers turn a ``refuse`` into a :class:`~mlhead.errors.CacheError` in their own words.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fingerprint import describe_changes, diff_fingerprints, fingerprint_digest

#: nothing exists: write from scratch
FRESH = "fresh"
#: the same inputs: a complete cache is up to date, a partial is resumed
KEEP = "keep"
#: only ``on_error`` changed and the existing rows are exactly what the new run writes: keep them,
#: recording the new fingerprint (a partial) or leaving the complete cache as it is
ADOPT = "adopt"
#: other inputs and ``force``: discard what exists and start afresh
DISCARD = "discard"
#: other inputs without ``force``: stop with an error naming the changed fields
REFUSE = "refuse"


@dataclass(frozen=True)
class ResumeDecision:
    """What to do with an existing cache or partial (``action``: one of FRESH, KEEP, ADOPT, DISCARD,
    REFUSE), with the changed fingerprint fields (sorted names) and one readable line per change."""

    action: str
    changed: tuple[str, ...] = ()
    details: tuple[str, ...] = ()

    @property
    def keeps_rows(self) -> bool:
        """True when the existing rows are kept (KEEP or ADOPT)."""
        return self.action in (KEEP, ADOPT)


def resume_decision(old_fingerprint: dict | None, new_fingerprint: dict, force: bool,
                    old_skipped: int | None = None) -> ResumeDecision:
    """Decide whether rows made under ``old_fingerprint`` can serve a run with ``new_fingerprint``.

    * ``old_fingerprint`` None (nothing on disk) -> FRESH;
    * same digest -> KEEP (``force`` does not discard rows a fresh run would write identically);
    * only ``on_error`` differs, and the old run was ``raise`` (it never skips) or skipped nothing
      (``old_skipped == 0``; None: unknown) -> ADOPT: its rows are the rows the new run writes;
    * otherwise ``force`` -> DISCARD, else REFUSE.

    Pure: reads and writes nothing. ``changed``/``details`` name the fields that differ (empty for
    FRESH/KEEP). Whether ``force`` rebuilds a complete cache that is up to date is the caller's choice.
    """
    if old_fingerprint is None:
        return ResumeDecision(FRESH)
    if fingerprint_digest(old_fingerprint) == fingerprint_digest(new_fingerprint):
        return ResumeDecision(KEEP)
    changed = tuple(diff_fingerprints(old_fingerprint, new_fingerprint))
    details = tuple(describe_changes(old_fingerprint, new_fingerprint))
    harmless = old_fingerprint.get("on_error") == "raise" or old_skipped == 0
    if changed == ("on_error",) and harmless:
        return ResumeDecision(ADOPT, changed, details)
    return ResumeDecision(DISCARD if force else REFUSE, changed, details)

