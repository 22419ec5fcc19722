"""The hostile battery against the trainer: every attack of issue 9 reaches nothing behind the walls.

Each test looks at both modes of the module's battlefield: walled, where the attack
must have run (its loot file says so) and reached nothing; and the unwalled positive
control, where the same attack reaches its canary, so a payload that never ran cannot
pass. The walled model trains all the same.
"""

from __future__ import annotations

import math

import pytest

from copilot.events import CheckpointWritten, StepBatch, TrainerError
from tests.security.conftest import ORIGINAL_LEDGER, Battlefield
from tests.security.hostile import ATTACKS, FORGED_LEDGER_LINE, NETWORK_ATTACKS, SECRET, TRIGGERS


def blocked(result: str) -> bool:
    return result.startswith("blocked: ")


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_every_trigger_fired_every_attack_in_both_modes(fields: dict[str, Battlefield], trigger: str) -> None:
    for battlefield in fields.values():
        assert set(battlefield.loot(trigger)) == set(ATTACKS)


@pytest.mark.parametrize("attack", ["env_secret", "proc_environ", "home_credentials", "user_credentials"])
def test_no_secret_is_read(fields: dict[str, Battlefield], attack: str) -> None:
    for trigger in TRIGGERS:
        assert SECRET not in fields["walled"].loot(trigger)[attack]
        assert SECRET in fields["unwalled"].loot(trigger)[attack]


def test_the_parents_environment_is_out_of_reach(fields: dict[str, Battlefield]) -> None:
    for trigger in TRIGGERS:
        assert blocked(fields["walled"].loot(trigger)["parent_environ"])
        assert not blocked(fields["unwalled"].loot(trigger)["parent_environ"])


def test_the_walled_home_is_not_the_users(fields: dict[str, Battlefield]) -> None:
    assert "No such file" in fields["walled"].loot("forward")["home_credentials"]


@pytest.mark.parametrize("attack", NETWORK_ATTACKS)
def test_no_connection_or_datagram_arrives(fields: dict[str, Battlefield], attack: str) -> None:
    assert not fields["walled"].network_reached()[attack]
    assert all(blocked(fields["walled"].loot(trigger)[attack]) for trigger in TRIGGERS)
    assert fields["unwalled"].network_reached()[attack]
    assert not blocked(fields["unwalled"].loot("forward")[attack])


def test_no_file_is_written_outside_the_trainers_folder(fields: dict[str, Battlefield]) -> None:
    assert not fields["walled"].outside.exists()
    assert fields["unwalled"].outside.read_text(encoding="utf-8").startswith("owned")


def test_no_git_hook_is_planted(fields: dict[str, Battlefield]) -> None:
    assert not fields["walled"].hook.exists()
    assert "owned" in fields["unwalled"].hook.read_text(encoding="utf-8")


def test_the_ledger_is_never_written(fields: dict[str, Battlefield]) -> None:
    assert fields["walled"].run.ledger.read_text(encoding="utf-8") == ORIGINAL_LEDGER
    assert FORGED_LEDGER_LINE in fields["unwalled"].run.ledger.read_text(encoding="utf-8")


def test_the_walled_model_still_trains(fields: dict[str, Battlefield]) -> None:
    events = fields["walled"].events
    losses = [record.loss for event in events if isinstance(event, StepBatch) for record in event.records]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert [event for event in events if isinstance(event, CheckpointWritten)]
    assert not [event for event in events if isinstance(event, TrainerError)]
