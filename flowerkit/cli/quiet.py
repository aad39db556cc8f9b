"""``--quiet``: warnings, errors and the final summary only, on the console; ``run.log`` still gets every line.

Prefect's INFO lines (flow and task run states) and ours (steps, evaluations) reach the console through
Prefect's console handler (flowerkit's logger is one of Prefect's extra loggers, and propagates to the root
logger's console handler). Raising that handler's level silences them there alone: the loggers keep INFO, so
the run's own ``run.log`` handler and Prefect's API log handler (the UI's log tab) still get everything.
"""

from __future__ import annotations

import logging
import os

# Prefect reads its logging.yml with overrides from PREFECT_LOGGING_<PATH>_<KEY> when it is imported.
CONSOLE_LEVEL_VAR = "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"


def quiet_console_logs() -> None:
    """Only WARNING and above on the console, from Prefect's console handler, for the rest of this process."""
    os.environ[CONSOLE_LEVEL_VAR] = "WARNING"  # for Prefect's logging set-up, which runs at its first import
    for handler in console_handlers():  # a Prefect imported already (in-process callers) keeps its handlers
        handler.setLevel(logging.WARNING)


SHUTDOWN_NOTICE = "Still processing items"
# Prefect's background services that send a run's events and logs to the server.
QUEUE_SERVICE_LOGGERS = ("EventsWorker", "APILogWorker")


class _ShutdownNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(SHUTDOWN_NOTICE)


def hide_shutdown_notices() -> None:
    """Prefect's event and log senders warn "Still processing items: N items remaining..." whenever the process
    ends with anything still queued, which a busy machine makes common: a notice about their own shutdown that
    nobody can act on, printed after a run's summary (and through ``--quiet``). The items are still sent;
    failures to send still log."""
    for name in QUEUE_SERVICE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _ShutdownNotice) for f in logger.filters):
            logger.addFilter(_ShutdownNotice())


def console_handlers() -> list[logging.Handler]:
    """Every handler that prints to the console through a rich Console (Prefect's console handlers)."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    return [h for logger in loggers for h in getattr(logger, "handlers", []) if hasattr(h, "console")]
