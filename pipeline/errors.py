"""One error hierarchy; the CLI maps it to exit codes in one place.

    PipelineError                  exit 1 unless a subclass says otherwise
    ├── ConfigError                exit 2: bad config, flag or environment; nothing sent
    ├── InputError                 exit 2: the input can't be read as a whole; nothing sent
    ├── JournalError               exit 2: the run journal can't be used; nothing sent
    ├── ReportError                exit 1: the rejects report or summary can't be written
    └── EngageError                talking to Engage went wrong
        ├── TransientEngageError   retryable: connection, timeout, 409, 429, 5xx
        │   └── BatchInDoubtError  a 4xx after an attempt whose outcome is unknown
        ├── FatalEngageError       stops the run at once: 401, 403, unexpected answers
        ├── BatchRejectedError     any other 4xx: this batch, as is, will never be accepted
        └── NotSentError           the run stopped before the request left: nothing sent

Rows that fail are not errors: they become rows of the rejects report.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ABORTED = 1
EXIT_USAGE = 2
EXIT_REJECTS = 3


class PipelineError(Exception):
    """Base of every error points-import raises on purpose."""

    exit_code = EXIT_ABORTED


class ConfigError(PipelineError):
    """The config file, a flag or the environment is wrong."""

    exit_code = EXIT_USAGE


class InputError(PipelineError):
    """The input file can't be read as a whole (missing, empty, not text, no header...)."""

    exit_code = EXIT_USAGE


class JournalError(PipelineError):
    """The run journal is corrupt, foreign, newer or locked."""

    exit_code = EXIT_USAGE


class ReportError(PipelineError):
    """The rejects report or the summary can't be written (a full disk, say)."""


class EngageError(PipelineError):
    """Engage did not take a request."""

    def __init__(self, message: str, *, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class TransientEngageError(EngageError):
    """Worth retrying with the same Idempotency-Key."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, body=body)
        self.retry_after = retry_after


class FatalEngageError(EngageError):
    """Retrying can't help and nothing else should be sent (bad key, wrong URL)."""

    outcome_unknown = False  # an earlier attempt under the same key may have been applied


class BatchRejectedError(EngageError):
    """Engage refused this request as a whole; a smaller one may pass."""


class NotSentError(EngageError):
    """The run was asked to stop while the request waited for the rate limiter: it never
    left, so Engage has not seen it (its rows are unsent, not in doubt)."""


class BatchInDoubtError(TransientEngageError):
    """A batch refused (4xx) after an earlier attempt under its key had an unknown outcome
    (a timeout, a 5xx, a dropped connection), or whose reconciliation failed: that attempt
    may have been applied (and may still be in progress), so the batch is neither split nor
    sent under new keys. It stays in doubt, like a batch whose retries ran out: a later run
    sends the same key again, and reconciles it through the GET endpoints once Engage has
    forgotten the key."""
