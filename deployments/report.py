"""Report stage: redact, store the report JSON in S3 (raw transcript encrypted beside it), point 'latest' at it."""

from __future__ import annotations

import asyncio

from ray import serve

from callqc.jobs import job_store_from_settings
from callqc.report import Report, save_report
from callqc.settings import load_settings


@serve.deployment(name="ReportWriter")
class ReportWriter:
    def __init__(self) -> None:
        self.jobs = job_store_from_settings(load_settings())

    async def write(self, report: Report) -> str:
        return await asyncio.to_thread(save_report, self.jobs, report)
