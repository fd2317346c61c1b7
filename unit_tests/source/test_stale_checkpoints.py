"""The stale_checkpoint rule, the one function its four call sites (re-created stream, trimmed shard, refused or gone
iterator, a gap before the first record) use; the orchestrator and reader tests prove each site calls it."""
from airbyte_cdk.models import FailureType

from source_kinesis.stale_checkpoints import StaleCheckpointRule

PROBLEM = "Shard shardId-000000000001 of stream 'orders' was trimmed by retention before it was read to its end"


def test_fail_refuses_with_a_config_error_that_says_what_to_do():
    refusal = StaleCheckpointRule("fail").refusal(PROBLEM)
    assert refusal is not None and refusal.failure_type == FailureType.config_error
    assert refusal.message == PROBLEM + ". Reset the stream's state, or set stale_checkpoint to restart."
    custom = StaleCheckpointRule("fail").refusal(PROBLEM, reset="Reset the stream's state to read the new stream")
    assert custom is not None and custom.message.endswith("to read the new stream, or set stale_checkpoint to restart.")


def test_restart_goes_on_with_a_warning_that_says_how():
    assert StaleCheckpointRule("restart").refusal(PROBLEM) is None
    assert StaleCheckpointRule.warning(PROBLEM, "continuing with its children.") == PROBLEM + "; continuing with its children."
