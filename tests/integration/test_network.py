"""The simulated phone network behind the trunk, proven with raw ARI and softphones.

These tests hold the sandbox to what README's number table promises; the call-flow tests rely
on it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.ari_raw import RawAri
from tests.support.softphone import SoftphoneError, SoftphoneNetwork, wav_stats

pytestmark = pytest.mark.integration

NETWORK = "127.0.0.2:5060"


async def answered(ari: RawAri, cid: str, timeout: float = 15) -> None:
    await ari.wait_for("ChannelStateChange", cid, lambda e: e["channel"]["state"] == "Up", timeout)


async def wait_global(ari: RawAri, name: str, value: str, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while (await ari.global_var(name)) != value:
            await asyncio.sleep(0.1)


async def test_mobile_is_answered_by_a_person_who_hears_us(
    ari: RawAri, phones: SoftphoneNetwork, tmp_path
) -> None:
    mobile = await phones.register("mobile")
    cid = await ari.dial("+14255550100")
    call = await mobile.next_call()
    call.start_recording(tmp_path / "heard.wav")
    call.answer()
    await answered(ari, cid)
    # DTMF sent during a playback waits for its end (DESIGN §8): keys first, then audio.
    await ari.request("POST", f"/channels/{cid}/dtmf", params={"dtmf": "42"})
    await call.wait_digits("42")
    await ari.request("POST", f"/channels/{cid}/play", params={"media": "sound:demo-congrats"})
    await call.send_dtmf("#")
    await ari.wait_for("ChannelDtmfReceived", cid, lambda e: e["digit"] == "#")
    await asyncio.sleep(1.5)
    await ari.hangup(cid)
    await call.wait_disconnected()
    await call.stop_recording()
    seconds, level = wav_stats(tmp_path / "heard.wav")
    assert seconds > 1.0 and level > 0.01, (seconds, level)


async def test_auto_attendant_reads_the_extension_and_rings_that_desk(
    ari: RawAri, phones: SoftphoneNetwork
) -> None:
    desk = await phones.register("5678")
    other_desk = await phones.register("5679")
    await ari.set_global_var("AA_LAST_DIGITS", "")
    cid = await ari.dial("+14255550110")
    await answered(ari, cid)
    await asyncio.sleep(0.5)
    await ari.request("POST", f"/channels/{cid}/dtmf", params={"dtmf": "5678", "between": 100})
    await wait_global(ari, "AA_LAST_DIGITS", "5678")
    call = await desk.next_call()
    call.answer()
    await call.send_dtmf("#")
    await ari.wait_for("ChannelDtmfReceived", cid, lambda e: e["digit"] == "#")
    with pytest.raises(SoftphoneError):
        await other_desk.next_call(timeout=0.2)
    await ari.hangup(cid)
    await call.wait_disconnected()


async def test_operator_blind_transfer_lands_on_the_desk_and_its_keys_reach_us(
    ari: RawAri, phones: SoftphoneNetwork
) -> None:
    operator = await phones.register("operator")
    desk = await phones.register("5678")
    cid = await ari.dial("+14255550120")
    op_call = await operator.next_call()
    op_call.answer()
    await answered(ari, cid)
    await op_call.wait_media()
    status = await op_call.blind_transfer(f"sip:5678@{NETWORK}")
    assert status == 200
    await op_call.wait_disconnected()
    desk_call = await desk.next_call()
    desk_call.answer()
    # The carrier sends a P-Asserted-Identity update and the trunk trusts it (DESIGN §8).
    update = await ari.wait_for(
        "ChannelCallerId", cid, lambda e: e["channel"]["caller"]["number"] == "5678"
    )
    assert update["channel"]["caller"]["number"] == "5678"
    await desk_call.send_dtmf("#")
    await ari.wait_for("ChannelDtmfReceived", cid, lambda e: e["digit"] == "#")
    await ari.hangup(cid)
    await desk_call.wait_disconnected()


@pytest.mark.parametrize(
    ("number", "causes"),
    [
        ("+14255550130", {17}),  # busy
        ("+14255550140", {19}),  # no answer: our dial time-out
        ("+14255550150", {1}),  # unallocated number
        ("+14255550199", {1}),  # any number not in the table
        ("4255550130", {17}),  # the national format reaches the same number
        ("01114255550130", {17}),  # so does an international prefix
    ],
)
async def test_failures_end_with_the_causes_design_maps_them_to(
    ari: RawAri, number: str, causes: set[int]
) -> None:
    cid = await ari.dial(number, timeout=2)
    destroyed = await ari.wait_for("ChannelDestroyed", cid, timeout=10)
    assert destroyed["cause"] in causes, destroyed


async def test_voicemail_answers_plays_a_greeting_and_records(ari: RawAri) -> None:
    await ari.set_global_var("VM_LAST_RECORDING", "")
    cid = await ari.dial("+14255550160")
    await answered(ari, cid)
    await asyncio.sleep(6.5)  # vm-intro and the beep
    await ari.request("POST", f"/channels/{cid}/play", params={"media": "sound:demo-congrats"})
    await asyncio.sleep(2)
    await ari.hangup(cid)
    await ari.wait_for("ChannelDestroyed", cid)
    path = await ari.global_var("VM_LAST_RECORDING")
    name = path.rsplit("/", 1)[-1].removesuffix(".wav")
    assert name.startswith("voicemail-")
    async with asyncio.timeout(5):
        while True:
            stored = await ari.request("GET", "/recordings/stored")
            if any(r["name"] == name for r in stored):
                break
            await asyncio.sleep(0.2)
    await ari.request("DELETE", f"/recordings/stored/{name}")


@pytest.mark.parametrize(
    ("number", "extension", "keys"),
    [("+14255550170", "1234", "##"), ("+14255550171", "", "0#"), ("+14255550172", "1234", "#0#")],
)
async def test_load_bots_check_the_extension_and_press_their_keys(
    ari: RawAri, number: str, extension: str, keys: str
) -> None:
    await ari.set_global_var("BOT_LAST_DIGITS", "-")
    cid = await ari.dial(number)
    await answered(ari, cid)
    if extension:
        await ari.request("POST", f"/channels/{cid}/dtmf", params={"dtmf": extension})
    await wait_global(ari, "BOT_LAST_DIGITS", extension)
    for i in range(len(keys)):
        await ari.wait_for(
            "ChannelDtmfReceived",
            cid,
            lambda e, i=i: (
                "".join(
                    x["digit"]
                    for x in ari.events
                    if x["type"] == "ChannelDtmfReceived" and x["channel"]["id"] == cid
                )[: i + 1]
                == keys[: i + 1]
            ),
            timeout=10,
        )
    await ari.hangup(cid)


async def test_a_load_bot_hangs_up_on_a_wrong_extension(ari: RawAri) -> None:
    cid = await ari.dial("+14255550170")
    await answered(ari, cid)
    await ari.request("POST", f"/channels/{cid}/dtmf", params={"dtmf": "999"})
    destroyed = await ari.wait_for("ChannelDestroyed", cid, timeout=10)
    assert destroyed["cause"] == 21
