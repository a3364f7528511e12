"""Running verification calls in the test process: an Engine on the sandbox, calls you can
watch step by step, and the check that no channel of ours is left in Asterisk."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phonemfa.calls import prepare_call
from phonemfa.config import Config
from phonemfa.engine import Engine
from phonemfa.outcomes import Outcome

SANDBOX_ROOT = Path(os.environ.get("PHONEMFA_SANDBOX", "/var/tmp/phonemfa-sandbox")) / "root"
SANDBOX_SOUNDS = SANDBOX_ROOT / "usr/share/asterisk/sounds"

# Short time-outs keep failing paths (no input, voicemail) quick; repeats stay meaningful.
FAST_CALLS = {
    "first_digit_timeout": 3,
    "inter_digit_timeout": 2,
    # Tests press keys as soon as a prompt starts; the guard has tests of its own.
    "greeting_key_guard": 0,
    "retry_key_guard": 0.3,
    "no_input_prompts": 2,
    "attempts": 3,
    "extension_prompt_repeats": 4,
    "operator_prompt_repeats": 3,
    "operator_prompt_pause": 1,
    "max_duration": 120,
}
HINTS = frozenset({"caller_id_changed", "talking_started", "talking_finished", "key"})
NO_LIMITS = {"per_user": [], "per_number": [], "per_tenant": []}
SANDBOX_TRUNK = {"endpoint": "PJSIP/{number}@trunk", "dial_timeout": 20}


def sandbox_config(app: str, ari_url: str, password: str, **overrides: Any) -> Config:
    tenant = {"region": "US", "limits": NO_LIMITS, "calls": FAST_CALLS}
    data: dict[str, Any] = {
        "ari": {"url": ari_url, "username": "phonemfa", "password": password, "app": app},
        "trunk": SANDBOX_TRUNK,
        "api": {"tokens": ["test-token"]},
        "sounds": {"dir": str(SANDBOX_SOUNDS) if SANDBOX_SOUNDS.is_dir() else None},
        "dial_profiles": [{"name": "sandbox", "match": ["+1"], "pre_delay": 1.0}],
        "tenants": {
            "default": tenant,
            "ops": {**tenant, "operator_assistance": True},
            "slow": {**tenant, "calls": {**FAST_CALLS, "first_digit_timeout": 10}},
            "guarded": {**tenant, "calls": {**FAST_CALLS, "greeting_key_guard": 0.5}},
            "vm-hang-up": {**tenant, "calls": {**FAST_CALLS, "voicemail_detection": "hang_up"}},
            # Fallback chains: an auto attendant that misses is tried through its operator,
            # and a voicemail is left at once for the next number.
            "fallback": {
                **tenant,
                "operator_fallback": True,
                "calls": {**FAST_CALLS, "voicemail_detection": "hang_up"},
            },
        },
    }
    data.update(overrides)
    return Config.model_validate(data)


@dataclass
class WatchedCall:
    """The observer of one call: its timeline, outcome, and waits on steps."""

    call_id: str
    timeline: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    result: tuple[Outcome, str | None] | None = None
    task: asyncio.Task[Outcome] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def step(self, event: str, details: dict[str, Any]) -> None:
        self.timeline.append((event, details))
        self._changed.set()

    def outcome(self, outcome: Outcome, reason: str | None) -> None:
        assert self.result is None, f"second outcome {outcome} after {self.result}"
        self.result = (outcome, reason)
        self._changed.set()

    async def dialling(self) -> None:
        return None

    def events(self) -> list[str]:
        return [name for name, _ in self.timeline]

    def steps(self) -> list[str]:
        """The timeline without hints and keys: the call's own progress."""
        return [n for n in self.events() if n not in HINTS]

    def count(self, name: str) -> int:
        return self.events().count(name)

    async def reached(self, name: str, times: int = 1, timeout: float = 30) -> dict[str, Any]:
        """Wait until the timeline has `times` entries named `name`; the last one's details."""
        async with asyncio.timeout(timeout):
            while self.count(name) < times:
                if self.task is not None and self.task.done():
                    raise AssertionError(f"call ended before {name!r}: {self.timeline}")
                self._changed.clear()
                await self._changed.wait()
        return [d for n, d in self.timeline if n == name][times - 1]

    async def finished(self, timeout: float = 60) -> tuple[Outcome, str | None]:
        """The call's outcome once its flow has completely ended (channel hung up)."""
        assert self.task is not None
        await asyncio.wait_for(asyncio.shield(self.task), timeout)
        assert self.result is not None
        assert self.events()[-1] == "hung_up", self.timeline
        return self.result


class FlowHarness:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls: list[WatchedCall] = []

    def start(
        self,
        phone: str,
        *,
        tenant: str = "default",
        code: str | None = None,
        language: str | None = None,
        backup_phones: tuple[str, ...] = (),
    ) -> WatchedCall:
        call_id = str(uuid.uuid4())
        request = prepare_call(
            self.engine.config,
            self.engine.config.tenant(tenant),
            self.engine.catalog(tenant),
            call_id=call_id,
            phone=phone,
            language=language,
            code=code,
            backup_phones=backup_phones,
        )
        watched = WatchedCall(call_id)
        watched.task = asyncio.create_task(self.engine.run_call(request, watched))
        self.calls.append(watched)
        return watched

    async def settle(self) -> None:
        """After a test: every call ended and Asterisk holds no channel of our app."""
        for call in self.calls:
            if call.task is not None and not call.task.done():
                self.engine.flows[call.call_id].stop(Outcome.CANCELLED, "test_ended")
                await asyncio.wait_for(asyncio.shield(call.task), 15)
        self.calls.clear()
        async with asyncio.timeout(10):
            while (await self.engine.ari.get_application())["channel_ids"]:
                await asyncio.sleep(0.05)
