"""Deferrable waits: a transfer waits for its wave's window in the triggerer, holding no worker slot."""

from __future__ import annotations

import datetime as dt
import os

from airflow.sdk import BaseOperator


class WaitForWindowOperator(BaseOperator):
    """Returns at once inside the domain's transfer window; otherwise defers until it opens.

    The wait is Airflow's ``DateTimeTrigger`` in the triggerer. On resume the window is checked
    again (the catalogue may have changed meanwhile), so the task defers as often as needed.
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, domain: str, **kwargs):
        super().__init__(**kwargs)
        self.domain = domain

    def execute(self, context, event=None) -> None:
        from airflow.providers.standard.triggers.temporal import DateTimeTrigger

        from hdh_migration.catalogue import cached_catalogue

        catalogue = cached_catalogue(os.environ.get("HDH_CATALOGUE"))
        domain = catalogue.domain(self.domain)
        window = catalogue.wave(domain).window
        now = dt.datetime.now(dt.UTC)
        opens = window.next_open(now)
        if opens <= now:
            self.log.info("%s: wave %d's transfer window is open", domain.name, domain.wave)
            return
        self.log.info(
            "%s: waiting for wave %d's transfer window: opens at %s (%s local), in %.0f s; deferred to the triggerer",
            domain.name,
            domain.wave,
            opens.isoformat(timespec="seconds"),
            opens.astimezone(window.tz).isoformat(timespec="seconds"),
            (opens - now).total_seconds(),
        )
        self.defer(trigger=DateTimeTrigger(moment=opens), method_name="execute")
