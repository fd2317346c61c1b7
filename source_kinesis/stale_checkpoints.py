"""The ``stale_checkpoint`` rule, in one place: what happens when a saved checkpoint can no longer be honoured.

A checkpoint goes stale in four ways, each found where it shows (the stream was deleted and re-created; an unfinished
shard left ``ListShards``; a reader's iterator request for the checkpoint's sequence number is refused, or its shard
is gone mid-read; the first record read after the checkpoint is later than the checkpoint's own record). Every one
means records were lost to retention before they were read. Under ``fail`` the sync stops with a config_error telling
the user to reset the state (or accept the loss); under ``restart`` (the default) it warns, naming what was lost, and
goes on as the caller says.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from source_kinesis.errors import config_error


@dataclass(frozen=True)
class StaleCheckpointRule:
    policy: str  # config ``stale_checkpoint``: "restart" or "fail"

    def refusal(self, problem: str, reset: str = "Reset the stream's state") -> Optional[AirbyteTracedException]:
        """The error that ends the sync under ``fail`` (``problem``, then what to do); None under ``restart``, where
        the caller logs ``warning(problem, continuing)`` and goes on."""
        if self.policy == "fail":
            return config_error(f"{problem}. {reset}, or set stale_checkpoint to restart.")
        return None

    @staticmethod
    def warning(problem: str, continuing: str) -> str:
        """The log line under ``restart``: the problem, then how the sync goes on."""
        return f"{problem}; {continuing}"
