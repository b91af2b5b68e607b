"""Report stage: store the report JSON in S3 and point 'latest' at it."""

from __future__ import annotations

import asyncio

from ray import serve

from callqc.jobs import job_store_from_settings
from callqc.report import Report, report_json
from callqc.settings import load_settings


@serve.deployment(name="ReportWriter")
class ReportWriter:
    def __init__(self) -> None:
        self.jobs = job_store_from_settings(load_settings())

    async def write(self, report: Report) -> str:
        data = report_json(report)
        return await asyncio.to_thread(self.jobs.put_report, report.batch_id, report.call_id, data)
