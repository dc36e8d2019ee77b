"""Reports over usage events: chargeback/showback, sessions, SLOs, efficiency, A/B, utilisation.

Each report is a pure function over :class:`~tokenward.observe.rows.Row` streams (from
:func:`~tokenward.observe.rows.open_rows`), returning values with exact ``Decimal`` money and a
``table()``/``*_table()`` form that :func:`~tokenward.observe.reports.output.write_table` writes
as a terminal table, CSV, JSON or Parquet. The CLI (``tokenward report ...``) and the admin API
call the same functions.
"""

from tokenward.observe.reports.ab import ABArm, ab_table, ab_test
from tokenward.observe.reports.chargeback import (
    ChargebackLine,
    ChargebackReport,
    chargeback,
    dimension,
    fields_for,
)
from tokenward.observe.reports.efficiency import Efficiency, efficiency, efficiency_table
from tokenward.observe.reports.output import FORMATS, Table, write_table
from tokenward.observe.reports.sessions import (
    SessionCost,
    StepCost,
    TaskCost,
    session_costs,
    session_steps,
    sessions_table,
    steps_table,
    summarize,
    task_costs,
    tasks_table,
)
from tokenward.observe.reports.slo import SLO, SLOResult, evaluate, parse_slo, slo_table
from tokenward.observe.reports.utilisation import Utilisation, utilisation, utilisation_table

__all__ = [
    "FORMATS",
    "SLO",
    "ABArm",
    "ChargebackLine",
    "ChargebackReport",
    "Efficiency",
    "SLOResult",
    "SessionCost",
    "StepCost",
    "Table",
    "TaskCost",
    "Utilisation",
    "ab_table",
    "ab_test",
    "chargeback",
    "dimension",
    "efficiency",
    "efficiency_table",
    "evaluate",
    "fields_for",
    "parse_slo",
    "session_costs",
    "session_steps",
    "sessions_table",
    "slo_table",
    "steps_table",
    "summarize",
    "task_costs",
    "tasks_table",
    "utilisation",
    "utilisation_table",
    "write_table",
]
