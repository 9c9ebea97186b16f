"""Environment of this function: EDGELOOP_DATA_BUCKET (required), EDGELOOP_USE_CASE or
EDGELOOP_USE_CASE_FILE (one of them required: see edgeloop.cloud.settings.DataPathSettings; its
monitoring.alert_notice_interval_s limits the alert notices), and where landed alerts go on:
EDGELOOP_EVENT_BUS (name or ARN; default "default"), EDGELOOP_ALERT_TOPIC_ARN (the operators' SNS
topic) and EDGELOOP_MONITORING_TABLE (the notice rate limit's items), the last two required: the
function takes both routes (predictions and alerts), and a stack that could land alerts but not pass
them on fails at its first invocation rather than at its first alert.

The settings also carry the IoT registry's line directory, built once with them per warm container.
"""

from __future__ import annotations

from pydantic import Field

from edgeloop.cloud.line_directory import WithLineDirectory
from edgeloop.cloud.settings import DataPathSettings, WithEventBus, WithMonitoringTable
from edgeloop.schemas import names

# An SNS topic ARN (topic names: 1-256 of letters, digits, - and _). Not a FIFO topic (".fifo"): its
# Publish needs a MessageGroupId, and notices need no order.
TOPIC_ARN_PATTERN = r"^arn:aws[\w-]*:sns:[a-z0-9-]+:[0-9]{12}:[A-Za-z0-9_-]{1,256}$"


class Settings(DataPathSettings, WithEventBus, WithMonitoringTable, WithLineDirectory):
    alert_topic_arn: str = Field(validation_alias=names.ALERT_TOPIC_ARN_ENV, pattern=TOPIC_ARN_PATTERN)

    @property
    def alert_notice_interval_s(self) -> int:
        return self.use_case_config.monitoring.alert_notice_interval_s
