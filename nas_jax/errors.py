"""The one exception class for expected, user-fixable errors (bad config, bad data, unusable files).

Every check that a user can fix raises :class:`UserError` (or a subclass) with one paragraph: what is
wrong, what is allowed, how to fix it. ``launch/main.py`` prints that paragraph without a traceback
(``--verbosity=1`` shows it). It subclasses ``ValueError`` so callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """An expected error with a message that says what is wrong and how to fix it."""
