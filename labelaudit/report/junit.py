"""JUnit XML for ``labelaudit check``: one test case per limit, so CI systems (GitLab, Jenkins,
Azure, GitHub test reporters) show which limit a batch broke and which rows or classes broke it."""

from __future__ import annotations

import datetime as dt
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from .files import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    from ..gate import CheckResult

TESTCASE_CLASSNAME = "labelaudit.check"
# Characters XML 1.0 does not allow, even escaped (paths and labels come from user files).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def junit_tree(result: "CheckResult") -> ET.ElementTree:
    """``<testsuites><testsuite>`` with one ``<testcase>`` per limit; a broken limit has a
    ``<failure>`` whose message is the one-line outcome and whose text lists the offenders."""
    n_tests, n_failures = len(result.limits), len(result.failed_limits)
    seconds = f"{result.timings.get('total_seconds', 0.0):.3f}"
    suites = ET.Element("testsuites", name="labelaudit check", tests=str(n_tests), failures=str(n_failures),
                        errors="0", time=seconds)
    suite = ET.SubElement(suites, "testsuite", {
        "name": _clean(f"labelaudit check {result.batch_csv.name}"),
        "tests": str(n_tests), "failures": str(n_failures), "errors": "0", "skipped": "0", "time": seconds,
        "timestamp": dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(timespec="seconds"),
    })
    properties = ET.SubElement(suite, "properties")
    for name, value in (("batch", result.batch_csv), ("model", result.model_dir), ("report", result.report_path),
                        ("audited", result.audited), ("skipped", result.skipped),
                        ("estimated_error_rate", f"{result.error_rate.rate:.6f}"),
                        ("interval_low", f"{result.error_rate.low:.6f}"),
                        ("interval_high", f"{result.error_rate.high:.6f}"),
                        ("flagged_rows", result.n_issues)):
        ET.SubElement(properties, "property", name=name, value=_clean(str(value)))
    for limit in result.limits:
        case = ET.SubElement(suite, "testcase", classname=TESTCASE_CLASSNAME, name=_clean(_case_name(limit)),
                             time="0")
        if not limit.passed:
            failure = ET.SubElement(case, "failure", message=_clean(limit.message), type="LimitExceeded")
            failure.text = _clean("\n".join([limit.message, *limit.offenders]))
    system_out = ET.SubElement(suite, "system-out")
    system_out.text = _clean(
        f"estimated error rate {result.error_rate.rate:.4f} (95% interval {result.error_rate.low:.4f}-"
        f"{result.error_rate.high:.4f}) over {result.audited} audited rows; {result.n_issues} flagged; "
        f"report {result.report_path}"
    )
    tree = ET.ElementTree(suites)
    ET.indent(tree)
    return tree


def write_junit(result: "CheckResult", path: str | Path) -> Path:
    """Write :func:`junit_tree` to ``path`` (UTF-8, with XML declaration), atomically."""
    path = Path(path)
    with atomic_path(path) as temporary:
        junit_tree(result).write(temporary, encoding="utf-8", xml_declaration=True)
    return path


def _case_name(limit) -> str:
    if limit.name == "leakage":  # a switch, not a number
        return limit.option
    if limit.name in ("max_error_rate", "max_class_error_rate"):
        return f"{limit.option} {limit.limit:g}"
    return f"{limit.option} {int(limit.limit)}"


def _clean(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)
