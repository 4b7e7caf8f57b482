"""Delivers the core's notification intents the way luigid sends its e-mails.

The core only records what luigid would have e-mailed (``Scheduler.take_notifications()``);
this module sends it with Luigi's own code, looked up through ``luigi.scheduler`` when it runs
(so what luigid would use, including anything patched there, is what is used):

* ``disabled``: at once, ``notifications.send_error_email`` (``[email] receiver``);
* ``failure``, ``disable``, ``scheduling_failure`` (``[scheduler] batch_emails``): added to one
  ``luigi.batch_notifier.BatchNotifier``, which sends its digest when a prune finds
  ``[batch_email] email_interval`` has passed, and on ``flush`` (``dump()``, a graceful
  step-down).

Everything runs on one worker thread, so an SMTP round trip never blocks the event loop and
never fails or delays an RPC; Luigi's own SMTP code logs a server it cannot reach.  The digest
not sent yet lives in this process only: a leader killed before its interval ends loses it,
while a graceful step-down (switchover, SIGTERM) sends it first.
"""

from __future__ import annotations

import importlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def _luigi_scheduler() -> Any:
    return importlib.import_module("luigi.scheduler")


class Mailer:
    """One leader term's mail: a single sending thread and the pending batch."""

    def __init__(self, batch_emails: bool, log: Any) -> None:
        self._batch_emails = batch_emails
        self._log = log
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailer")
        self._batcher: Any = None

    def deliver(self, intents: list[dict[str, Any]]) -> None:
        if intents:
            self._submit(self._send_all, intents)

    def tick(self) -> None:
        """After a prune: send the batch if its interval has passed (luigid's ``_prune_emails``)."""
        if self._batch_emails:
            self._submit(self._update)

    def close(self, *, flush: bool) -> Future[None] | None:
        """End the term: send the pending batch first when ``flush``; never wait here."""
        done = self._submit(self._flush) if flush and self._batch_emails else None
        self._executor.shutdown(wait=False)
        return done

    def _submit(self, fn: Any, *args: Any) -> Future[Any] | None:
        try:
            return self._executor.submit(self._guarded, fn, *args)
        except RuntimeError:  # shut down: the term is over
            return None

    def _guarded(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            self._log.exception("notification_failed")

    def _batch(self) -> Any:
        if self._batcher is None:
            self._batcher = _luigi_scheduler().BatchNotifier()
        return self._batcher

    def _send_all(self, intents: list[dict[str, Any]]) -> None:
        for intent in intents:
            self._guarded(self._send_one, intent)

    def _send_one(self, intent: dict[str, Any]) -> None:
        kind = intent["kind"]
        if kind == "disabled":
            subject = f"Luigi Scheduler: DISABLED {intent['task_id']} due to excessive failures"
            body = (
                f"{intent['task_id']} failed {intent['failures']} times in the last {intent['window']} seconds, "
                f"so it is being disabled for {intent['persist']} seconds"
            )
            _luigi_scheduler().notifications.send_error_email(subject, body)
        elif kind == "failure":
            self._batch().add_failure(
                intent["task"], intent["family"], intent["params"], intent["expl"], intent["owners"]
            )
        elif kind == "disable":
            self._batch().add_disable(intent["task"], intent["family"], intent["params"], intent["owners"])
        elif kind == "scheduling_failure":
            self._batch().add_scheduling_fail(
                intent["task"], intent["family"], intent["params"], intent["expl"], intent["owners"]
            )
        elif kind == "flush":
            self._flush()
        self._log.info("notification_sent", kind=kind)

    def _update(self) -> None:
        self._batch().update()

    def _flush(self) -> None:
        if self._batcher is not None:
            self._batcher.send_email()
