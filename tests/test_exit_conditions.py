"""Exit-condition rules: which exit options apply, and Azure's defaults."""

from __future__ import annotations

from typing import Any

import pytest

from shoal.core import errors
from shoal.domain.batch import exits

PERFORMS = {"onTaskFailure": "performexitoptionsjobaction"}
CONDITIONS: dict[str, Any] = {"exitConditions": {
    "exitCodes": [{"code": 3, "exitOptions": {"dependencyAction": "satisfy", "jobAction": "none"}},
                  {"code": 0, "exitOptions": {"jobAction": "terminate"}}],
    "exitCodeRanges": [{"start": 2, "end": 9, "exitOptions": {"jobAction": "disable"}}],
    "preProcessingError": {"dependencyAction": "satisfy"},
    "default": {"jobAction": "none"}}}


def info(code: int | None, failure: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {} if code is None else {"exitCode": code}
    if failure or (code not in (None, 0)):
        out["failureInfo"] = {"category": "usererror", "code": failure or "FailureExitCode"}
    return out


def test_defaults_without_exit_conditions() -> None:
    assert exits.satisfies_dependents({}, info(0))
    assert not exits.satisfies_dependents({}, info(1))
    assert exits.job_action({}, PERFORMS, info(0)) == "none"
    assert exits.job_action({}, PERFORMS, info(1)) == "terminate"
    assert exits.job_action({}, {}, info(1)) == "none"  # the job does not perform exit-option actions


def test_exact_codes_win_over_ranges_and_ranges_over_default() -> None:
    assert exits.job_action(CONDITIONS, PERFORMS, info(3)) == "none"
    assert exits.satisfies_dependents(CONDITIONS, info(3))
    assert exits.job_action(CONDITIONS, PERFORMS, info(5)) == "disable"
    assert not exits.satisfies_dependents(CONDITIONS, info(5))  # the range leaves dependencyAction to default
    assert exits.job_action(CONDITIONS, PERFORMS, info(42)) == "none"  # default


def test_exit_code_zero_needs_an_explicit_entry() -> None:
    assert exits.job_action(CONDITIONS, PERFORMS, info(0)) == "terminate"
    only_default = {"exitConditions": {"default": {"jobAction": "disable", "dependencyAction": "block"}}}
    assert exits.job_action(only_default, PERFORMS, info(0)) == "none"
    assert exits.satisfies_dependents(only_default, info(0))


def test_pre_processing_and_upload_errors_use_their_own_entry_then_default() -> None:
    assert exits.satisfies_dependents(CONDITIONS, info(None, "BlobNotFound"))
    assert exits.job_action(CONDITIONS, PERFORMS, info(None, "BlobNotFound")) == "terminate"
    assert exits.job_action(CONDITIONS, PERFORMS, info(1, "FileUploadMiscError")) == "none"  # default
    # An exit code listed explicitly wins over the upload error that followed it.
    assert exits.job_action(CONDITIONS, PERFORMS, info(0, "FileUploadMiscError")) == "terminate"
    assert exits.job_action(CONDITIONS, PERFORMS, info(5, "FileUploadMiscError")) == "disable"
    uploads = {"exitConditions": {"fileUploadError": {"jobAction": "disable"}}}
    assert exits.job_action(uploads, PERFORMS, info(0, "FileUploadContainerNotFound")) == "disable"


@pytest.mark.parametrize("conditions, prop", [
    ({"default": {"jobAction": "explode"}}, "exitConditions.default.jobAction"),
    ({"exitCodes": [{"code": "x"}]}, "exitConditions.exitCodes[0].code"),
    ({"exitCodeRanges": [{"start": 5, "end": 1}]}, "exitConditions.exitCodeRanges[0]"),
    ({"fileUploadError": {"dependencyAction": "never"}}, "exitConditions.fileUploadError.dependencyAction"),
])
def test_bad_exit_conditions_name_the_property(conditions: dict[str, Any], prop: str) -> None:
    with pytest.raises(errors.AzureError) as info_:
        exits.validate({"exitConditions": conditions}, PERFORMS)
    assert info_.value.status == 400 and info_.value.values["PropertyName"] == prop


def test_job_actions_need_a_job_that_performs_them() -> None:
    exits.validate({"exitConditions": {"default": {"jobAction": "terminate"}}}, PERFORMS)
    with pytest.raises(errors.AzureError) as info_:
        exits.validate({"exitConditions": {"default": {"jobAction": "terminate"}}}, {"onTaskFailure": "noaction"})
    assert info_.value.code == "InvalidPropertyValue"
