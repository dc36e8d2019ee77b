"""Batch jobs under a budget: an OpenAI Batch file sent as ordinary calls through a guard.

``tokenward batch run REQUESTS.jsonl --budget total_tokens=10000000 --out RESULTS.jsonl`` on the
command line, :func:`run` in Python. See :mod:`tokenward.batch.runner` for how a job stays within
its budget (never clamping a record, concurrency that narrows as the budget runs out) and resumes
after a kill, and :mod:`tokenward.batch.records` for the file formats.
"""

from tokenward.batch.records import URLS, BatchRecord, OutputState, read_output, read_records
from tokenward.batch.report import BatchReport, BudgetLine, CrashCharge
from tokenward.batch.runner import Progress, check_files, job_budgets, remainder_path_for, run

__all__ = [
    "URLS",
    "BatchRecord",
    "BatchReport",
    "BudgetLine",
    "CrashCharge",
    "OutputState",
    "Progress",
    "check_files",
    "job_budgets",
    "read_output",
    "read_records",
    "remainder_path_for",
    "run",
]
